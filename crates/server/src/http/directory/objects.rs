//! Service principals (what Conditional Access targets as apps), applications (the same
//! objects, read-only), devices (what device filters read) and `directoryObjects/{id}`.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use gatehouse_core::Change;
use gatehouse_core::directory::sp_id;
use gatehouse_core::roles::{Access, area};
use gatehouse_policy::json::normalize_id;
use serde_json::{Map, Value};

use super::{
    EXTENSION_ATTRIBUTES, Kind, Prop, application_json, audit, commit, copy_props, device_json,
    merge, not_cleared, object_json, one_of, referencing_policies, require, service_principal_json,
    taken, target_of,
};
use crate::http::Api;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::graph::{Body, created, no_content, ok};
use crate::http::odata::{OData, Spec};
use crate::state::AppState;
use crate::store::AuditTarget;

const READ: Access = Access::Roles(area::DIRECTORY_READ);
const WRITE: Access = Access::Roles(area::TENANT_WRITE);

const SERVICE_PRINCIPALS: Spec = Spec {
    resource: "ServicePrincipal",
    filterable: &["id", "appId", "displayName", "accountEnabled", "servicePrincipalType", "tags"],
    searchable: &["displayName"],
    orderable: &["displayName"],
    expandable: &[],
};

const APPLICATIONS: Spec = Spec {
    resource: "Application",
    filterable: &["id", "appId", "displayName"],
    searchable: &["displayName"],
    orderable: &["displayName"],
    expandable: &[],
};

const DEVICES: Spec = Spec {
    resource: "Device",
    filterable: &[
        "id",
        "deviceId",
        "displayName",
        "operatingSystem",
        "isCompliant",
        "isManaged",
        "trustType",
        "accountEnabled",
    ],
    searchable: &["displayName"],
    orderable: &["displayName"],
    expandable: &[],
};

const OBJECTS: Spec = Spec::plain("DirectoryObject", &[]);

const SP_PROPS: &[Prop] = &[
    Prop("appId", Kind::Text),
    Prop("displayName", Kind::Text),
    Prop("description", Kind::Text),
    Prop("notes", Kind::Text),
    Prop("accountEnabled", Kind::Bool),
    Prop("appRoleAssignmentRequired", Kind::Bool),
    Prop("servicePrincipalType", Kind::Text),
    Prop("servicePrincipalNames", Kind::Texts),
    Prop("tags", Kind::Texts),
    Prop("homepage", Kind::Text),
    Prop("loginUrl", Kind::Text),
    Prop("appOwnerOrganizationId", Kind::Text),
    // `{id, displayName, value, allowedMemberTypes, isEnabled, description}`: the roles an
    // access package can grant on this application.
    Prop("appRoles", Kind::Objects),
];

const DEVICE_PROPS: &[Prop] = &[
    Prop("deviceId", Kind::Text),
    Prop("displayName", Kind::Text),
    Prop("accountEnabled", Kind::Bool),
    Prop("operatingSystem", Kind::Text),
    Prop("operatingSystemVersion", Kind::Text),
    Prop("isCompliant", Kind::Bool),
    Prop("isManaged", Kind::Bool),
    Prop("trustType", Kind::Text),
    Prop("extensionAttributes", Kind::Object),
    Prop("alternativeSecurityIds", Kind::Objects),
    Prop("physicalIds", Kind::Texts),
    Prop("systemLabels", Kind::Texts),
    Prop("manufacturer", Kind::Text),
    Prop("model", Kind::Text),
    Prop("profileType", Kind::Text),
    Prop("deviceOwnership", Kind::Text),
    Prop("enrollmentProfileName", Kind::Text),
    Prop("mdmAppId", Kind::Text),
    Prop("approximateLastSignInDateTime", Kind::DateTime),
    Prop("registrationDateTime", Kind::DateTime),
];

