//! The Graph directory API under `/v1.0`: users (with manager), groups and membership, directory
//! role assignments and definitions, service principals and applications, devices, and
//! `directoryObjects/{id}`. Decisions where Graph is silent are in `docs/graph-api.md`.
//!
//! Every write follows one pattern: validate against a short-lived read of the directory, build
//! the `Change`s and one audit record, commit them in one transaction, `sync` this node's memory,
//! then answer, so the caller's next request (and the next sign-in) sees the change.

mod groups;
mod objects;
mod roles;
mod users;

use gatehouse_core::Change;
use gatehouse_core::directory::{Directory, ObjectKind, assignment_id};
use gatehouse_policy::json::normalize_id;
use gatehouse_policy::model::directory::{Application, Group, RoleAssignment, User};
use serde_json::{Map, Value, json};

use super::Api;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::graph::base;
use crate::state::AppState;
use crate::store::{AuditRecord, AuditTarget, Write};

pub fn routes(api: Api) -> Api {
    api.merge(users::routes).merge(groups::routes).merge(roles::routes).merge(objects::routes)
}

// ----- Graph shapes -----

fn object_with_type(odata_type: &str, id: &str, raw: &Map<String, Value>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("@odata.type".into(), odata_type.into());
    m.insert("id".into(), id.into());
    for (k, v) in raw {
        // Navigation properties are served by their own routes (or `$expand`), never stored.
        if k.starts_with('@')
            || matches!(
                k.as_str(),
                "id" | "manager"
                    | "memberOf"
                    | "transitiveMemberOf"
                    | "directReports"
                    | "members"
                    | "passwordProfile"
            )
            || k.ends_with("@odata.bind")
        {
            continue;
        }
        m.insert(k.clone(), v.clone());
    }
    m
}

fn defaults(m: &mut Map<String, Value>, keys: &[(&str, Value)]) {
    for (k, v) in keys {
        if !m.contains_key(*k) {
            m.insert((*k).to_owned(), v.clone());
        }
    }
}

/// A user as Graph returns it: every stored property, the default set present (null when
/// unknown), `accountEnabled` and `userType` always set. Never a password.
pub fn user_json(u: &User) -> Value {
    let mut m = object_with_type("#microsoft.graph.user", &u.id, &u.raw);
    defaults(
        &mut m,
        &[
            ("businessPhones", json!([])),
            ("displayName", Value::Null),
            ("givenName", Value::Null),
            ("jobTitle", Value::Null),
            ("mail", Value::Null),
            ("mobilePhone", Value::Null),
            ("officeLocation", Value::Null),
            ("preferredLanguage", Value::Null),
            ("surname", Value::Null),
            ("userPrincipalName", Value::Null),
        ],
    );
    m.insert("accountEnabled".into(), u.account_enabled.into());
    if !m.get("userType").is_some_and(Value::is_string) {
        m.insert("userType".into(), if u.is_guest { "Guest" } else { "Member" }.into());
    }
    Value::Object(m)
}

pub fn group_json(g: &Group) -> Value {
    let mut m = object_with_type("#microsoft.graph.group", &g.id, &g.raw);
    defaults(
        &mut m,
        &[
            ("displayName", Value::Null),
            ("description", Value::Null),
            ("groupTypes", json!([])),
            ("mail", Value::Null),
            ("mailEnabled", false.into()),
            ("mailNickname", Value::Null),
            ("securityEnabled", true.into()),
            ("isAssignableToRole", Value::Null),
            ("visibility", Value::Null),
        ],
    );
    Value::Object(m)
}

pub fn service_principal_json(id: &str, a: &Application) -> Value {
    let mut m = object_with_type("#microsoft.graph.servicePrincipal", id, &a.raw);
    m.insert("appId".into(), a.app_id.clone().into());
    defaults(
        &mut m,
        &[
            ("displayName", a.display_name.clone().into()),
            ("accountEnabled", true.into()),
            ("servicePrincipalType", "Application".into()),
            ("tags", json!([])),
        ],
    );
    Value::Object(m)
}

/// The same object seen as an application registration (read-only; see docs/graph-api.md).
pub fn application_json(id: &str, a: &Application) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.application",
        "id": id,
        "appId": a.app_id,
        "displayName": a.raw.get("displayName").cloned().unwrap_or(Value::Null),
        "createdDateTime": a.raw.get("createdDateTime").cloned().unwrap_or(Value::Null),
        "tags": a.raw.get("tags").cloned().unwrap_or_else(|| json!([])),
    })
}

pub const EXTENSION_ATTRIBUTES: usize = 15;

