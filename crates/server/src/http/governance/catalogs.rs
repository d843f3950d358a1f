//! Catalogs, their resources (added and removed by resource requests), resource roles and
//! scopes, custom extensions, and the catalog roles of `roleManagement/entitlementManagement`.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use gatehouse_core::governance::duration::Duration;
use gatehouse_core::roles::{Access, CatalogRight, CatalogRole, area};
use gatehouse_policy::json::normalize_id;
use serde_json::{Map, Value, json};

use super::{EM, allow_keys, bad, display_name, doc_or_404, flag, not_found, now_text, text};
use crate::governance::objects;
use crate::http::Api;
use crate::http::auth::{Caller, CatalogAccess};
use crate::http::error::{ApiError, ApiResult};
use crate::http::graph::{Body, created, no_content, ok};
use crate::http::odata::{OData, Spec};
use crate::state::AppState;
use crate::store::governance::{Doc, Kind};
use crate::store::{AuditRecord, AuditTarget};

const READ: Access = Access::Catalog(area::GOVERNANCE_READ, CatalogRight::Read);
const MANAGE: Access = Access::Catalog(area::GOVERNANCE_WRITE, CatalogRight::ManageCatalog);
const CREATE: Access = Access::Catalog(area::GOVERNANCE_WRITE, CatalogRight::CreateCatalog);

const CATALOGS: Spec = Spec {
    resource: "accessPackageCatalog",
    filterable: &["id", "displayName", "state", "catalogType", "isExternallyVisible"],
    searchable: &[],
    orderable: &["displayName", "createdDateTime"],
    expandable: &[],
};
const RESOURCES: Spec = Spec {
    resource: "accessPackageResource",
    filterable: &["id", "displayName", "originId", "originSystem"],
    searchable: &[],
    orderable: &["displayName"],
    expandable: &["roles", "scopes"],
};
const ROLES: Spec = Spec {
    resource: "accessPackageResourceRole",
    filterable: &[
        "id",
        "displayName",
        "originId",
        "originSystem",
        "resource/id",
        "resource/originId",
    ],
    searchable: &[],
    orderable: &["displayName"],
    expandable: &["resource"],
};
const SCOPES: Spec =
    Spec::plain("accessPackageResourceScope", &["id", "originId", "originSystem", "isRootScope"]);
const REQUESTS: Spec = Spec::plain("accessPackageResourceRequest", &["id", "requestType", "state"]);
const EXTENSIONS: Spec = Spec::plain("customCalloutExtension", &["id", "displayName"]);
const ROLE_ASSIGNMENTS: Spec =
    Spec::plain("unifiedRoleAssignment", &["id", "principalId", "roleDefinitionId", "appScopeId"]);