pub fn routes(api: Api) -> Api {
    api.route(Method::GET, "/v1.0/servicePrincipals", READ, "List service principals", list_sps)
        .route(Method::POST, "/v1.0/servicePrincipals", WRITE, "Create a service principal", create_sp)
        .route(Method::GET, "/v1.0/servicePrincipals/{id}", READ, "Get a service principal", get_sp)
        .route(
            Method::GET,
            "/v1.0/servicePrincipals/{id}/appRoleAssignedTo",
            READ,
            "Who holds the service principal's app roles (through access packages)",
            app_role_assigned_to,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/appRoleAssignments",
            READ,
            "The app roles a user holds (through access packages)",
            user_app_roles,
        )
        .route(Method::PATCH, "/v1.0/servicePrincipals/{id}", WRITE, "Update a service principal", update_sp)
        .route(
            Method::DELETE,
            "/v1.0/servicePrincipals/{id}",
            WRITE,
            "Delete a service principal (409 while a Conditional Access policy names it, unless ?force=true)",
            delete_sp,
        )
        .route(Method::GET, "/v1.0/applications", READ, "List applications (the service principals, read-only)", list_apps)
        .route(Method::GET, "/v1.0/applications/{id}", READ, "Get an application (by object id or appId)", get_app)
        .route(Method::GET, "/v1.0/devices", READ, "List devices", list_devices)
        .route(Method::POST, "/v1.0/devices", WRITE, "Register a device", create_device)
        .route(Method::GET, "/v1.0/devices/{id}", READ, "Get a device", get_device)
        .route(Method::PATCH, "/v1.0/devices/{id}", WRITE, "Update a device", update_device)
        .route(Method::DELETE, "/v1.0/devices/{id}", WRITE, "Delete a device", delete_device)
        .route(Method::GET, "/v1.0/directoryObjects/{id}", READ, "Get any directory object by id", get_object)
}

// ----- service principals -----

fn sp_missing(id: &str) -> ApiError {
    ApiError::not_found("servicePrincipal", id)
}

async fn list_sps(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let items: Vec<(String, Value)> = dir
            .service_principals()
            .map(|a| (sp_id(a), a))
            .map(|(id, a)| (id.clone(), service_principal_json(&id, a)))
            .collect();
        odata.respond(
            &state,
            &SERVICE_PRINCIPALS,
            "servicePrincipals",
            items,
            |(id, _)| id.as_str(),
            |(_, v)| v.clone(),
            |_, _| Ok(()),
        )?
    };
    Ok(ok(body))
}

async fn get_sp(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let key = normalize_id(&id);
        let a = dir.service_principal(&key).ok_or_else(|| sp_missing(&id))?;
        odata.entity(
            &state,
            &SERVICE_PRINCIPALS,
            "servicePrincipals",
            service_principal_json(&key, a),
            |_, _| Ok(()),
        )?
    };
    Ok(ok(body))
}

fn check_guid(property: &str, value: &str) -> ApiResult<String> {
    uuid::Uuid::parse_str(value.trim()).map(|u| u.to_string()).map_err(|_| {
        ApiError::directory_bad_request(format!(
            "Invalid value specified for property '{property}': `{value}` is not a GUID."
        ))
        .with_target(property.to_owned())
    })
}

async fn create_sp(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut sp = Map::new();
    copy_props("ServicePrincipal", &body, SP_PROPS, &[], &["id"], None, &mut sp)?;
    require("service principal", &sp, &["appId"])?;
    let app_id = check_guid("appId", sp.get("appId").and_then(Value::as_str).unwrap_or_default())?;
    sp.insert("appId".into(), app_id.clone().into());
    // Without app registrations there is no name to copy; the app id stands in (documented).
    if !sp.get("displayName").is_some_and(Value::is_string) {
        sp.insert("displayName".into(), app_id.clone().into());
    }
    sp.entry("accountEnabled").or_insert(true.into());
    sp.entry("servicePrincipalType").or_insert("Application".into());
    let id = crate::random::guid();
    sp.insert("id".into(), id.clone().into());
    sp.insert("createdDateTime".into(), gatehouse_core::time::format(state.now()).into());
    let w = state.begin_write().await?;
    if state.dir().service_principals().any(|a| a.app_id == app_id) {
        return Err(taken("appId"));
    }
    let name = sp.get("displayName").and_then(Value::as_str).map(str::to_owned);
    let target = AuditTarget { kind: "ServicePrincipal", id: id.clone(), display_name: name };
    let record = audit(
        &caller,
        "ApplicationManagement",
        "Add service principal",
        format!("appId {app_id}"),
        vec![target],
    );
    commit(&state, w, &[Change::PutServicePrincipal { service_principal: sp }], &[record]).await?;
    let body = {
        let dir = state.dir();
        let a = dir
            .service_principal(&id)
            .ok_or_else(|| ApiError::internal("the created service principal is not in memory"))?;
        odata.entity(
            &state,
            &SERVICE_PRINCIPALS,
            "servicePrincipals",
            service_principal_json(&id, a),
            |_, _| Ok(()),
        )?
    };
    Ok(created(body))
}