pub fn device_json(d: &Map<String, Value>) -> Value {
    let id = d.get("id").and_then(Value::as_str).map(normalize_id).unwrap_or_default();
    let mut m = object_with_type("#microsoft.graph.device", &id, d);
    defaults(
        &mut m,
        &[
            ("accountEnabled", true.into()),
            ("deviceId", Value::Null),
            ("displayName", Value::Null),
            ("operatingSystem", Value::Null),
            ("operatingSystemVersion", Value::Null),
            ("isCompliant", Value::Null),
            ("isManaged", Value::Null),
            ("trustType", Value::Null),
        ],
    );
    let mut ext = Map::new();
    let given = d.get("extensionAttributes").and_then(Value::as_object);
    for i in 1..=EXTENSION_ATTRIBUTES {
        let key = format!("extensionAttribute{i}");
        ext.insert(key.clone(), given.and_then(|g| g.get(&key)).cloned().unwrap_or(Value::Null));
    }
    m.insert("extensionAttributes".into(), Value::Object(ext));
    Value::Object(m)
}

pub fn assignment_json(a: &RoleAssignment) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.unifiedRoleAssignment",
        "id": assignment_id(a),
        "principalId": a.principal_id,
        "roleDefinitionId": a.role_template_id,
        "directoryScopeId": if a.directory_scope_id.is_empty() { "/" } else { a.directory_scope_id.as_str() },
    })
}

/// Any directory object by id, typed (`directoryObjects/{id}`, members, memberOf).
pub fn object_json(dir: &Directory, id: &str) -> Option<Value> {
    match dir.kind_of(id)? {
        ObjectKind::User => dir.user(id).map(user_json),
        ObjectKind::Group => dir.group(id).map(group_json),
        ObjectKind::ServicePrincipal => {
            dir.service_principal(id).map(|a| service_principal_json(id, a))
        }
        ObjectKind::Device => dir.device(id).map(device_json),
    }
}