pub fn routes(api: Api) -> Api {
    api.route(Method::GET, em!("/catalogs"), READ, "List access package catalogs", list_catalogs)
        .route(
            Method::POST,
            em!("/catalogs"),
            CREATE,
            "Create a catalog (its creator becomes its owner)",
            create_catalog,
        )
        .route(Method::GET, em!("/catalogs/{id}"), READ, "Get a catalog", get_catalog)
        .route(Method::PATCH, em!("/catalogs/{id}"), MANAGE, "Update a catalog", update_catalog)
        .route(
            Method::DELETE,
            em!("/catalogs/{id}"),
            MANAGE,
            "Delete a catalog without access packages",
            delete_catalog,
        )
        .route(
            Method::GET,
            em!("/catalogs/{id}/resources"),
            READ,
            "List a catalog's resources",
            list_resources,
        )
        .route(
            Method::GET,
            em!("/catalogs/{id}/resourceRoles"),
            READ,
            "List the roles of a catalog's resources",
            list_roles,
        )
        .route(
            Method::GET,
            em!("/catalogs/{id}/resourceScopes"),
            READ,
            "List the scopes of a catalog's resources",
            list_scopes,
        )
        .route(
            Method::GET,
            em!("/catalogs/{id}/customWorkflowExtensions"),
            READ,
            "List a catalog's custom extensions",
            list_extensions,
        )
        .route(
            Method::POST,
            em!("/catalogs/{id}/customWorkflowExtensions"),
            MANAGE,
            "Create a custom extension (its signing secret is shown once)",
            create_extension,
        )
        .route(
            Method::GET,
            em!("/catalogs/{id}/customWorkflowExtensions/{ext}"),
            READ,
            "Get a custom extension",
            get_extension,
        )
        .route(
            Method::PATCH,
            em!("/catalogs/{id}/customWorkflowExtensions/{ext}"),
            MANAGE,
            "Update a custom extension",
            update_extension,
        )
        .route(
            Method::DELETE,
            em!("/catalogs/{id}/customWorkflowExtensions/{ext}"),
            MANAGE,
            "Delete a custom extension no policy uses",
            delete_extension,
        )
        .route(
            Method::GET,
            em!("/resourceRequests"),
            READ,
            "List resource requests",
            list_resource_requests,
        )
        .route(
            Method::POST,
            em!("/resourceRequests"),
            MANAGE,
            "Add a group or application to a catalog, or remove it",
            create_resource_request,
        )
        .route(
            Method::GET,
            "/v1.0/roleManagement/entitlementManagement/roleDefinitions",
            Access::Roles(area::GOVERNANCE_READ),
            "List the entitlement management roles",
            list_role_definitions,
        )
        .route(
            Method::GET,
            "/v1.0/roleManagement/entitlementManagement/roleAssignments",
            READ,
            "List catalog role assignments",
            list_role_assignments,
        )
        .route(
            Method::POST,
            "/v1.0/roleManagement/entitlementManagement/roleAssignments",
            MANAGE,
            "Give a user or group a catalog role",
            create_role_assignment,
        )
        .route(
            Method::DELETE,
            "/v1.0/roleManagement/entitlementManagement/roleAssignments/{id}",
            MANAGE,
            "Remove a catalog role assignment",
            delete_role_assignment,
        )
}