async fn update_sp(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let key = normalize_id(&id);
        let a = dir.service_principal(&key).ok_or_else(|| sp_missing(&id))?;
        let mut current = a.raw.clone();
        current.insert("appId".into(), a.app_id.clone().into());
        let mut patch = Map::new();
        copy_props(
            "ServicePrincipal",
            &body,
            SP_PROPS,
            &[],
            &["id", "appId"],
            Some(&current),
            &mut patch,
        )?;
        not_cleared("ServicePrincipal", &patch, &["displayName"])?;
        if patch.is_empty() {
            return Ok(no_content());
        }
        let reason = format!("changed: {}", patch.keys().cloned().collect::<Vec<_>>().join(", "));
        merge(&mut current, patch);
        current.insert("id".into(), key.clone().into());
        let record = audit(
            &caller,
            "ApplicationManagement",
            "Update service principal",
            reason,
            vec![target_of(&dir, &key)],
        );
        (Change::PutServicePrincipal { service_principal: current }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

async fn delete_sp(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let force = odata.flag("force")?;
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (key, record) = {
        let dir = state.dir();
        let key = normalize_id(&id);
        let a = dir.service_principal(&key).ok_or_else(|| sp_missing(&id))?;
        // Policies name apps by app id, and workload-identity policies by object id.
        let policies = referencing_policies(&dir, &[&key, &a.app_id]);
        if !policies.is_empty() && !force {
            return Err(ApiError::conflict(format!(
                "Service principal '{}' is referenced by Conditional Access policies {}; change those \
                 policies first, or delete with ?force=true.",
                a.display_name,
                policies.join(", ")
            )));
        }
        let reason = if policies.is_empty() {
            String::new()
        } else {
            format!(
                "forced although referenced by Conditional Access policies {}",
                policies.join(", ")
            )
        };
        let record = audit(
            &caller,
            "ApplicationManagement",
            "Remove service principal",
            reason,
            vec![target_of(&dir, &key)],
        );
        (key, record)
    };
    commit(&state, w, &[Change::DeleteServicePrincipal { id: key }], &[record]).await?;
    Ok(no_content())
}

// ----- applications (read-only views of the service principals) -----

async fn list_apps(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let items: Vec<(String, Value)> = dir
            .service_principals()
            .map(|a| (sp_id(a), a))
            .map(|(id, a)| (id.clone(), application_json(&id, a)))
            .collect();
        odata.respond(
            &state,
            &APPLICATIONS,
            "applications",
            items,
            |(id, _)| id.as_str(),
            |(_, v)| v.clone(),
            |_, _| Ok(()),
        )?
    };
    Ok(ok(body))
}

async fn get_app(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let key = normalize_id(&id);
        let found = match dir.service_principal(&key) {
            Some(a) => Some((key.clone(), a)),
            None => dir.service_principals().find(|a| a.app_id == key).map(|a| (sp_id(a), a)),
        };
        let (sid, a) = found.ok_or_else(|| ApiError::not_found("application", &id))?;
        odata.entity(&state, &APPLICATIONS, "applications", application_json(&sid, a), |_, _| {
            Ok(())
        })?
    };
    Ok(ok(body))
}

// ----- devices -----

fn device_missing(id: &str) -> ApiError {
    ApiError::not_found("device", id)
}

async fn list_devices(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let items: Vec<(String, &Map<String, Value>)> = dir
            .devices()
            .map(|d| (d.get("id").and_then(Value::as_str).map(normalize_id).unwrap_or_default(), d))
            .collect();
        odata.respond(
            &state,
            &DEVICES,
            "devices",
            items,
            |(id, _)| id.as_str(),
            |(_, d)| device_json(d),
            |_, _| Ok(()),
        )?
    };
    Ok(ok(body))
}

async fn get_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let d = dir.device(&normalize_id(&id)).ok_or_else(|| device_missing(&id))?;
        odata.entity(&state, &DEVICES, "devices", device_json(d), |_, _| Ok(()))?
    };
    Ok(ok(body))
}

