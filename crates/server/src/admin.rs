//! `gatehouse admin bootstrap`: the first Global Administrator and an API token, shown once.

use gatehouse_core::Change;
use gatehouse_core::roles::Role;
use serde_json::{Map, Value, json};

use crate::session::{Session, SessionKind};
use crate::store::{AuditRecord, AuditTarget, Store, StoreError};

pub struct Bootstrapped {
    pub user_id: String,
    pub created_user: bool,
    pub token: String,
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Makes `upn` a Global Administrator (creating the user if needed) and issues an API token.
pub async fn bootstrap(store: &Store, upn: &str, now: i64) -> Result<Bootstrapped, StoreError> {
    let upn = upn.trim().to_lowercase();
    let rows = store.load_directory().await?;
    let existing =
        rows.tenant.users.iter().find(|u| {
            u.user_principal_name.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(&upn))
        });
    let mut changes = Vec::new();
    let (user_id, created_user) = match existing {
        Some(u) => (u.id.clone(), false),
        None => {
            let id = crate::random::guid();
            let name = upn.split('@').next().unwrap_or(&upn).to_owned();
            changes.push(Change::PutUser {
                user: object(json!({
                    "id": id, "userPrincipalName": upn, "displayName": name,
                    "accountEnabled": true, "userType": "Member",
                    "createdDateTime": gatehouse_core::time::format(now)
                })),
                manager: None,
            });
            (id, true)
        }
    };
    let holds_ga = rows.tenant.role_assignments.iter().any(|a| {
        a.principal_id == user_id
            && a.role_template_id.eq_ignore_ascii_case(Role::GlobalAdministrator.template_id())
    });
    if !holds_ga {
        changes.push(Change::PutRoleAssignment {
            assignment: object(json!({
                "id": crate::random::guid(), "principalId": user_id,
                "roleDefinitionId": Role::GlobalAdministrator.template_id(), "directoryScopeId": "/"
            })),
        });
    }
    let token = crate::random::token("gh_");
    let session = Session {
        id: crate::random::guid(),
        user_id: user_id.clone(),
        kind: SessionKind::ApiToken,
        created_at: now,
        expires_at: None,
        methods: Vec::new(),
        tap_id: None,
        target: None,
    };
    let audit = AuditRecord {
        id: crate::random::guid(),
        category: "RoleManagement",
        activity: "Bootstrap Global Administrator".into(),
        result: "success",
        result_reason: if created_user { "user created".into() } else { "existing user".into() },
        initiated_by: None,
        targets: vec![AuditTarget { kind: "User", id: user_id.clone(), display_name: Some(upn) }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    };
    let mut w = store.begin().await?;
    w.insert_session(&gatehouse_core::auth::secret::hash(&token), &session).await?;
    w.commit(now, &changes, &[audit]).await?;
    Ok(Bootstrapped { user_id, created_user, token })
}