pub fn audit(
    caller: &Caller,
    activity: &str,
    target: (&'static str, &str, Option<&str>),
    reason: String,
) -> AuditRecord {
    AuditRecord {
        id: crate::random::guid(),
        category: "EntitlementManagement",
        activity: activity.to_owned(),
        result: "success",
        result_reason: reason,
        initiated_by: caller.audit_actor(),
        targets: vec![AuditTarget {
            kind: target.0,
            id: target.1.to_owned(),
            display_name: target.2.map(str::to_owned),
        }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    }
}

/// Commits definition changes (no directory change) with their audit records.
pub async fn commit_docs(
    state: &AppState,
    mut w: crate::store::Write,
    docs: &[(Kind, Doc, Option<String>)],
    deletes: &[(Kind, String)],
    audits: &[AuditRecord],
) -> ApiResult<()> {
    for (kind, d, secret) in docs {
        w.put_doc(*kind, d, secret.as_deref()).await?;
    }
    for (kind, id) in deletes {
        w.delete_doc(*kind, id).await?;
    }
    crate::governance::commit(state, w, &[], audits).await?;
    Ok(())
}

fn name_of(d: &Doc) -> Option<&str> {
    d.body.get("displayName").and_then(Value::as_str)
}

async fn list_catalogs(
    State(state): State<AppState>,
    access: CatalogAccess,
    odata: OData,
) -> ApiResult<Response> {
    let docs = state.store.docs(Kind::Catalog, None).await?;
    let visible: Vec<Doc> =
        docs.into_iter().filter(|d| access.may(&d.id, CatalogRight::Read)).collect();
    let out = odata.respond(
        &state,
        &CATALOGS,
        &format!("{EM}/catalogs"),
        visible,
        |d| d.id.as_str(),
        |d| d.body.clone(),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn get_catalog(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let d = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&d.id)?;
    let out = odata.entity(&state, &CATALOGS, &format!("{EM}/catalogs"), d.body, |_, _| Ok(()))?;
    Ok(ok(out))
}

const CATALOG_KEYS: &[&str] =
    &["displayName", "description", "state", "isExternallyVisible", "catalogType"];

fn catalog_state(body: &Map<String, Value>) -> ApiResult<Option<&'static str>> {
    match text(body, "state")? {
        None => Ok(None),
        Some(s) if s.eq_ignore_ascii_case("published") => Ok(Some("published")),
        Some(s) if s.eq_ignore_ascii_case("unpublished") => Ok(Some("unpublished")),
        Some(s) => {
            Err(bad("state", format!("`{s}` is not a catalog state (published, unpublished)")))
        }
    }
}

async fn create_catalog(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(&body, CATALOG_KEYS, "a catalog")?;
    if text(&body, "catalogType")?.is_some_and(|t| !t.eq_ignore_ascii_case("userManaged")) {
        return Err(bad(
            "catalogType",
            "is read-only; catalogs created through the API are userManaged",
        ));
    }
    let name = display_name(&body, true)?.unwrap_or_default();
    let now = now_text(&state);
    let id = crate::random::guid();
    let catalog = json!({
        "id": id,
        "displayName": name,
        "description": text(&body, "description")?.unwrap_or_default(),
        "catalogType": "userManaged",
        "state": catalog_state(&body)?.unwrap_or("published"),
        "isExternallyVisible": flag(&body, "isExternallyVisible")?.unwrap_or(false),
        "createdDateTime": now,
        "modifiedDateTime": now,
    });
    let w = state.begin_write().await?;
    if state
        .store
        .docs(Kind::Catalog, None)
        .await?
        .iter()
        .any(|d| name_of(d).is_some_and(|n| n.eq_ignore_ascii_case(&name)))
    {
        return Err(ApiError::conflict(format!("a catalog named `{name}` exists already")));
    }
    let mut docs = vec![(
        Kind::Catalog,
        Doc { id: id.clone(), parent: "/".into(), created: state.now(), body: catalog.clone() },
        None,
    )];
    // A catalog creator who is not an administrator becomes the owner of what they create.
    if !access.all {
        let ra = crate::random::guid();
        docs.push((Kind::CatalogRole, Doc {
            id: ra.clone(),
            parent: id.clone(),
            created: state.now(),
            body: json!({"id": ra, "principalId": caller.user_id, "roleDefinitionId": CatalogRole::Owner.id(),
                         "directoryScopeId": "/", "appScopeId": format!("/AccessPackageCatalog/{id}")}),
        }, None));
    }
    let record =
        audit(&caller, "Create catalog", ("AccessPackageCatalog", &id, Some(&name)), String::new());
    commit_docs(&state, w, &docs, &[], &[record]).await?;
    Ok(created(crate::http::graph::entity(&state, &format!("{EM}/catalogs"), catalog)))
}

async fn update_catalog(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(
        &body,
        &["displayName", "description", "state", "isExternallyVisible"],
        "a catalog",
    )?;
    let w = state.begin_write().await?;
    let mut d = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&d.id)?;
    if let Some(o) = d.body.as_object_mut() {
        if let Some(n) = display_name(&body, false)? {
            o.insert("displayName".into(), n.into());
        }
        if let Some(desc) = text(&body, "description")? {
            o.insert("description".into(), desc.into());
        }
        if let Some(s) = catalog_state(&body)? {
            o.insert("state".into(), s.into());
        }
        if let Some(v) = flag(&body, "isExternallyVisible")? {
            o.insert("isExternallyVisible".into(), v.into());
        }
        o.insert("modifiedDateTime".into(), now_text(&state).into());
    }
    let record = audit(
        &caller,
        "Update catalog",
        ("AccessPackageCatalog", &d.id, name_of(&d)),
        String::new(),
    );
    commit_docs(&state, w, &[(Kind::Catalog, d, None)], &[], &[record]).await?;
    Ok(no_content())
}

async fn delete_catalog(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let d = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&d.id)?;
    let packages = state.store.docs(Kind::Package, Some(&d.id)).await?;
    if !packages.is_empty() {
        return Err(ApiError::conflict(format!(
            "catalog `{}` still holds {} access package(s); delete them first",
            name_of(&d).unwrap_or(&d.id),
            packages.len()
        )));
    }
    let mut deletes = vec![(Kind::Catalog, d.id.clone())];
    for kind in [Kind::Resource, Kind::Extension, Kind::CatalogRole, Kind::ResourceRequest] {
        for x in state.store.docs(kind, Some(&d.id)).await? {
            deletes.push((kind, x.id));
        }
    }
    let record = audit(
        &caller,
        "Delete catalog",
        ("AccessPackageCatalog", &d.id, name_of(&d)),
        String::new(),
    );
    commit_docs(&state, w, &[], &deletes, &[record]).await?;
    Ok(no_content())
}