/// An audit target for any directory object (its display name copied now: the object may go).
fn target_of(dir: &Directory, id: &str) -> AuditTarget {
    let (kind, name) = match dir.kind_of(id) {
        Some(ObjectKind::User) => {
            let u = dir.user(id);
            ("User", u.and_then(|u| u.user_principal_name.clone().or(Some(u.display_name.clone()))))
        }
        Some(ObjectKind::Group) => ("Group", dir.group(id).map(|g| g.display_name.clone())),
        Some(ObjectKind::ServicePrincipal) => {
            ("ServicePrincipal", dir.service_principal(id).map(|a| a.display_name.clone()))
        }
        Some(ObjectKind::Device) => (
            "Device",
            dir.device(id)
                .and_then(|d| d.get("displayName"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        None => ("Other", None),
    };
    AuditTarget { kind, id: id.to_owned(), display_name: name }
}

// ----- writes -----

fn audit(
    caller: &Caller,
    category: &'static str,
    activity: &str,
    reason: impl Into<String>,
    targets: Vec<AuditTarget>,
) -> AuditRecord {
    AuditRecord {
        id: crate::random::guid(),
        category,
        activity: activity.to_owned(),
        result: "success",
        result_reason: reason.into(),
        initiated_by: caller.audit_actor(),
        targets,
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    }
}

/// Commits the changes with their audit records, then brings this node's memory up to date.
/// `w` is from `AppState::begin_write`, opened before the changes were validated.
async fn commit(
    state: &AppState,
    w: Write,
    changes: &[Change],
    audits: &[AuditRecord],
) -> ApiResult<()> {
    w.commit(state.now(), changes, audits).await?;
    state.sync().await?;
    Ok(())
}

/// The object id an `@odata.id` reference names: `https://…/v1.0/directoryObjects/{id}`,
/// `…/users/{id}`, `…/users('{id}')` or a bare id.
pub fn reference_id(link: &str) -> Option<String> {
    let link = link.trim().trim_end_matches('/');
    let last = link.rsplit('/').next()?;
    // `users('id')` or `directoryObjects(id)`
    let last = match last.split_once('(') {
        Some((_, rest)) => rest.trim_end_matches(')'),
        None => last,
    };
    let id = last.trim_matches(|c| c == '\'' || c == '"');
    let id = percent_decode(id);
    (!id.is_empty()).then(|| normalize_id(&id))
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `@odata.id` of a `$ref` body.
fn reference_body(body: &Map<String, Value>) -> ApiResult<String> {
    let Some(link) = body.get("@odata.id") else {
        return Err(ApiError::directory_bad_request(
            "The request body must be {\"@odata.id\": \"https://…/v1.0/directoryObjects/{id}\"}.",
        ));
    };
    let id = link.as_str().and_then(reference_id);
    id.ok_or_else(|| {
        ApiError::directory_bad_request(format!(
            "Invalid object reference `{link}` in '@odata.id'."
        ))
    })
}

/// `{base}/directoryObjects/{id}`, as `$ref` reads return it.
fn reference_of(state: &AppState, id: &str) -> Value {
    json!({
        "@odata.context": format!("{}/$metadata#directoryObjects/$entity", base(state)),
        "@odata.id": format!("{}/directoryObjects/{id}", base(state)),
    })
}

// ----- validating bodies -----

/// The JSON type a writable property takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Texts,
    /// An ISO 8601 `DateTimeOffset` string.
    DateTime,
    Object,
    Objects,
}

#[derive(Debug, Clone, Copy)]
struct Prop(&'static str, Kind);

/// Longest string accepted in any property (Graph's own limits are lower for most).
const MAX_TEXT: usize = 1024;

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match (kind, v) {
        (_, Value::Null) => true,
        (Kind::Text, Value::String(s)) => s.chars().count() <= MAX_TEXT,
        (Kind::DateTime, Value::String(s)) => gatehouse_core::time::parse(s).is_some(),
        (Kind::Bool, Value::Bool(_)) => true,
        (Kind::Texts, Value::Array(a)) => {
            a.iter().all(|x| x.as_str().is_some_and(|s| s.chars().count() <= MAX_TEXT))
        }
        (Kind::Object, Value::Object(_)) => true,
        (Kind::Objects, Value::Array(a)) => a.iter().all(Value::is_object),
        _ => false,
    }
}

fn kind_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "a string of at most 1024 characters",
        Kind::Bool => "true or false",
        Kind::Texts => "an array of strings",
        Kind::DateTime => "an ISO 8601 date and time",
        Kind::Object => "an object",
        Kind::Objects => "an array of objects",
    }
}

/// Copies the writable properties of `body` into `into` in their Graph spelling, checking their
/// types. Instance annotations (`@odata.type`) are ignored; `handled` names keys the caller
/// reads itself; `read_only` keys are refused unless equal to `current`'s value; any other key
/// is refused, naming it.
fn copy_props(
    resource: &str,
    body: &Map<String, Value>,
    props: &[Prop],
    handled: &[&str],
    read_only: &[&str],
    current: Option<&Map<String, Value>>,
    into: &mut Map<String, Value>,
) -> ApiResult<()> {
    for (k, v) in body {
        if k.starts_with('@')
            || k.ends_with("@odata.type")
            || handled.iter().any(|h| h.eq_ignore_ascii_case(k))
        {
            continue;
        }
        if let Some(ro) = read_only.iter().find(|r| r.eq_ignore_ascii_case(k)) {
            let same = current.and_then(|c| c.get(*ro)).is_some_and(|c| match (c, v) {
                (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
                (a, b) => a == b,
            });
            if same {
                continue;
            }
            return Err(ApiError::directory_bad_request(format!(
                "Property '{ro}' is read-only and cannot be set on resource '{resource}'."
            ))
            .with_target(*ro));
        }
        let Some(Prop(name, kind)) = props.iter().find(|p| p.0.eq_ignore_ascii_case(k)) else {
            return Err(ApiError::directory_bad_request(format!(
                "Property '{k}' does not exist on type 'microsoft.graph.{}' or cannot be written.",
                lower_first(resource)
            ))
            .with_target(k.clone()));
        };
        if !kind_ok(*kind, v) {
            return Err(ApiError::directory_bad_request(format!(
                "Invalid value specified for property '{name}' of resource '{resource}': expected {}.",
                kind_text(*kind)
            ))
            .with_target(*name));
        }
        into.insert((*name).to_owned(), v.clone());
    }
    Ok(())
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Refuses a create body that lacks a required property (or gives it as null or "").
fn require(resource: &str, object: &Map<String, Value>, names: &[&str]) -> ApiResult<()> {
    for name in names {
        let missing = match object.get(*name) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            _ => false,
        };
        if missing {
            return Err(ApiError::directory_bad_request(format!(
                "Property '{name}' is required when creating a {resource}."
            ))
            .with_target(*name));
        }
    }
    Ok(())
}

/// Refuses setting a property that must always have a value to null or "".
fn not_cleared(resource: &str, patch: &Map<String, Value>, names: &[&str]) -> ApiResult<()> {
    for name in names {
        let cleared = match patch.get(*name) {
            Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            _ => false,
        };
        if cleared {
            return Err(ApiError::directory_bad_request(format!(
                "Property '{name}' of resource '{resource}' cannot be cleared."
            ))
            .with_target(*name));
        }
    }
    Ok(())
}

/// Canonical spelling of an enumerated string property, or a 400 listing the choices.
fn one_of(
    resource: &str,
    object: &mut Map<String, Value>,
    name: &str,
    choices: &[&str],
) -> ApiResult<()> {
    let Some(Value::String(given)) = object.get(name) else {
        return Ok(());
    };
    match choices.iter().find(|c| c.eq_ignore_ascii_case(given)) {
        Some(c) => {
            object.insert(name.to_owned(), (*c).into());
            Ok(())
        }
        None => Err(ApiError::directory_bad_request(format!(
            "Invalid value '{given}' for property '{name}' of resource '{resource}'; expected one of: {}.",
            choices.join(", ")
        ))
        .with_target(name.to_owned())),
    }
}

/// Merges a validated patch into the stored object: null removes the property.
fn merge(into: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

/// 400 Graph returns when a unique property is taken.
fn taken(property: &str) -> ApiError {
    ApiError::directory_bad_request(format!(
        "Another object with the same value for property {property} already exists."
    ))
    .with_target(property.to_owned())
}

/// Policies (id and display name) whose conditions name any of `ids`.
fn referencing_policies(dir: &Directory, ids: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        for p in dir.policies_referencing(id) {
            let name = p.raw.get("displayName").and_then(Value::as_str).unwrap_or_default();
            let entry = format!("'{name}' ({})", p.id);
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_take_every_form_clients_send() {
        let id = "a0000000-0000-4000-8000-000000000001";
        for link in [
            format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}"),
            format!("http://127.0.0.1:8080/v1.0/users/{}", id.to_uppercase()),
            format!("https://x/v1.0/users('{id}')"),
            format!("https://x/v1.0/directoryObjects({id})/"),
            id.to_owned(),
        ] {
            assert_eq!(reference_id(&link).as_deref(), Some(id), "{link}");
        }
        assert_eq!(
            reference_id("https://x/v1.0/users/adele%40contoso.example").as_deref(),
            Some("adele@contoso.example")
        );
        assert_eq!(reference_id(""), None);
        assert_eq!(reference_id("https://x/v1.0/users('')"), None);
    }

    #[test]
    fn properties_are_type_checked_canonicalized_and_unknown_ones_refused() {
        let props = [
            Prop("displayName", Kind::Text),
            Prop("accountEnabled", Kind::Bool),
            Prop("hired", Kind::DateTime),
        ];
        let body = |v: Value| v.as_object().cloned().unwrap_or_default();
        let mut out = Map::new();
        copy_props(
            "User",
            &body(json!({"DisplayName": "A", "@odata.type": "#x", "accountEnabled": false})),
            &props,
            &[],
            &[],
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(Value::Object(out), json!({"displayName": "A", "accountEnabled": false}));
        let e = copy_props(
            "User",
            &body(json!({"accountEnabled": "true"})),
            &props,
            &[],
            &[],
            None,
            &mut Map::new(),
        )
        .unwrap_err();
        assert!(
            e.message.contains("accountEnabled") && e.message.contains("true or false"),
            "{}",
            e.message
        );
        let e = copy_props(
            "User",
            &body(json!({"hired": "soon"})),
            &props,
            &[],
            &[],
            None,
            &mut Map::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("ISO 8601"));
        let e = copy_props(
            "User",
            &body(json!({"shoeSize": 9})),
            &props,
            &[],
            &[],
            None,
            &mut Map::new(),
        )
        .unwrap_err();
        assert_eq!(e.target.as_deref(), Some("shoeSize"));
        assert!(e.message.contains("microsoft.graph.user"));
        // Read-only: refused unless unchanged.
        let current = body(json!({"id": "x1"}));
        copy_props(
            "User",
            &body(json!({"id": "X1"})),
            &props,
            &[],
            &["id"],
            Some(&current),
            &mut Map::new(),
        )
        .unwrap();
        assert!(
            copy_props(
                "User",
                &body(json!({"id": "x2"})),
                &props,
                &[],
                &["id"],
                Some(&current),
                &mut Map::new()
            )
            .is_err()
        );
    }

    #[test]
    fn enumerations_are_canonicalized() {
        let mut m = json!({"userType": "guest"}).as_object().cloned().unwrap_or_default();
        one_of("User", &mut m, "userType", &["Member", "Guest"]).unwrap();
        assert_eq!(m.get("userType"), Some(&json!("Guest")));
        m.insert("userType".into(), "Owner".into());
        assert!(one_of("User", &mut m, "userType", &["Member", "Guest"]).is_err());
    }
}
