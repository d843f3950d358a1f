//! `/v1.0/roleManagement/directory`: role assignments (create, list, get, delete) and the
//! built-in role definitions Gatehouse knows (read-only).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use gatehouse_core::Change;
use gatehouse_core::directory::{Directory, ObjectKind, assignment_id};
use gatehouse_core::roles::{Access, Role, area};
use gatehouse_policy::json::normalize_id;
use gatehouse_policy::model::directory::RoleAssignment;
use serde_json::{Map, Value, json};

use super::{assignment_json, audit, commit, object_json, target_of};
use crate::http::Api;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::graph::{Body, created, no_content, ok};
use crate::http::odata::{Expand, OData, Spec};
use crate::state::AppState;
use crate::store::AuditTarget;

const READ: Access = Access::Roles(area::DIRECTORY_READ);
const WRITE: Access = Access::Roles(area::TENANT_WRITE);

const ASSIGNMENTS: Spec = Spec {
    resource: "UnifiedRoleAssignment",
    filterable: &["id", "principalId", "roleDefinitionId", "directoryScopeId"],
    searchable: &[],
    orderable: &[],
    expandable: &["principal", "roleDefinition"],
};

const DEFINITIONS: Spec = Spec {
    resource: "UnifiedRoleDefinition",
    filterable: &["id", "displayName", "templateId", "isBuiltIn", "isEnabled"],
    searchable: &[],
    orderable: &["displayName"],
    expandable: &[],
};

pub fn routes(api: Api) -> Api {
    api.route(
        Method::GET,
        "/v1.0/roleManagement/directory/roleAssignments",
        READ,
        "List directory role assignments",
        list_assignments,
    )
    .route(
        Method::POST,
        "/v1.0/roleManagement/directory/roleAssignments",
        WRITE,
        "Assign a directory role",
        create_assignment,
    )
    .route(
        Method::GET,
        "/v1.0/roleManagement/directory/roleAssignments/{id}",
        READ,
        "Get a directory role assignment",
        get_assignment,
    )
    .route(
        Method::DELETE,
        "/v1.0/roleManagement/directory/roleAssignments/{id}",
        WRITE,
        "Remove a directory role assignment (not the last Global Administrator's)",
        delete_assignment,
    )
    .route(
        Method::GET,
        "/v1.0/roleManagement/directory/roleDefinitions",
        READ,
        "List the built-in directory roles",
        list_definitions,
    )
    .route(
        Method::GET,
        "/v1.0/roleManagement/directory/roleDefinitions/{id}",
        READ,
        "Get a built-in directory role",
        get_definition,
    )
}

pub fn definition_json(r: Role) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.unifiedRoleDefinition",
        "id": r.template_id(),
        "displayName": r.display_name(),
        "description": r.display_name(),
        "isBuiltIn": true,
        "isEnabled": true,
        "templateId": r.template_id(),
        "version": "1",
        "resourceScopes": ["/"],
        "rolePermissions": [],
    })
}

fn expand_assignment(dir: &Directory, e: &Expand, m: &mut Map<String, Value>) -> ApiResult<()> {
    let key = if e.name == "principal" { "principalId" } else { "roleDefinitionId" };
    let id = m.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let value = if e.name == "principal" {
        object_json(dir, &id)
    } else {
        Role::from_template_id(&id).map(definition_json)
    };
    m.insert(e.name.to_owned(), value.map(|v| e.shape(v)).unwrap_or(Value::Null));
    Ok(())
}

async fn list_assignments(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let items: Vec<(String, &RoleAssignment)> =
            dir.role_assignments().map(|a| (assignment_id(a), a)).collect();
        odata.respond(
            &state,
            &ASSIGNMENTS,
            "roleManagement/directory/roleAssignments",
            items,
            |(id, _)| id.as_str(),
            |(_, a)| assignment_json(a),
            |e, m| expand_assignment(&dir, e, m),
        )?
    };
    Ok(ok(body))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("roleAssignment", id)
}

async fn get_assignment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let a = dir.role_assignment(&normalize_id(&id)).ok_or_else(|| not_found(&id))?;
        odata.entity(
            &state,
            &ASSIGNMENTS,
            "roleManagement/directory/roleAssignments",
            assignment_json(a),
            |e, m| expand_assignment(&dir, e, m),
        )?
    };
    Ok(ok(body))
}

fn string_field<'a>(body: &'a Map<String, Value>, name: &str) -> ApiResult<Option<&'a str>> {
    match body.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim())),
        Some(_) => {
            Err(ApiError::directory_bad_request(format!("'{name}' must be a non-empty string."))
                .with_target(name))
        }
    }
}