/// A resource with its roles and scopes expanded on request.
fn expand_resource(
    state: &AppState,
    e: &crate::http::odata::Expand,
    m: &mut Map<String, Value>,
) -> ApiResult<()> {
    let body = Value::Object(m.clone());
    match e.name {
        "roles" => {
            let roles = objects::resource_roles(&body, &state.dir());
            m.insert(
                "roles".into(),
                roles.into_iter().map(|r| e.shape(r)).collect::<Vec<_>>().into(),
            );
        }
        "scopes" => {
            m.insert("scopes".into(), vec![e.shape(objects::resource_scope(&body))].into());
        }
        _ => {}
    }
    Ok(())
}

async fn list_resources(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let c = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&c.id)?;
    let docs = state.store.docs(Kind::Resource, Some(&c.id)).await?;
    let out = odata.respond(
        &state,
        &RESOURCES,
        &format!("{EM}/catalogs/{}/resources", c.id),
        docs,
        |d| d.id.as_str(),
        |d| d.body.clone(),
        |e, m| expand_resource(&state, e, m),
    )?;
    Ok(ok(out))
}

async fn list_roles(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let c = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&c.id)?;
    let docs = state.store.docs(Kind::Resource, Some(&c.id)).await?;
    let roles: Vec<Value> = {
        let dir = state.dir();
        docs.iter().flat_map(|d| objects::resource_roles(&d.body, &dir)).collect()
    };
    let out = odata.respond(
        &state,
        &ROLES,
        &format!("{EM}/catalogs/{}/resourceRoles", c.id),
        roles,
        |r| r.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |e, m| {
            // `resource` is always present in full on a role; `$expand` only narrows it.
            if let Some(r) = m.get("resource").cloned() {
                m.insert("resource".into(), e.shape(r));
            }
            Ok(())
        },
    )?;
    Ok(ok(out))
}

