//! Entitlement management at the edge: loading what the engine needs from the store, and
//! writing what it decides, in the caller's transaction.
//!
//! Every state change runs the same way, whether an HTTP handler or the due-work worker makes
//! it: open a serialized write (`AppState::begin_write`), load the request or assignment and its
//! policy and package ([`Loaded`]), call the engine (`gatehouse_core::governance::engine`), then
//! [`write_effects`]: the records, the due jobs, the rendered mails and custom-extension calls
//! for the outbox, the audit records and the grants as directory changes, all committed at once.
//! A crash before the commit loses the step; after it, the outbox delivers what it caused.

pub mod mail;
pub mod objects;
pub mod webhook;
pub mod worker;

use std::collections::HashMap;

use gatehouse_core::governance::duration::Zone;
use gatehouse_core::governance::engine::{
    AuditEvent, CalloutSend, Ctx, Effects, ExtensionRef, GrantChange, Mail, PackageView, RoleScope,
    Template,
};
use gatehouse_core::governance::model::{Assignment, Request};
use gatehouse_core::governance::policy::AssignmentPolicy;
use gatehouse_core::time;
use gatehouse_core::{Change, Directory};
use serde_json::{Value, json};

use crate::state::AppState;
use crate::store::governance::Kind;
use crate::store::{AuditRecord, AuditTarget, StoreError, Write};

/// The governance settings every node holds: the default zone and the mail templates.
#[derive(Debug)]
pub struct Service {
    pub zone: Zone,
    pub templates: mail::Templates,
}

impl Service {
    pub fn from_config(config: &crate::Config) -> anyhow::Result<Service> {
        let zone = config.time_zone().map_err(|e| anyhow::anyhow!(e))?;
        let templates = mail::Templates::load(config.governance.mail_templates.as_deref())
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Service { zone, templates })
    }
}

/// A policy with its package, catalog and custom extensions: what the engine runs against.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policy: AssignmentPolicy,
    pub package_id: String,
    pub package_name: String,
    pub catalog_id: String,
    pub catalog_name: String,
    pub role_scopes: Vec<RoleScope>,
    pub extensions: Vec<ExtensionRef>,
    pub extension_docs: HashMap<String, Value>,
}

impl Loaded {
    pub fn ctx<'a>(
        &'a self,
        dir: &'a Directory,
        now: i64,
        actor: Option<String>,
        new_id: &'a mut dyn FnMut() -> String,
    ) -> Ctx<'a> {
        Ctx {
            dir,
            policy: &self.policy,
            package: PackageView {
                id: &self.package_id,
                display_name: &self.package_name,
                catalog_id: &self.catalog_id,
                role_scopes: &self.role_scopes,
            },
            extensions: &self.extensions,
            now,
            actor,
            new_id,
        }
    }
}

/// Reads a stored policy document back into the engine's type.
pub fn policy_of(
    doc: &crate::store::governance::Doc,
    zone: &Zone,
) -> Result<AssignmentPolicy, StoreError> {
    let Value::Object(body) = &doc.body else {
        return Err(StoreError::Corrupt(format!("policy {}: not an object", doc.id)));
    };
    let mut p = AssignmentPolicy::parse(&doc.id, body, zone, doc.created)
        .map_err(|e| StoreError::Corrupt(format!("policy {}: {e}", doc.id)))?;
    p.created = doc.created;
    p.modified = body
        .get("modifiedDateTime")
        .and_then(Value::as_str)
        .and_then(time::parse)
        .unwrap_or(doc.created);
    Ok(p)
}

/// Loads policy `policy_id` with everything around it, inside the write.
pub async fn load(
    w: &mut Write,
    policy_id: &str,
    zone: &Zone,
) -> Result<Option<Loaded>, StoreError> {
    let Some(doc) = w.doc(Kind::Policy, policy_id).await? else { return Ok(None) };
    let policy = policy_of(&doc, zone)?;
    let Some(package) = w.doc(Kind::Package, &policy.access_package_id).await? else {
        return Ok(None);
    };
    let catalog_id = package.parent.clone();
    let catalog = w.doc(Kind::Catalog, &catalog_id).await?;
    let role_scopes = w
        .docs_of(Kind::RoleScope, &package.id)
        .await?
        .iter()
        .filter_map(|d| objects::role_scope(&d.body))
        .collect();
    let mut extensions = Vec::new();
    let mut extension_docs = HashMap::new();
    for (stage, ext) in &policy.extensions {
        if let Some(d) = w.doc(Kind::Extension, ext).await? {
            extensions.push(objects::extension_ref(&d.body, *stage));
            extension_docs.insert(ext.clone(), d.body);
        }
    }
    let name =
        |v: &Value| v.get("displayName").and_then(Value::as_str).unwrap_or_default().to_owned();
    Ok(Some(Loaded {
        package_id: package.id.clone(),
        package_name: name(&package.body),
        catalog_name: catalog.as_ref().map(|c| name(&c.body)).unwrap_or_default(),
        catalog_id,
        policy,
        role_scopes,
        extensions,
        extension_docs,
    }))
}

