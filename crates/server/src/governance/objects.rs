//! The definition documents of entitlement management (catalogs, resources, packages, resource
//! role scopes, custom extensions) in their Graph shapes, and what the engine needs of them.
//!
//! Ids Gatehouse derives (a resource's roles and scope) are stable functions of the resource,
//! so listing them twice, or on two nodes, gives the same ids.

use gatehouse_core::Directory;
use gatehouse_core::governance::derived_id;
use gatehouse_core::governance::duration::Duration;
use gatehouse_core::governance::engine::{ExtensionRef, RoleScope};
use gatehouse_core::governance::model::GrantedRole;
use gatehouse_core::governance::policy::ExtensionStage;
use gatehouse_policy::json::normalize_id;
use serde_json::{Value, json};

/// The app role every application has: "Default Access" (the zero GUID).
pub const DEFAULT_ACCESS: &str = "00000000-0000-0000-0000-000000000000";

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The resource's origin system: `AadGroup` or `AadApplication`.
pub fn origin_system(resource: &Value) -> &str {
    s(resource, "originSystem")
}

pub fn origin_id(resource: &Value) -> String {
    normalize_id(s(resource, "originId"))
}

/// The roles of a resource (`accessPackageResourceRole`), each with its resource.
pub fn resource_roles(resource: &Value, dir: &Directory) -> Vec<Value> {
    let rid = s(resource, "id");
    let origin = origin_id(resource);
    let stub = json!({"id": rid, "displayName": resource.get("displayName"), "originId": origin,
                      "originSystem": origin_system(resource)});
    let role = |origin_role: String, name: &str, description: &str| {
        json!({
            "id": derived_id(&format!("resourceRole:{rid}:{origin_role}")),
            "displayName": name,
            "description": description,
            "originId": origin_role,
            "originSystem": origin_system(resource),
            "resource": stub,
        })
    };
    match origin_system(resource) {
        "AadGroup" => vec![
            role(format!("Member_{origin}"), "Member", "Member of the group"),
            role(format!("Owner_{origin}"), "Owner", "Owner of the group"),
        ],
        "AadApplication" => {
            let mut out = vec![role(
                DEFAULT_ACCESS.to_owned(),
                "Default Access",
                "Access to the application",
            )];
            if let Some(sp) = dir.service_principal(&origin) {
                for r in sp.raw.get("appRoles").and_then(Value::as_array).into_iter().flatten() {
                    let enabled = r.get("isEnabled").and_then(Value::as_bool).unwrap_or(true);
                    let users = r
                        .get("allowedMemberTypes")
                        .and_then(Value::as_array)
                        .is_none_or(|t| t.iter().any(|x| x.as_str() == Some("User")));
                    if enabled && users {
                        out.push(role(
                            normalize_id(s(r, "id")),
                            s(r, "displayName"),
                            s(r, "description"),
                        ));
                    }
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The one scope Gatehouse offers: the whole resource (`isRootScope`).
pub fn resource_scope(resource: &Value) -> Value {
    let rid = s(resource, "id");
    json!({
        "id": derived_id(&format!("resourceScope:{rid}")),
        "displayName": "Root",
        "description": "Root scope",
        "originId": origin_id(resource),
        "originSystem": origin_system(resource),
        "isRootScope": true,
    })
}

/// What a resource role grants: the group membership or ownership, or the app role.
pub fn granted_role(resource: &Value, role_origin_id: &str) -> Option<GrantedRole> {
    let origin = origin_id(resource);
    let role = role_origin_id.trim();
    match origin_system(resource) {
        "AadGroup" => {
            let (kind, group) = role.split_once('_')?;
            if normalize_id(group) != origin {
                return None;
            }
            match kind.to_ascii_lowercase().as_str() {
                "member" => Some(GrantedRole::GroupMember { group_id: origin }),
                "owner" => Some(GrantedRole::GroupOwner { group_id: origin }),
                _ => None,
            }
        }
        "AadApplication" => Some(GrantedRole::AppRole {
            service_principal_id: origin,
            app_role_id: normalize_id(role),
        }),
        _ => None,
    }
}

/// A stored resource role scope: `{id, createdDateTime, role{…}, scope{…}}` plus what it grants
/// (`grantedRole`, Gatehouse's, not served).
pub fn role_scope(doc: &Value) -> Option<RoleScope> {
    let role: GrantedRole = serde_json::from_value(doc.get("grantedRole")?.clone()).ok()?;
    Some(RoleScope { id: s(doc, "id").to_owned(), role })
}

/// A role scope as Graph serves it.
pub fn role_scope_graph(doc: &Value) -> Value {
    let mut v = doc.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("grantedRole");
    }
    v
}

/// The kinds of custom extension (`@odata.type`).
pub const REQUEST_EXTENSION: &str =
    "#microsoft.graph.accessPackageAssignmentRequestWorkflowExtension";
pub const ASSIGNMENT_EXTENSION: &str = "#microsoft.graph.accessPackageAssignmentWorkflowExtension";

/// The engine's view of a custom extension attached to `stage`.
pub fn extension_ref(doc: &Value, stage: ExtensionStage) -> ExtensionRef {
    let wait = doc
        .get("callbackConfiguration")
        .and_then(|c| c.get("timeoutDuration").or_else(|| c.get("durationBeforeTimeout")))
        .and_then(Value::as_str)
        .and_then(|t| Duration::parse(t).ok());
    ExtensionRef { id: s(doc, "id").to_owned(), stage, wait }
}

/// A custom extension's endpoint URL.
pub fn extension_url(doc: &Value) -> Option<&str> {
    doc.get("endpointConfiguration")?.get("targetUrl")?.as_str()
}

/// `clientConfiguration.timeoutInMilliseconds`, 200–2000 (default 1000).
pub fn extension_timeout_ms(doc: &Value) -> u64 {
    doc.get("clientConfiguration")
        .and_then(|c| c.get("timeoutInMilliseconds"))
        .and_then(Value::as_u64)
        .unwrap_or(1000)
        .clamp(200, 2000)
}