async fn list_scopes(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let c = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&c.id)?;
    let scopes: Vec<Value> = state
        .store
        .docs(Kind::Resource, Some(&c.id))
        .await?
        .iter()
        .map(|d| objects::resource_scope(&d.body))
        .collect();
    let out = odata.respond(
        &state,
        &SCOPES,
        &format!("{EM}/catalogs/{}/resourceScopes", c.id),
        scopes,
        |r| r.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn list_resource_requests(
    State(state): State<AppState>,
    access: CatalogAccess,
    odata: OData,
) -> ApiResult<Response> {
    let docs: Vec<Doc> = state
        .store
        .docs(Kind::ResourceRequest, None)
        .await?
        .into_iter()
        .filter(|d| access.may(&d.parent, CatalogRight::Read))
        .collect();
    let out = odata.respond(
        &state,
        &REQUESTS,
        &format!("{EM}/resourceRequests"),
        docs,
        |d| d.id.as_str(),
        |d| d.body.clone(),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

/// `POST /resourceRequests`: `adminAdd` puts a group or an application (service principal) of
/// the directory into a catalog; `adminRemove` takes it out, unless an access package still
/// grants one of its roles.
async fn create_resource_request(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(
        &body,
        &["requestType", "resource", "catalog", "justification"],
        "a resource request",
    )?;
    let kind = text(&body, "requestType")?
        .ok_or_else(|| bad("requestType", "is required (adminAdd or adminRemove)"))?;
    let add = if kind.eq_ignore_ascii_case("adminAdd") {
        true
    } else if kind.eq_ignore_ascii_case("adminRemove") {
        false
    } else {
        return Err(bad(
            "requestType",
            format!("`{kind}` is not supported here (adminAdd, adminRemove)"),
        ));
    };
    let catalog_id =
        super::nested_id(&body, "catalog").ok_or_else(|| bad("catalog.id", "is required"))?;
    let resource = body.get("resource").and_then(Value::as_object).ok_or_else(|| {
        bad("resource", "is required: {\"originId\": …, \"originSystem\": \"AadGroup\"}")
    })?;
    let origin_id = text(resource, "originId")?
        .map(normalize_id)
        .ok_or_else(|| bad("resource.originId", "is required"))?;
    let system = match text(resource, "originSystem")? {
        Some(s) if s.eq_ignore_ascii_case("AadGroup") => "AadGroup",
        Some(s) if s.eq_ignore_ascii_case("AadApplication") => "AadApplication",
        Some(s) => {
            return Err(bad(
                "resource.originSystem",
                format!("`{s}` is not served: AadGroup or AadApplication"),
            ));
        }
        None => {
            return Err(bad("resource.originSystem", "is required (AadGroup or AadApplication)"));
        }
    };
    let w = state.begin_write().await?;
    let catalog = doc_or_404(&state, Kind::Catalog, &catalog_id, "Catalog").await?;
    access.require(&catalog.id)?;
    let existing = state
        .store
        .docs(Kind::Resource, Some(&catalog.id))
        .await?
        .into_iter()
        .find(|d| objects::origin_id(&d.body) == origin_id);
    let now = now_text(&state);
    let req_id = crate::random::guid();
    let (docs, deletes, resource_doc, activity) = if add {
        if existing.is_some() {
            return Err(ApiError::conflict(format!(
                "`{origin_id}` is already a resource of catalog `{}`",
                name_of(&catalog).unwrap_or(&catalog.id)
            )));
        }
        let (name, description) = {
            let dir = state.dir();
            match system {
                "AadGroup" => {
                    let g = dir.group(&origin_id).ok_or_else(|| not_found("Group", &origin_id))?;
                    (
                        g.display_name.clone(),
                        g.raw
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    )
                }
                _ => {
                    let sp = dir
                        .service_principal(&origin_id)
                        .ok_or_else(|| not_found("Service principal", &origin_id))?;
                    (sp.display_name.clone(), String::new())
                }
            }
        };
        let rid = crate::random::guid();
        let body = json!({
            "id": rid, "displayName": name, "description": description, "originId": origin_id,
            "originSystem": system, "createdDateTime": now, "modifiedDateTime": now, "attributes": [],
        });
        (
            vec![(
                Kind::Resource,
                Doc {
                    id: rid,
                    parent: catalog.id.clone(),
                    created: state.now(),
                    body: body.clone(),
                },
                None,
            )],
            vec![],
            body,
            "Add resource to catalog",
        )
    } else {
        let Some(existing) = existing else {
            return Err(not_found("Catalog resource", &origin_id));
        };
        for p in state.store.docs(Kind::Package, Some(&catalog.id)).await? {
            if state.store.docs(Kind::RoleScope, Some(&p.id)).await?.iter().any(|rs| {
                rs.body
                    .get("role")
                    .and_then(|r| r.get("resource"))
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str)
                    == Some(existing.id.as_str())
            }) {
                return Err(ApiError::conflict(format!(
                    "access package `{}` grants a role of this resource; remove it from the package first",
                    name_of(&p).unwrap_or(&p.id)
                )));
            }
        }
        (
            vec![],
            vec![(Kind::Resource, existing.id.clone())],
            existing.body.clone(),
            "Remove resource from catalog",
        )
    };
    let request = json!({
        "id": req_id, "requestType": if add { "adminAdd" } else { "adminRemove" }, "state": "delivered",
        "createdDateTime": now, "catalog": {"id": catalog.id}, "resource": resource_doc,
    });
    let mut docs = docs;
    docs.push((
        Kind::ResourceRequest,
        Doc { id: req_id, parent: catalog.id.clone(), created: state.now(), body: request.clone() },
        None,
    ));
    let record = audit(
        &caller,
        activity,
        ("AccessPackageCatalog", &catalog.id, name_of(&catalog)),
        format!("{system} {origin_id}"),
    );
    commit_docs(&state, w, &docs, &deletes, &[record]).await?;
    Ok(created(crate::http::graph::entity(&state, &format!("{EM}/resourceRequests"), request)))
}

// ----- custom extensions -----

const EXTENSION_KEYS: &[&str] = &[
    "displayName",
    "description",
    "endpointConfiguration",
    "authenticationConfiguration",
    "clientConfiguration",
    "callbackConfiguration",
];

/// Checks and normalises a custom extension body (create, or the merge of an update).
fn extension_body(
    state: &AppState,
    ty: &str,
    body: &Map<String, Value>,
    id: &str,
    created: &str,
    catalog: &str,
) -> ApiResult<Value> {
    let name = display_name(body, true)?.unwrap_or_default();
    let endpoint = body.get("endpointConfiguration").and_then(Value::as_object).ok_or_else(|| bad("endpointConfiguration", "is required: {\"@odata.type\": \"#microsoft.graph.httpRequestEndpoint\", \"targetUrl\": \"https://…\"}"))?;
    let ety = text(endpoint, "@odata.type")?.unwrap_or("#microsoft.graph.httpRequestEndpoint");
    if !ety.trim_start_matches('#').eq_ignore_ascii_case("microsoft.graph.httpRequestEndpoint") {
        return Err(bad(
            "endpointConfiguration.@odata.type",
            format!("`{ety}` is not served; Gatehouse calls #microsoft.graph.httpRequestEndpoint"),
        ));
    }
    let url = text(endpoint, "targetUrl")?
        .ok_or_else(|| bad("endpointConfiguration.targetUrl", "is required"))?;
    crate::governance::webhook::check_endpoint(
        url,
        &state.config.governance.insecure_webhook_hosts,
    )
    .map_err(|m| bad("endpointConfiguration.targetUrl", m))?;
    let client =
        body.get("clientConfiguration").and_then(Value::as_object).cloned().unwrap_or_default();
    let retries = client.get("maximumRetries").and_then(Value::as_i64).unwrap_or(0);
    if !(0..=1).contains(&retries) {
        return Err(bad("clientConfiguration.maximumRetries", "must be 0 or 1"));
    }
    let timeout = client.get("timeoutInMilliseconds").and_then(Value::as_i64).unwrap_or(1000);
    if !(200..=2000).contains(&timeout) {
        return Err(bad("clientConfiguration.timeoutInMilliseconds", "must be 200 to 2000"));
    }
    let callback = match body.get("callbackConfiguration").filter(|v| !v.is_null()) {
        None => Value::Null,
        Some(_) if ty == objects::ASSIGNMENT_EXTENSION => {
            return Err(bad(
                "callbackConfiguration",
                "only request workflow extensions wait for a callback",
            ));
        }
        Some(c) => {
            let t = c
                .get("timeoutDuration")
                .or_else(|| c.get("durationBeforeTimeout"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("callbackConfiguration.timeoutDuration", "is required"))?;
            let d =
                Duration::parse(t).map_err(|m| bad("callbackConfiguration.timeoutDuration", m))?;
            if d.nominal_ms() < 5 * 60_000 || d.nominal_ms() > 14 * 86_400_000 {
                return Err(bad(
                    "callbackConfiguration.timeoutDuration",
                    "must be 5 minutes to 14 days",
                ));
            }
            json!({"@odata.type": "#microsoft.graph.customExtensionCallbackConfiguration", "timeoutDuration": d.to_iso()})
        }
    };
    Ok(json!({
        "@odata.type": ty,
        "id": id,
        "displayName": name,
        "description": text(body, "description")?.unwrap_or_default(),
        "endpointConfiguration": {"@odata.type": "#microsoft.graph.httpRequestEndpoint", "targetUrl": url},
        "authenticationConfiguration": body.get("authenticationConfiguration").cloned().unwrap_or(json!({"@odata.type": "#microsoft.graph.azureAdPopTokenAuthentication"})),
        "clientConfiguration": {"maximumRetries": retries, "timeoutInMilliseconds": timeout},
        "callbackConfiguration": callback,
        "createdDateTime": created,
        "lastModifiedDateTime": now_text(state),
        "catalog": {"id": catalog},
    }))
}

fn extension_type(body: &Map<String, Value>) -> ApiResult<&'static str> {
    let ty = text(body, "@odata.type")?.unwrap_or_default();
    let t = ty.trim_start_matches('#');
    if t.eq_ignore_ascii_case(objects::REQUEST_EXTENSION.trim_start_matches('#')) {
        Ok(objects::REQUEST_EXTENSION)
    } else if t.eq_ignore_ascii_case(objects::ASSIGNMENT_EXTENSION.trim_start_matches('#')) {
        Ok(objects::ASSIGNMENT_EXTENSION)
    } else {
        Err(bad(
            "@odata.type",
            format!(
                "is required: {} or {}",
                objects::REQUEST_EXTENSION,
                objects::ASSIGNMENT_EXTENSION
            ),
        ))
    }
}

async fn list_extensions(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let c = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&c.id)?;
    let docs = state.store.docs(Kind::Extension, Some(&c.id)).await?;
    let out = odata.respond(
        &state,
        &EXTENSIONS,
        &format!("{EM}/catalogs/{}/customWorkflowExtensions", c.id),
        docs,
        |d| d.id.as_str(),
        |d| d.body.clone(),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn create_extension(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(&body, EXTENSION_KEYS, "a custom extension")?;
    let ty = extension_type(&body)?;
    let w = state.begin_write().await?;
    let c = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&c.id)?;
    let eid = crate::random::guid();
    let doc_body = extension_body(&state, ty, &body, &eid, &now_text(&state), &c.id)?;
    let secret = crate::random::token("whsec_");
    let record = audit(
        &caller,
        "Create custom extension",
        ("CustomCalloutExtension", &eid, doc_body.get("displayName").and_then(Value::as_str)),
        String::new(),
    );
    commit_docs(
        &state,
        w,
        &[(
            Kind::Extension,
            Doc { id: eid, parent: c.id.clone(), created: state.now(), body: doc_body.clone() },
            Some(secret.clone()),
        )],
        &[],
        &[record],
    )
    .await?;
    // The signing secret is in this response only; Gatehouse keeps it to sign its calls.
    let mut out = crate::http::graph::entity(
        &state,
        &format!("{EM}/catalogs/{}/customWorkflowExtensions", c.id),
        doc_body,
    );
    if let Some(o) = out.as_object_mut() {
        o.insert("signingSecret".into(), secret.into());
    }
    Ok(created(out))
}

async fn extension_doc(state: &AppState, catalog: &str, ext: &str) -> ApiResult<Doc> {
    let d = doc_or_404(state, Kind::Extension, ext, "Custom extension").await?;
    if d.parent != normalize_id(catalog) {
        return Err(not_found("Custom extension", ext));
    }
    Ok(d)
}

async fn get_extension(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path((id, ext)): Path<(String, String)>,
    odata: OData,
) -> ApiResult<Response> {
    let d = extension_doc(&state, &id, &ext).await?;
    access.require(&d.parent)?;
    let out = odata.entity(
        &state,
        &EXTENSIONS,
        &format!("{EM}/catalogs/{}/customWorkflowExtensions", d.parent),
        d.body,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn update_extension(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path((id, ext)): Path<(String, String)>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(&body, EXTENSION_KEYS, "a custom extension")?;
    let w = state.begin_write().await?;
    let mut d = extension_doc(&state, &id, &ext).await?;
    access.require(&d.parent)?;
    let ty = d
        .body
        .get("@odata.type")
        .and_then(Value::as_str)
        .unwrap_or(objects::REQUEST_EXTENSION)
        .to_owned();
    let mut merged = d.body.as_object().cloned().unwrap_or_default();
    for (k, v) in body {
        merged.insert(k, v);
    }
    let created_at =
        d.body.get("createdDateTime").and_then(Value::as_str).unwrap_or_default().to_owned();
    d.body = extension_body(&state, &ty, &merged, &d.id, &created_at, &d.parent)?;
    let record = audit(
        &caller,
        "Update custom extension",
        ("CustomCalloutExtension", &d.id, name_of(&d)),
        String::new(),
    );
    commit_docs(&state, w, &[(Kind::Extension, d, None)], &[], &[record]).await?;
    Ok(no_content())
}

async fn delete_extension(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path((id, ext)): Path<(String, String)>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let d = extension_doc(&state, &id, &ext).await?;
    access.require(&d.parent)?;
    for p in state.store.docs(Kind::Policy, None).await? {
        let uses = p
            .body
            .get("customExtensionStageSettings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|s| {
                s.get("customExtension").and_then(|c| c.get("id")).and_then(Value::as_str)
                    == Some(d.id.as_str())
            });
        if uses {
            return Err(ApiError::conflict(format!(
                "assignment policy `{}` calls this extension; remove it from the policy first",
                p.body.get("displayName").and_then(Value::as_str).unwrap_or(&p.id)
            )));
        }
    }
    let record = audit(
        &caller,
        "Delete custom extension",
        ("CustomCalloutExtension", &d.id, name_of(&d)),
        String::new(),
    );
    commit_docs(&state, w, &[], &[(Kind::Extension, d.id.clone())], &[record]).await?;
    Ok(no_content())
}

// ----- catalog roles -----

async fn list_role_definitions(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let defs: Vec<Value> = CatalogRole::ALL
        .iter()
        .map(|r| json!({"id": r.id(), "displayName": r.display_name(), "description": r.description(), "isBuiltIn": true, "isEnabled": true, "templateId": r.id()}))
        .collect();
    let spec = Spec::plain("unifiedRoleDefinition", &["id", "displayName"]);
    let out = odata.respond(
        &state,
        &spec,
        "roleManagement/entitlementManagement/roleDefinitions",
        defs,
        |d| d.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn list_role_assignments(
    State(state): State<AppState>,
    access: CatalogAccess,
    odata: OData,
) -> ApiResult<Response> {
    let docs: Vec<Doc> = state
        .store
        .docs(Kind::CatalogRole, None)
        .await?
        .into_iter()
        .filter(|d| access.all || access.may(&d.parent, CatalogRight::Read))
        .collect();
    let out = odata.respond(
        &state,
        &ROLE_ASSIGNMENTS,
        "roleManagement/entitlementManagement/roleAssignments",
        docs,
        |d| d.id.as_str(),
        |d| d.body.clone(),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn create_role_assignment(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(
        &body,
        &["principalId", "roleDefinitionId", "appScopeId", "directoryScopeId"],
        "a catalog role assignment",
    )?;
    let principal = text(&body, "principalId")?
        .map(normalize_id)
        .ok_or_else(|| bad("principalId", "is required"))?;
    let role_id =
        text(&body, "roleDefinitionId")?.ok_or_else(|| bad("roleDefinitionId", "is required"))?;
    let role = CatalogRole::from_id(role_id).ok_or_else(|| {
        bad("roleDefinitionId", format!("`{role_id}` is not an entitlement management role"))
    })?;
    let scope = text(&body, "appScopeId")?.unwrap_or("/");
    let catalog = if role.is_catalog_scoped() {
        let id =
            scope.strip_prefix("/AccessPackageCatalog/").map(normalize_id).ok_or_else(|| {
                bad("appScopeId", "must be /AccessPackageCatalog/{catalog id} for a catalog role")
            })?;
        doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
        id
    } else {
        if scope != "/" {
            return Err(bad("appScopeId", "must be / for the Catalog creator role"));
        }
        if !access.all {
            return Err(ApiError::forbidden("only an administrator may make catalog creators"));
        }
        "/".to_owned()
    };
    if role.is_catalog_scoped() {
        access.require(&catalog)?;
    }
    let w = state.begin_write().await?;
    {
        let dir = state.dir();
        if dir.user(&principal).is_none() && dir.group(&principal).is_none() {
            return Err(not_found("User or group", &principal));
        }
    }
    if state.store.docs(Kind::CatalogRole, Some(&catalog)).await?.iter().any(|d| {
        d.body.get("principalId").and_then(Value::as_str) == Some(principal.as_str())
            && d.body.get("roleDefinitionId").and_then(Value::as_str) == Some(role.id())
    }) {
        return Err(ApiError::conflict("the principal holds this role in this scope already"));
    }
    let id = crate::random::guid();
    let doc_body = json!({"id": id, "principalId": principal, "roleDefinitionId": role.id(), "directoryScopeId": "/",
                          "appScopeId": if role.is_catalog_scoped() { format!("/AccessPackageCatalog/{catalog}") } else { "/".into() }});
    let record = audit(
        &caller,
        &format!("Add {}", role.display_name()),
        ("User", &principal, None),
        format!("scope {catalog}"),
    );
    commit_docs(
        &state,
        w,
        &[(
            Kind::CatalogRole,
            Doc { id, parent: catalog, created: state.now(), body: doc_body.clone() },
            None,
        )],
        &[],
        &[record],
    )
    .await?;
    Ok(created(crate::http::graph::entity(
        &state,
        "roleManagement/entitlementManagement/roleAssignments",
        doc_body,
    )))
}

async fn delete_role_assignment(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let d = doc_or_404(&state, Kind::CatalogRole, &id, "Role assignment").await?;
    if d.parent == "/" && !access.all {
        return Err(ApiError::forbidden("only an administrator may remove catalog creators"));
    }
    if d.parent != "/" {
        access.require(&d.parent)?;
    }
    let record = audit(
        &caller,
        "Remove catalog role",
        ("User", d.body.get("principalId").and_then(Value::as_str).unwrap_or_default(), None),
        format!("scope {}", d.parent),
    );
    commit_docs(&state, w, &[], &[(Kind::CatalogRole, d.id.clone())], &[record]).await?;
    Ok(no_content())
}