/// `extensionAttributes`: only `extensionAttribute1`..`15`, strings or null; merged into
/// `current` (a PATCH changes only the attributes it names).
fn merge_extension_attributes(given: &Value, current: Option<&Value>) -> ApiResult<Value> {
    let bad = |why: String| ApiError::directory_bad_request(why).with_target("extensionAttributes");
    let Value::Object(given) = given else {
        return Err(bad("'extensionAttributes' must be an object.".into()));
    };
    let mut out = current.and_then(Value::as_object).cloned().unwrap_or_default();
    for (k, v) in given {
        if k.starts_with('@') {
            continue;
        }
        let n = k
            .to_ascii_lowercase()
            .strip_prefix("extensionattribute")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=EXTENSION_ATTRIBUTES).contains(n));
        let Some(n) = n else {
            return Err(bad(format!(
                "'{k}' is not one of extensionAttribute1 to extensionAttribute{EXTENSION_ATTRIBUTES}."
            )));
        };
        match v {
            Value::Null => {}
            Value::String(s) if s.chars().count() <= 1024 => {}
            _ => {
                return Err(bad(format!(
                    "'{k}' must be a string of at most 1024 characters, or null."
                )));
            }
        }
        out.insert(format!("extensionAttribute{n}"), v.clone());
    }
    Ok(Value::Object(out))
}

fn check_device_values(
    device: &mut Map<String, Value>,
    current: Option<&Map<String, Value>>,
) -> ApiResult<()> {
    if let Some(ext) = device.get("extensionAttributes").cloned() {
        let merged =
            merge_extension_attributes(&ext, current.and_then(|c| c.get("extensionAttributes")))?;
        device.insert("extensionAttributes".into(), merged);
    }
    one_of("Device", device, "trustType", &["Workplace", "AzureAd", "ServerAd"])?;
    one_of("Device", device, "deviceOwnership", &["unknown", "company", "personal"])
}

async fn create_device(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut device = Map::new();
    copy_props("Device", &body, DEVICE_PROPS, &[], &["id"], None, &mut device)?;
    require("device", &device, &["deviceId", "displayName", "operatingSystem"])?;
    let device_id =
        check_guid("deviceId", device.get("deviceId").and_then(Value::as_str).unwrap_or_default())?;
    device.insert("deviceId".into(), device_id.clone().into());
    check_device_values(&mut device, None)?;
    device.entry("accountEnabled").or_insert(true.into());
    let id = crate::random::guid();
    let now = gatehouse_core::time::format(state.now());
    device.insert("id".into(), id.clone().into());
    device.entry("registrationDateTime").or_insert(now.clone().into());
    device.insert("createdDateTime".into(), now.into());
    let w = state.begin_write().await?;
    let taken_already = state.dir().devices().any(|d| {
        d.get("deviceId")
            .and_then(Value::as_str)
            .is_some_and(|x| x.eq_ignore_ascii_case(&device_id))
    });
    if taken_already {
        return Err(taken("deviceId"));
    }
    let name = device.get("displayName").and_then(Value::as_str).map(str::to_owned);
    let target = AuditTarget { kind: "Device", id: id.clone(), display_name: name };
    let record =
        audit(&caller, "Device", "Add device", format!("deviceId {device_id}"), vec![target]);
    commit(&state, w, &[Change::PutDevice { device }], &[record]).await?;
    let body = {
        let dir = state.dir();
        let d = dir
            .device(&id)
            .ok_or_else(|| ApiError::internal("the created device is not in memory"))?;
        odata.entity(&state, &DEVICES, "devices", device_json(d), |_, _| Ok(()))?
    };
    Ok(created(body))
}

