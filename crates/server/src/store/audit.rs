//! Audit records: Graph `directoryAudit` entries, written in the transaction of the change
//! they describe. They never hold secrets: callers describe what changed, not its value.

use serde_json::{Value, json};
use sqlx::{Any, Transaction};

use super::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct AuditTarget {
    /// `User`, `Group`, `Policy`, `Other`…
    pub kind: &'static str,
    pub id: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: String,
    /// `UserManagement`, `GroupManagement`, `Policy`, `UserManagement`, `RoleManagement`…
    pub category: &'static str,
    /// What happened, in Entra's words: `Add member to group`, `Add conditional access policy`…
    pub activity: String,
    /// `success` or `failure`.
    pub result: &'static str,
    pub result_reason: String,
    /// The acting user (id, user principal name), or none for the system itself.
    pub initiated_by: Option<(String, String)>,
    pub targets: Vec<AuditTarget>,
    pub correlation_id: String,
    /// What changed on the first target: (property, old value, new value), as Graph's
    /// `modifiedProperties`. Never a secret.
    pub modified: Vec<(String, String, String)>,
}

pub(super) async fn insert(
    tx: &mut Transaction<'static, Any>,
    now: i64,
    a: &AuditRecord,
) -> Result<()> {
    let body = to_graph(a, now);
    sqlx::query(
        "INSERT INTO audit_logs (id, created_at, category, activity, result, initiated_by, target_id, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.id.clone())
    .bind(now)
    .bind(a.category)
    .bind(a.activity.clone())
    .bind(a.result)
    .bind(a.initiated_by.as_ref().map(|(id, _)| id.clone()))
    .bind(a.targets.first().map(|t| t.id.clone()))
    .bind(body.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn to_graph(a: &AuditRecord, now: i64) -> Value {
    let initiated_by = match &a.initiated_by {
        Some((id, upn)) => {
            json!({"user": {"id": id, "userPrincipalName": upn, "displayName": null, "ipAddress": null}, "app": null})
        }
        None => {
            json!({"user": null, "app": {"displayName": "Gatehouse", "appId": null, "servicePrincipalId": null, "servicePrincipalName": "Gatehouse"}})
        }
    };
    json!({
        "id": a.id,
        "category": a.category,
        "correlationId": a.correlation_id,
        "result": a.result,
        "resultReason": a.result_reason,
        "activityDisplayName": a.activity,
        "activityDateTime": gatehouse_core::time::format(now),
        "loggedByService": "Core Directory",
        "operationType": operation_type(&a.activity),
        "initiatedBy": initiated_by,
        "targetResources": a.targets.iter().enumerate().map(|(i, t)| json!({
            "id": t.id, "displayName": t.display_name, "type": t.kind,
            "userPrincipalName": null, "groupType": null,
            "modifiedProperties": if i == 0 {
                a.modified.iter().map(|(name, old, new)| json!({
                    "displayName": name, "oldValue": old, "newValue": new,
                })).collect::<Vec<_>>()
            } else {
                Vec::new()
            },
        })).collect::<Vec<_>>(),
        "additionalDetails": []
    })
}

fn operation_type(activity: &str) -> &'static str {
    let a = activity.to_ascii_lowercase();
    if a.starts_with("add")
        || a.starts_with("create")
        || a.starts_with("register")
        || a.starts_with("issue")
    {
        "Add"
    } else if a.starts_with("delete") || a.starts_with("remove") {
        "Delete"
    } else {
        "Update"
    }
}
