//! `gatehouse import`: a tenant export (the What-If format) into the store, as one transaction.

use gatehouse_core::Change;
use gatehouse_core::directory::{assignment_id, sp_id};
use gatehouse_policy::{SourceFile, Tenant};
use serde_json::{Map, Value};

use crate::store::{AuditRecord, AuditTarget, Store, StoreError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub users: usize,
    pub groups: usize,
    pub memberships: usize,
    pub role_assignments: usize,
    pub service_principals: usize,
    pub policies: usize,
    pub named_locations: usize,
    pub strengths: usize,
    pub version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the export is not valid:\n{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn with_id(mut raw: Map<String, Value>, id: &str) -> Map<String, Value> {
    raw.insert("id".into(), Value::String(id.to_owned()));
    raw
}

/// The changes that put every object of `tenant` into the store (replacing same-id objects).
pub fn tenant_changes(tenant: &Tenant) -> (Vec<Change>, ImportSummary) {
    let mut s = ImportSummary::default();
    let mut changes = Vec::new();
    for u in &tenant.users {
        let mut raw = with_id(u.raw.clone(), &u.id);
        for nav in ["manager", "memberOf", "transitiveMemberOf", "directReports"] {
            raw.remove(nav);
        }
        changes.push(Change::PutUser { user: raw, manager: u.manager.clone() });
        s.users += 1;
    }
    let mut members = Vec::new();
    for g in &tenant.groups {
        let mut raw = with_id(g.raw.clone(), &g.id);
        raw.remove("members");
        raw.remove("members@odata.bind");
        changes.push(Change::PutGroup { group: raw });
        for m in &g.members {
            members.push(Change::AddMember { group: g.id.clone(), member: m.clone() });
        }
        s.groups += 1;
    }
    for u in &tenant.users {
        for g in &u.member_of_groups {
            if tenant.groups.iter().any(|x| &x.id == g) {
                members.push(Change::AddMember { group: g.clone(), member: u.id.clone() });
            }
        }
    }
    s.memberships = members.len();
    changes.extend(members);
    for a in &tenant.role_assignments {
        let id = assignment_id(a);
        let mut raw = with_id(a.raw.clone(), &id);
        raw.insert("principalId".into(), a.principal_id.clone().into());
        raw.insert("roleDefinitionId".into(), a.role_template_id.clone().into());
        raw.insert("directoryScopeId".into(), a.directory_scope_id.clone().into());
        changes.push(Change::PutRoleAssignment { assignment: raw });
        s.role_assignments += 1;
    }
    for app in &tenant.applications {
        let id = sp_id(app);
        let mut raw = with_id(app.raw.clone(), &id);
        raw.insert("appId".into(), app.app_id.clone().into());
        changes.push(Change::PutServicePrincipal { service_principal: raw });
        s.service_principals += 1;
    }
    for l in &tenant.named_locations {
        changes.push(Change::PutNamedLocation { location: with_id(l.raw.clone(), &l.id) });
        s.named_locations += 1;
    }
    for st in &tenant.strengths {
        changes.push(Change::PutStrength { strength: with_id(st.raw.clone(), &st.id) });
        s.strengths += 1;
    }
    for p in &tenant.policies {
        changes.push(Change::PutPolicy { policy: with_id(p.raw.clone(), &p.id) });
        s.policies += 1;
    }
    (changes, s)
}

/// Validates the whole export (refusing it if anything is wrong) and writes it in one
/// transaction with one audit record. Other nodes reload on the `Reload` it logs.
pub async fn import(
    store: &Store,
    files: &[SourceFile],
    now: i64,
    actor: Option<(String, String)>,
) -> Result<ImportSummary, ImportError> {
    let loaded = gatehouse_policy::load(files).map_err(|e| {
        ImportError::Invalid(
            e.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        )
    })?;
    let (changes, mut summary) = tenant_changes(&loaded.tenant);
    let audit = AuditRecord {
        id: crate::random::guid(),
        category: "Other",
        activity: "Import tenant".into(),
        result: "success",
        result_reason: format!(
            "{} users, {} groups, {} memberships, {} policies, {} named locations",
            summary.users,
            summary.groups,
            summary.memberships,
            summary.policies,
            summary.named_locations
        ),
        initiated_by: actor,
        targets: vec![AuditTarget { kind: "Other", id: "tenant".into(), display_name: None }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    };
    let w = store.begin().await?;
    summary.version = w.commit_bulk(now, &changes, &[Change::Reload], &[audit]).await?;
    Ok(summary)
}