/// The acting user for audit records: (id, user principal name).
pub type Actor = Option<(String, String)>;

/// Writes `fx` into `w` (records, jobs, outbox) and returns the directory changes and audit
/// records to commit with it.
pub async fn write_effects(
    state: &AppState,
    w: &mut Write,
    fx: &Effects,
    loaded: &Loaded,
    actor: &Actor,
    idempotency_key: Option<&str>,
    now: i64,
) -> Result<(Vec<Change>, Vec<AuditRecord>), StoreError> {
    if let Some(r) = &fx.request {
        w.put_request(r, idempotency_key).await?;
    }
    if let Some(a) = &fx.assignment {
        w.put_assignment(a).await?;
    }
    for (subject, kind) in &fx.cancel_jobs {
        w.cancel_job(subject, kind).await?;
    }
    for j in &fx.jobs {
        w.put_job(j).await?;
    }
    // Everything that needs the directory is rendered under one read lock, then written.
    let (mails, callouts, audits) = {
        let dir = state.dir();
        let mails: Vec<(String, Value)> =
            fx.mails.iter().filter_map(|m| render_mail(state, &dir, m, fx, loaded)).collect();
        let callouts: Vec<(String, Value)> = fx
            .callouts
            .iter()
            .map(|c| (crate::random::guid(), callout_body(state, &dir, c, fx, loaded, now)))
            .collect();
        let audits: Vec<AuditRecord> =
            fx.audits.iter().map(|a| audit_record(&dir, a, actor, loaded)).collect();
        (mails, callouts, audits)
    };
    for (id, body) in &mails {
        w.enqueue(id, "mail", now, body).await?;
    }
    for (id, body) in &callouts {
        w.enqueue(id, "webhook", now, body).await?;
    }
    let changes = fx
        .grants
        .iter()
        .map(|g| match g {
            GrantChange::Put(row) => Change::Grant { grant: row.clone() },
            GrantChange::Revoke { role, principal, assignment } => Change::Revoke {
                role: role.clone(),
                principal: principal.clone(),
                assignment: assignment.clone(),
            },
        })
        .collect();
    Ok((changes, audits))
}

/// Commits a governance write and brings this node up to date; the workers are woken for any
/// jobs and messages it wrote.
pub async fn commit(
    state: &AppState,
    w: Write,
    changes: &[Change],
    audits: &[AuditRecord],
) -> Result<(), StoreError> {
    w.commit(state.now(), changes, audits).await?;
    state.sync().await?;
    state.work.notify_one();
    Ok(())
}

fn user_name(dir: &Directory, id: &str) -> String {
    dir.user(id).map(|u| u.display_name.clone()).unwrap_or_else(|| id.to_owned())
}

/// Where mail for a user goes: their `mail`, else their user principal name.
pub fn mail_address(dir: &Directory, id: &str) -> Option<String> {
    let u = dir.user(id)?;
    u.raw
        .get("mail")
        .and_then(Value::as_str)
        .filter(|m| m.contains('@'))
        .map(str::to_owned)
        .or_else(|| u.user_principal_name.clone())
}