async fn update_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let key = normalize_id(&id);
        let current = dir.device(&key).ok_or_else(|| device_missing(&id))?;
        let mut patch = Map::new();
        copy_props(
            "Device",
            &body,
            DEVICE_PROPS,
            &[],
            &["id", "deviceId"],
            Some(current),
            &mut patch,
        )?;
        not_cleared("Device", &patch, &["displayName", "operatingSystem"])?;
        check_device_values(&mut patch, Some(current))?;
        if patch.is_empty() {
            return Ok(no_content());
        }
        let reason = format!("changed: {}", patch.keys().cloned().collect::<Vec<_>>().join(", "));
        let mut device = current.clone();
        merge(&mut device, patch);
        device.insert("id".into(), key.clone().into());
        let record = audit(&caller, "Device", "Update device", reason, vec![target_of(&dir, &key)]);
        (Change::PutDevice { device }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

async fn delete_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (key, record) = {
        let dir = state.dir();
        let key = normalize_id(&id);
        dir.device(&key).ok_or_else(|| device_missing(&id))?;
        let record = audit(&caller, "Device", "Delete device", "", vec![target_of(&dir, &key)]);
        (key, record)
    };
    commit(&state, w, &[Change::DeleteDevice { id: key }], &[record]).await?;
    Ok(no_content())
}

// ----- directoryObjects -----

async fn get_object(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let key = normalize_id(&id);
        let v =
            object_json(&dir, &key).ok_or_else(|| ApiError::not_found("directoryObject", &id))?;
        odata.entity(&state, &OBJECTS, "directoryObjects", v, |_, _| Ok(()))?
    };
    Ok(ok(body))
}

/// App role assignments come from access packages (an app role of an application resource).
fn app_role_assignments(
    dir: &gatehouse_core::Directory,
    keep: impl Fn(&str, &str) -> bool,
) -> Vec<Value> {
    let mut out: Vec<Value> = dir
        .granted_roles()
        .filter_map(|(role, principal)| match role {
            gatehouse_core::governance::model::GrantedRole::AppRole { service_principal_id, app_role_id }
                if keep(service_principal_id, principal) =>
            {
                let sp = dir.service_principal(service_principal_id);
                let user = dir.user(principal);
                Some(serde_json::json!({
                    "id": gatehouse_core::governance::derived_id(&format!("appRoleAssignment:{service_principal_id}:{app_role_id}:{principal}")),
                    "appRoleId": app_role_id,
                    "principalId": principal,
                    "principalType": "User",
                    "principalDisplayName": user.map(|u| u.display_name.clone()),
                    "resourceId": service_principal_id,
                    "resourceDisplayName": sp.map(|s| s.display_name.clone()),
                }))
            }
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    out
}

const APP_ROLE_ASSIGNMENTS: Spec =
    Spec::plain("appRoleAssignment", &["id", "appRoleId", "principalId", "resourceId"]);

async fn app_role_assigned_to(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let id = gatehouse_policy::json::normalize_id(&id);
    let items = {
        let dir = state.dir();
        if dir.service_principal(&id).is_none() {
            return Err(ApiError::not_found("servicePrincipal", &id));
        }
        app_role_assignments(&dir, |sp, _| sp == id)
    };
    let out = odata.respond(
        &state,
        &APP_ROLE_ASSIGNMENTS,
        &format!("servicePrincipals/{id}/appRoleAssignedTo"),
        items,
        |v| v["id"].as_str().unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn user_app_roles(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let (uid, items) = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| ApiError::not_found("user", &id))?.id.clone();
        let items = app_role_assignments(&dir, |_, p| p == u);
        (u, items)
    };
    let out = odata.respond(
        &state,
        &APP_ROLE_ASSIGNMENTS,
        &format!("users/{uid}/appRoleAssignments"),
        items,
        |v| v["id"].as_str().unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extension_attributes_merge_and_only_the_fifteen_exist() {
        let current = json!({"extensionAttribute1": "a", "extensionAttribute2": "b"});
        let merged = merge_extension_attributes(
            &json!({"extensionAttribute2": null, "ExtensionAttribute15": "z"}),
            Some(&current),
        )
        .unwrap();
        assert_eq!(
            merged,
            json!({"extensionAttribute1": "a", "extensionAttribute2": null, "extensionAttribute15": "z"})
        );
        for bad in [
            json!({"extensionAttribute16": "x"}),
            json!({"extensionAttribute0": "x"}),
            json!({"color": "x"}),
            json!({"extensionAttribute1": 5}),
            json!("x"),
        ] {
            assert!(merge_extension_attributes(&bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn guids_are_normalized() {
        assert_eq!(
            check_guid("deviceId", "C0000000-0000-4000-8000-00000000000A").unwrap(),
            "c0000000-0000-4000-8000-00000000000a"
        );
        assert!(check_guid("deviceId", "not-a-guid").is_err());
    }
}