async fn create_assignment(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    for k in body.keys() {
        let known = ["principalId", "roleDefinitionId", "directoryScopeId"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(k));
        if !known && !k.starts_with('@') {
            return Err(ApiError::directory_bad_request(format!(
                "Property '{k}' does not exist on type 'microsoft.graph.unifiedRoleAssignment' or cannot be written."
            ))
            .with_target(k.clone()));
        }
    }
    let principal = string_field(&body, "principalId")?.map(normalize_id).ok_or_else(|| {
        ApiError::directory_bad_request("Property 'principalId' is required.")
            .with_target("principalId")
    })?;
    let role_id = string_field(&body, "roleDefinitionId")?.ok_or_else(|| {
        ApiError::directory_bad_request("Property 'roleDefinitionId' is required.")
            .with_target("roleDefinitionId")
    })?;
    let scope = string_field(&body, "directoryScopeId")?.unwrap_or("/").to_owned();
    if !scope.starts_with('/') {
        return Err(ApiError::directory_bad_request(format!(
            "'directoryScopeId' must be '/' or a path such as '/administrativeUnits/{{id}}', not '{scope}'."
        ))
        .with_target("directoryScopeId"));
    }
    let Some(role) = Role::from_template_id(role_id) else {
        return Err(ApiError::directory_bad_request(format!(
            "'{role_id}' is not a role definition this server knows; see /roleManagement/directory/roleDefinitions."
        ))
        .with_target("roleDefinitionId"));
    };
    let id = crate::random::guid();
    let w = state.begin_write().await?;
    let assignment = {
        let dir = state.dir();
        match dir.kind_of(&principal) {
            Some(ObjectKind::User | ObjectKind::ServicePrincipal) => {}
            Some(ObjectKind::Group) => {
                let assignable = dir
                    .group(&principal)
                    .and_then(|g| g.raw.get("isAssignableToRole"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !assignable {
                    return Err(ApiError::directory_bad_request(
                        "Only groups created with isAssignableToRole=true can be assigned roles.",
                    )
                    .with_target("principalId"));
                }
            }
            Some(ObjectKind::Device) | None => {
                return Err(ApiError::directory_bad_request(format!(
                    "Principal '{principal}' is not a user, role-assignable group or service principal in this directory."
                ))
                .with_target("principalId"));
            }
        }
        let duplicate = dir.role_assignments().any(|a| {
            a.principal_id == principal
                && Role::from_template_id(&a.role_template_id) == Some(role)
                && a.directory_scope_id == scope
        });
        if duplicate {
            return Err(ApiError::directory_bad_request(
                "A conflicting object with one or more of the specified property values is present in the directory.",
            ));
        }
        let target = target_of(&dir, &principal);
        (
            target,
            json!({"id": id, "principalId": principal, "roleDefinitionId": role.template_id(), "directoryScopeId": scope}),
        )
    };
    let (target, assignment) = assignment;
    let Value::Object(assignment) = assignment else {
        return Err(ApiError::internal("role assignment is not an object"));
    };
    let role_target = AuditTarget {
        kind: "Role",
        id: role.template_id().to_owned(),
        display_name: Some(role.display_name().to_owned()),
    };
    let record = audit(
        &caller,
        "RoleManagement",
        "Add member to role",
        format!("scope {scope}"),
        vec![target, role_target],
    );
    commit(&state, w, &[Change::PutRoleAssignment { assignment }], &[record]).await?;
    let body = {
        let dir = state.dir();
        let a = dir
            .role_assignment(&id)
            .ok_or_else(|| ApiError::internal("the created assignment is not in memory"))?;
        odata.entity(
            &state,
            &ASSIGNMENTS,
            "roleManagement/directory/roleAssignments",
            assignment_json(a),
            |_, _| Ok(()),
        )?
    };
    Ok(created(body))
}

fn tenant_wide(a: &RoleAssignment) -> bool {
    a.directory_scope_id == "/" || a.directory_scope_id.is_empty()
}

async fn delete_assignment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (assignment_id, record) = {
        let dir = state.dir();
        let key = normalize_id(&id);
        let a = dir.role_assignment(&key).ok_or_else(|| not_found(&id))?;
        let role = Role::from_template_id(&a.role_template_id);
        if role == Some(Role::GlobalAdministrator) && tenant_wide(a) {
            let others = dir
                .role_assignments()
                .filter(|o| {
                    tenant_wide(o)
                        && Role::from_template_id(&o.role_template_id)
                            == Some(Role::GlobalAdministrator)
                })
                .count();
            if others <= 1 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "This is the last tenant-wide Global Administrator assignment; removing it would lock every administrator out.",
                ));
            }
        }
        let role_target = AuditTarget {
            kind: "Role",
            id: a.role_template_id.clone(),
            display_name: role.map(|r| r.display_name().to_owned()),
        };
        let record = audit(
            &caller,
            "RoleManagement",
            "Remove member from role",
            format!("scope {}", a.directory_scope_id),
            vec![target_of(&dir, &a.principal_id), role_target],
        );
        (key, record)
    };
    commit(&state, w, &[Change::DeleteRoleAssignment { id: assignment_id }], &[record]).await?;
    Ok(no_content())
}

async fn list_definitions(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let body = odata.respond(
        &state,
        &DEFINITIONS,
        "roleManagement/directory/roleDefinitions",
        Role::ALL,
        |r| r.template_id(),
        |r| definition_json(*r),
        |_, _| Ok(()),
    )?;
    Ok(ok(body))
}

async fn get_definition(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let role =
        Role::from_template_id(&id).ok_or_else(|| ApiError::not_found("roleDefinition", &id))?;
    let body = odata.entity(
        &state,
        &DEFINITIONS,
        "roleManagement/directory/roleDefinitions",
        definition_json(role),
        |_, _| Ok(()),
    )?;
    Ok(ok(body))
}