fn render_mail(
    state: &AppState,
    dir: &Directory,
    m: &Mail,
    fx: &Effects,
    loaded: &Loaded,
) -> Option<(String, Value)> {
    let Some(to) = mail_address(dir, &m.to) else {
        tracing::warn!(user = m.to, template = m.template.name(), "no mail address; mail not sent");
        return None;
    };
    let zone = &loaded.policy.zone;
    let req = fx.request.as_ref().filter(|r| m.request_id.as_deref() == Some(r.id.as_str()));
    let asg = fx.assignment.as_ref();
    let (target, requestor) = match (req, asg) {
        (Some(r), _) => {
            (r.target_id.clone(), r.requestor_id.clone().unwrap_or_else(|| r.target_id.clone()))
        }
        (None, Some(a)) => (a.target_id.clone(), a.target_id.clone()),
        (None, None) => (m.to.clone(), m.to.clone()),
    };
    let answers = req
        .map(|r| {
            r.answers
                .iter()
                .map(|a| mail::AnswerVar {
                    question: loaded
                        .policy
                        .questions
                        .iter()
                        .find(|q| q.id == a.question_id)
                        .map(|q| q.text.clone())
                        .unwrap_or_else(|| a.question_id.clone()),
                    answer: a.display_value.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let end = asg.and_then(|a| a.schedule.end).or(req.and_then(|r| r.schedule.end));
    let reason = req
        .and_then(|r| r.history.last())
        .filter(|_| matches!(m.template, Template::RequestDenied))
        .map(|h| h.detail.clone())
        .unwrap_or_default();
    let vars = mail::MailVars {
        recipient: user_name(dir, &m.to),
        requestor: user_name(dir, &requestor),
        target: user_name(dir, &target),
        package: loaded.package_name.clone(),
        catalog: loaded.catalog_name.clone(),
        policy: loaded.policy.display_name.clone(),
        request_id: m.request_id.clone().unwrap_or_default(),
        assignment_id: m.assignment_id.clone().unwrap_or_default(),
        justification: req.and_then(|r| r.justification.clone()).unwrap_or_default(),
        reason,
        stage: m.stage.unwrap_or(0),
        deadline: m.deadline.map(|d| zone.local_text(d)).unwrap_or_default(),
        end: m.deadline.or(end).map(|e| zone.local_text(e)).unwrap_or_default(),
        days: m.days.unwrap_or(0),
        answers,
        portal: state.config.public_url(),
    };
    match state.governance.templates.render(m.template, &vars) {
        Ok((subject, text)) => Some((
            crate::random::guid(),
            mail::outbox_body(m.template, &to, &vars.recipient, &subject, &text),
        )),
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    }
}

/// The subject of a request or an assignment, as Graph's `accessPackageSubject`.
pub fn subject(dir: &Directory, id: &str) -> Value {
    match dir.user(id) {
        Some(u) => json!({
            "objectId": u.id,
            "displayName": u.display_name,
            "email": u.raw.get("mail").cloned().unwrap_or(Value::Null),
            "principalName": u.user_principal_name,
            "subjectType": "user",
        }),
        None => json!({"objectId": id, "displayName": null, "subjectType": "user"}),
    }
}

fn callout_body(
    state: &AppState,
    dir: &Directory,
    c: &CalloutSend,
    fx: &Effects,
    loaded: &Loaded,
    _now: i64,
) -> Value {
    let doc = loaded.extension_docs.get(&c.extension_id);
    let url = doc.and_then(objects::extension_url).unwrap_or_default().to_owned();
    let timeout = doc.map(objects::extension_timeout_ms).unwrap_or(1000);
    let stage = c.stage.as_str();
    let package = json!({"id": loaded.package_id, "displayName": loaded.package_name});
    let catalog = json!({"id": loaded.catalog_id, "displayName": loaded.catalog_name});
    let data = if c.stage.is_request_stage() {
        let r = fx.request.as_ref();
        json!({
            "@odata.type": "#microsoft.graph.accessPackageAssignmentRequestCalloutData",
            "stage": stage,
            "customExtensionStageInstanceId": c.callout_id,
            "accessPackageAssignmentRequestId": c.request_id,
            "callbackUriPath": c.request_id.as_ref().map(|id| format!("/identityGovernance/entitlementManagement/assignmentRequests/{id}/resume")),
            "callbackConfiguration": doc.and_then(|d| d.get("callbackConfiguration")).cloned(),
            "requestType": r.map(|r| r.request_type.as_str()),
            "state": r.map(|r| r.state.as_str()),
            "status": r.map(|r| r.status.as_str()),
            "answers": r.map(|r| r.answers.iter().map(|a| a.to_graph()).collect::<Vec<_>>()).unwrap_or_default(),
            "accessPackage": package,
            "accessPackageCatalog": catalog,
            "assignment": {
                "id": c.assignment_id,
                "state": fx.assignment.as_ref().map(|a| a.state.as_str()),
                "target": r.map(|r| subject(dir, &r.target_id)),
                "assignmentPolicy": {"id": loaded.policy.id, "displayName": loaded.policy.display_name},
                "schedule": r.map(|r| r.schedule.to_graph()),
            },
            "requestor": r.and_then(|r| r.requestor_id.as_deref()).map(|q| subject(dir, q)),
        })
    } else {
        let a = fx.assignment.as_ref();
        json!({
            "@odata.type": "#microsoft.graph.accessPackageAssignmentCalloutData",
            "stage": stage,
            "customExtensionStageInstanceId": c.callout_id,
            "accessPackageAssignmentRequestId": c.request_id,
            "callbackConfiguration": null,
            "accessPackage": package,
            "accessPackageCatalog": catalog,
            "assignment": a.map(|a| json!({
                "id": a.id,
                "state": a.state.as_str(),
                "schedule": a.schedule.to_graph(),
                "target": subject(dir, &a.target_id),
                "assignmentPolicy": {"id": loaded.policy.id},
            })),
        })
    };
    let payload = json!({
        "type": format!("microsoft.graph.accessPackageCustomExtensionStage.{stage}"),
        "source": format!("{}/v1.0/identityGovernance/entitlementManagement/catalogs/{}", state.config.public_url(), loaded.catalog_id),
        "data": data,
    });
    json!({
        "url": url,
        "extensionId": c.extension_id,
        "timeoutMs": timeout,
        "wait": c.wait,
        "requestId": c.request_id,
        "calloutId": c.callout_id,
        "payload": payload,
    })
}

fn audit_record(dir: &Directory, a: &AuditEvent, actor: &Actor, loaded: &Loaded) -> AuditRecord {
    let mut targets = Vec::new();
    if let Some(r) = &a.request_id {
        targets.push(AuditTarget {
            kind: "AccessPackageAssignmentRequest",
            id: r.clone(),
            display_name: None,
        });
    }
    if let Some(x) = &a.assignment_id {
        targets.push(AuditTarget {
            kind: "AccessPackageAssignment",
            id: x.clone(),
            display_name: None,
        });
    }
    targets.push(AuditTarget {
        kind: "AccessPackage",
        id: loaded.package_id.clone(),
        display_name: Some(loaded.package_name.clone()),
    });
    if let Some(u) = &a.target_user {
        targets.push(AuditTarget {
            kind: "User",
            id: u.clone(),
            display_name: dir.user(u).map(|u| u.display_name.clone()),
        });
    }
    let mut modified = Vec::new();
    if a.before.is_some() || a.after.is_some() {
        modified.push((
            "state".to_owned(),
            a.before.clone().unwrap_or_default(),
            a.after.clone().unwrap_or_default(),
        ));
    }
    AuditRecord {
        id: crate::random::guid(),
        category: "EntitlementManagement",
        activity: a.activity.clone(),
        result: "success",
        result_reason: a.detail.clone(),
        // The engine acts for the caller, or for Gatehouse itself (a timeout, an expiry).
        initiated_by: actor.clone(),
        targets,
        correlation_id: a
            .request_id
            .clone()
            .or_else(|| a.assignment_id.clone())
            .unwrap_or_default(),
        modified,
    }
}

/// A user is being deleted: their live assignments end and their open requests are canceled,
/// in the caller's transaction. Returns the changes and audit records to commit with it.
pub async fn end_for_deleted_user(
    state: &AppState,
    w: &mut Write,
    user: &str,
    actor: &Actor,
) -> Result<(Vec<Change>, Vec<AuditRecord>), StoreError> {
    use gatehouse_core::governance::engine;
    use gatehouse_core::governance::model::AssignmentState;
    let zone = state.governance.zone.clone();
    let now = state.now();
    let (mut changes, mut audits) = (Vec::new(), Vec::new());
    let mut steps: Vec<(String, Option<Request>, Option<Assignment>)> = Vec::new();
    for a in w.assignments_of_target(user).await? {
        if a.state != AssignmentState::Expired {
            steps.push((a.policy_id.clone(), None, Some(a)));
        }
    }
    for r in w.open_requests_of_target(user).await? {
        steps.push((r.policy_id.clone(), Some(r), None));
    }
    for (policy, request, assignment) in steps {
        let Some(loaded) = load(w, &policy, &zone).await? else { continue };
        let fx = {
            let dir = state.dir();
            let mut ids = crate::random::guid;
            let mut ctx = loaded.ctx(&dir, now, actor.as_ref().map(|a| a.0.clone()), &mut ids);
            match (request, assignment) {
                (Some(r), _) => match engine::cancel(&mut ctx, r) {
                    Ok(fx) => fx,
                    Err(_) => continue,
                },
                (None, Some(a)) => engine::expire(&mut ctx, a, true),
                (None, None) => continue,
            }
        };
        let (c, a) = write_effects(state, w, &fx, &loaded, actor, None, now).await?;
        changes.extend(c);
        audits.extend(a);
    }
    Ok((changes, audits))
}

/// The request and assignment of an engine step, for callers that answer with them.
pub fn outcome(fx: &Effects) -> (Option<&Request>, Option<&Assignment>) {
    (fx.request.as_ref(), fx.assignment.as_ref())
}
