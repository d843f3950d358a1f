//! Access packages, their resource role scopes, and their assignment policies.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use gatehouse_core::governance::engine;
use gatehouse_core::governance::policy::{AssignmentPolicy, ExtensionStage, offered_to};
use gatehouse_core::roles::{Access, CatalogRight, area};

use serde_json::{Map, Value, json};

use super::catalogs::{audit, commit_docs};
use super::{
    EM, allow_keys, bad, display_name, doc_or_404, flag, gov, nested_id, not_found, now_text, text,
};
use crate::governance::{self as service, objects, policy_of};
use crate::http::Api;
use crate::http::auth::{Caller, CatalogAccess};
use crate::http::error::{ApiError, ApiResult};
use crate::http::graph::{Body, created, no_content, ok};
use crate::http::odata::{Expand, OData, Spec};
use crate::state::AppState;
use crate::store::governance::{Doc, Kind};

const READ: Access = Access::Catalog(area::GOVERNANCE_READ, CatalogRight::Read);
const MANAGE: Access = Access::Catalog(area::GOVERNANCE_WRITE, CatalogRight::ManagePackages);

const PACKAGES: Spec = Spec {
    resource: "accessPackage",
    filterable: &["id", "displayName", "isHidden", "catalog/id", "description"],
    searchable: &["displayName", "description"],
    orderable: &["displayName", "createdDateTime"],
    expandable: &["resourceRoleScopes", "assignmentPolicies", "catalog"],
};
const ROLE_SCOPES: Spec = Spec {
    resource: "accessPackageResourceRoleScope",
    filterable: &["id", "role/originId", "role/originSystem", "scope/originId"],
    searchable: &[],
    orderable: &[],
    expandable: &["role", "scope"],
};
pub const POLICIES: Spec = Spec {
    resource: "accessPackageAssignmentPolicy",
    filterable: &["id", "displayName", "allowedTargetScope", "accessPackage/id", "catalog/id"],
    searchable: &[],
    orderable: &["displayName", "createdDateTime"],
    expandable: &["accessPackage", "catalog", "questions"],
};

pub fn routes(api: Api) -> Api {
    api.route(Method::GET, em!("/accessPackages"), READ, "List access packages", list_packages)
        .route(
            Method::POST,
            em!("/accessPackages"),
            MANAGE,
            "Create an access package in a catalog",
            create_package,
        )
        .route(
            Method::GET,
            em!("/accessPackages/filterByCurrentUser(on='allowedRequestor')"),
            Access::SignedIn,
            "The access packages the caller may request",
            requestable,
        )
        .route(Method::GET, em!("/accessPackages/{id}"), READ, "Get an access package", get_package)
        .route(
            Method::PATCH,
            em!("/accessPackages/{id}"),
            MANAGE,
            "Update an access package",
            update_package,
        )
        .route(
            Method::DELETE,
            em!("/accessPackages/{id}"),
            MANAGE,
            "Delete an access package without assignments",
            delete_package,
        )
        .route(
            Method::GET,
            em!("/accessPackages/{id}/resourceRoleScopes"),
            READ,
            "List the resource roles an access package grants",
            list_role_scopes,
        )
        .route(
            Method::POST,
            em!("/accessPackages/{id}/resourceRoleScopes"),
            MANAGE,
            "Add a resource role to an access package (every assignee gets it)",
            add_role_scope,
        )
        .route(
            Method::DELETE,
            em!("/accessPackages/{id}/resourceRoleScopes/{scope}"),
            MANAGE,
            "Remove a resource role from an access package (every assignee loses it)",
            remove_role_scope,
        )
        .route(
            Method::GET,
            em!("/accessPackages/{id}/assignmentPolicies"),
            READ,
            "List an access package's assignment policies",
            package_policies,
        )
        .route(
            Method::POST,
            em!("/accessPackages/{id}/getApplicablePolicyRequirements"),
            Access::SignedIn,
            "What the caller must provide to request an access package",
            requirements,
        )
        .route(
            Method::GET,
            em!("/catalogs/{id}/accessPackages"),
            READ,
            "List a catalog's access packages",
            catalog_packages,
        )
        .route(
            Method::GET,
            em!("/assignmentPolicies"),
            READ,
            "List assignment policies",
            list_policies,
        )
        .route(
            Method::POST,
            em!("/assignmentPolicies"),
            MANAGE,
            "Create an assignment policy",
            create_policy,
        )
        .route(
            Method::GET,
            em!("/assignmentPolicies/{id}"),
            READ,
            "Get an assignment policy",
            get_policy,
        )
        .route(
            Method::PUT,
            em!("/assignmentPolicies/{id}"),
            MANAGE,
            "Replace an assignment policy",
            replace_policy,
        )
        .route(
            Method::DELETE,
            em!("/assignmentPolicies/{id}"),
            MANAGE,
            "Delete an assignment policy without assignments or open requests",
            delete_policy,
        )
        .route(
            Method::GET,
            em!("/assignmentPolicies/{id}/questions"),
            READ,
            "List an assignment policy's questions",
            policy_questions,
        )
}

fn name_of(d: &Doc) -> Option<&str> {
    d.body.get("displayName").and_then(Value::as_str)
}

/// Expands a package's navigation properties.
async fn package_expansions(
    state: &AppState,
    expands: &[Expand],
    pkg: &mut Map<String, Value>,
) -> ApiResult<()> {
    let id = pkg.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    for e in expands {
        let v = match e.name {
            "resourceRoleScopes" => {
                let docs = state.store.docs(Kind::RoleScope, Some(&id)).await?;
                Value::Array(
                    docs.iter().map(|d| e.shape(objects::role_scope_graph(&d.body))).collect(),
                )
            }
            "assignmentPolicies" => {
                let docs = state.store.docs(Kind::Policy, Some(&id)).await?;
                Value::Array(docs.into_iter().map(|d| e.shape(d.body)).collect())
            }
            "catalog" => {
                let cid = pkg
                    .get("catalog")
                    .and_then(|c| c.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                state
                    .store
                    .doc(Kind::Catalog, &cid)
                    .await?
                    .map(|d| e.shape(d.body))
                    .unwrap_or(Value::Null)
            }
            _ => continue,
        };
        pkg.insert(e.name.to_owned(), v);
    }
    Ok(())
}

/// Answers a list of packages with `$expand` done (expansions read the store, so they are
/// filled before the page is built).
async fn answer_packages(
    state: &AppState,
    odata: &OData,
    path: &str,
    docs: Vec<Doc>,
) -> ApiResult<Response> {
    let expands = odata.expands(&PACKAGES)?;
    let mut items = Vec::with_capacity(docs.len());
    for d in docs {
        let mut body = d.body.as_object().cloned().unwrap_or_default();
        package_expansions(state, &expands, &mut body).await?;
        items.push(Value::Object(body));
    }
    let out = odata.respond(
        state,
        &PACKAGES,
        path,
        items,
        |v| v.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn list_packages(
    State(state): State<AppState>,
    access: CatalogAccess,
    odata: OData,
) -> ApiResult<Response> {
    let docs = state
        .store
        .docs(Kind::Package, None)
        .await?
        .into_iter()
        .filter(|d| access.may(&d.parent, CatalogRight::Read))
        .collect();
    answer_packages(&state, &odata, &format!("{EM}/accessPackages"), docs).await
}

async fn catalog_packages(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let c = doc_or_404(&state, Kind::Catalog, &id, "Catalog").await?;
    access.require(&c.id)?;
    let docs = state.store.docs(Kind::Package, Some(&c.id)).await?;
    answer_packages(&state, &odata, &format!("{EM}/catalogs/{}/accessPackages", c.id), docs).await
}

async fn get_package(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let d = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    access.require(&d.parent)?;
    let expands = odata.for_entity(&PACKAGES)?;
    let mut body = d.body.as_object().cloned().unwrap_or_default();
    package_expansions(&state, &expands, &mut body).await?;
    let out = odata.entity(
        &state,
        &Spec { expandable: &[], ..PACKAGES },
        &format!("{EM}/accessPackages"),
        Value::Object(body),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn create_package(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(
        &body,
        &["displayName", "description", "isHidden", "catalog", "catalogId"],
        "an access package",
    )?;
    let name = display_name(&body, true)?.unwrap_or_default();
    let catalog_id = nested_id(&body, "catalog")
        .ok_or_else(|| bad("catalog", "is required: {\"catalog\": {\"id\": \"…\"}}"))?;
    let w = state.begin_write().await?;
    let catalog = doc_or_404(&state, Kind::Catalog, &catalog_id, "Catalog").await?;
    access.require(&catalog.id)?;
    if state
        .store
        .docs(Kind::Package, Some(&catalog.id))
        .await?
        .iter()
        .any(|d| name_of(d).is_some_and(|n| n.eq_ignore_ascii_case(&name)))
    {
        return Err(ApiError::conflict(format!(
            "catalog `{}` has an access package named `{name}` already",
            name_of(&catalog).unwrap_or(&catalog.id)
        )));
    }
    let id = crate::random::guid();
    let now = now_text(&state);
    let pkg = json!({
        "id": id, "displayName": name,
        "description": text(&body, "description")?.unwrap_or_default(),
        "isHidden": flag(&body, "isHidden")?.unwrap_or(false),
        "createdDateTime": now, "modifiedDateTime": now,
        "catalog": {"id": catalog.id},
    });
    let record =
        audit(&caller, "Create access package", ("AccessPackage", &id, Some(&name)), String::new());
    commit_docs(
        &state,
        w,
        &[(
            Kind::Package,
            Doc { id, parent: catalog.id.clone(), created: state.now(), body: pkg.clone() },
            None,
        )],
        &[],
        &[record],
    )
    .await?;
    Ok(created(crate::http::graph::entity(&state, &format!("{EM}/accessPackages"), pkg)))
}

async fn update_package(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(&body, &["displayName", "description", "isHidden"], "an access package")?;
    let w = state.begin_write().await?;
    let mut d = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    access.require(&d.parent)?;
    if let Some(o) = d.body.as_object_mut() {
        if let Some(n) = display_name(&body, false)? {
            o.insert("displayName".into(), n.into());
        }
        if let Some(x) = text(&body, "description")? {
            o.insert("description".into(), x.into());
        }
        if let Some(h) = flag(&body, "isHidden")? {
            o.insert("isHidden".into(), h.into());
        }
        o.insert("modifiedDateTime".into(), now_text(&state).into());
    }
    let record = audit(
        &caller,
        "Update access package",
        ("AccessPackage", &d.id, name_of(&d)),
        String::new(),
    );
    commit_docs(&state, w, &[(Kind::Package, d, None)], &[], &[record]).await?;
    Ok(no_content())
}

async fn delete_package(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let d = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    access.require(&d.parent)?;
    let live = w.count_assignments(Some(&d.id), None).await?;
    if live > 0 {
        return Err(ApiError::conflict(format!(
            "access package `{}` has {live} assignment(s); remove them first",
            name_of(&d).unwrap_or(&d.id)
        ))
        .with_target("assignments"));
    }
    for p in w.docs_of(Kind::Policy, &d.id).await? {
        if w.count_open_requests(&p.id).await? > 0 {
            return Err(ApiError::conflict(format!(
                "policy `{}` has open requests; wait for them or cancel them first",
                name_of(&p).unwrap_or(&p.id)
            )));
        }
    }
    let mut deletes = vec![(Kind::Package, d.id.clone())];
    for kind in [Kind::Policy, Kind::RoleScope] {
        for x in w.docs_of(kind, &d.id).await? {
            deletes.push((kind, x.id));
        }
    }
    let record = audit(
        &caller,
        "Delete access package",
        ("AccessPackage", &d.id, name_of(&d)),
        String::new(),
    );
    commit_docs(&state, w, &[], &deletes, &[record]).await?;
    Ok(no_content())
}

async fn list_role_scopes(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let p = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    access.require(&p.parent)?;
    let docs = state.store.docs(Kind::RoleScope, Some(&p.id)).await?;
    let out = odata.respond(
        &state,
        &ROLE_SCOPES,
        &format!("{EM}/accessPackages/{}/resourceRoleScopes", p.id),
        docs,
        |d| d.id.as_str(),
        |d| objects::role_scope_graph(&d.body),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

/// `POST resourceRoleScopes`: the package grants one more role; every live assignee gets it in
/// the same transaction.
async fn add_role_scope(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    allow_keys(&body, &["role", "scope", "id", "createdDateTime"], "a resource role scope")?;
    let role = body.get("role").and_then(Value::as_object).ok_or_else(|| bad("role", "is required: {\"originId\": \"Member_{group id}\", \"originSystem\": \"AadGroup\", \"resource\": {\"id\": …}}"))?;
    let role_origin =
        text(role, "originId")?.ok_or_else(|| bad("role.originId", "is required"))?.to_owned();
    // The resource by `role.resource.id`, else by the scope's origin (the group or the
    // service principal).
    let resource_ref = nested_id(role, "resource").or_else(|| {
        body.get("scope")
            .and_then(|s| s.get("originId"))
            .and_then(Value::as_str)
            .map(gatehouse_policy::json::normalize_id)
    });
    let mut w = state.begin_write().await?;
    let p = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    access.require(&p.parent)?;
    let resources = w.docs_of(Kind::Resource, &p.parent).await?;
    // The resource by its id, or by the origin the role names.
    let resource = resources.into_iter().find(|r| match &resource_ref {
        Some(rid) => &r.id == rid || objects::origin_id(&r.body) == *rid,
        None => role_origin.to_ascii_lowercase().ends_with(&objects::origin_id(&r.body)),
    });
    let Some(resource) = resource else {
        return Err(bad(
            "role.resource.id",
            "is not a resource of the access package's catalog (add it with a resource request first)",
        ));
    };
    let granted = objects::granted_role(&resource.body, &role_origin).ok_or_else(|| {
        bad(
            "role.originId",
            format!(
                "`{role_origin}` is not a role of resource `{}`",
                name_of(&resource).unwrap_or(&resource.id)
            ),
        )
    })?;
    if let gatehouse_core::governance::model::GrantedRole::AppRole { app_role_id, .. } = &granted {
        let known = objects::resource_roles(&resource.body, &state.dir())
            .iter()
            .any(|r| r.get("originId").and_then(Value::as_str) == Some(app_role_id.as_str()));
        if !known {
            return Err(bad(
                "role.originId",
                format!(
                    "`{role_origin}` is not an app role of `{}` that users can hold",
                    name_of(&resource).unwrap_or(&resource.id)
                ),
            ));
        }
    }
    if let Some(scope) = body.get("scope").and_then(Value::as_object)
        && flag(scope, "isRootScope")? == Some(false)
    {
        return Err(bad(
            "scope.isRootScope",
            "Gatehouse grants roles on the whole resource (isRootScope true)",
        ));
    }
    let roles = objects::resource_roles(&resource.body, &state.dir());
    let role_json = roles
        .into_iter()
        .find(|r| {
            r.get("originId")
                .and_then(Value::as_str)
                .is_some_and(|o| o.eq_ignore_ascii_case(&role_origin))
        })
        .unwrap_or_else(|| json!({"originId": role_origin}));
    let scope_json = objects::resource_scope(&resource.body);
    let rs_id = format!(
        "{}_{}",
        role_json.get("id").and_then(Value::as_str).unwrap_or_default(),
        scope_json.get("id").and_then(Value::as_str).unwrap_or_default()
    );
    if w.docs_of(Kind::RoleScope, &p.id).await?.iter().any(|d| d.id == rs_id) {
        return Err(ApiError::conflict("the access package grants this role already"));
    }
    let doc_body = json!({
        "id": rs_id, "createdDateTime": now_text(&state), "role": role_json, "scope": scope_json,
        "grantedRole": serde_json::to_value(&granted).unwrap_or_default(),
    });
    w.put_doc(
        Kind::RoleScope,
        &Doc {
            id: rs_id.clone(),
            parent: p.id.clone(),
            created: state.now(),
            body: doc_body.clone(),
        },
        None,
    )
    .await?;
    let scope = engine::RoleScope { id: rs_id.clone(), role: granted };
    let (changes, mut audits) = reprovision(&state, &mut w, &p.id, &scope, true).await?;
    audits.push(audit(
        &caller,
        "Add resource role to access package",
        ("AccessPackage", &p.id, name_of(&p)),
        role_origin,
    ));
    service::commit(&state, w, &changes, &audits).await?;
    Ok(created(crate::http::graph::entity(
        &state,
        &format!("{EM}/accessPackages/{}/resourceRoleScopes", p.id),
        objects::role_scope_graph(&doc_body),
    )))
}

async fn remove_role_scope(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path((id, scope_id)): Path<(String, String)>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let p = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    access.require(&p.parent)?;
    let scope_id = scope_id.to_ascii_lowercase();
    let doc = w
        .docs_of(Kind::RoleScope, &p.id)
        .await?
        .into_iter()
        .find(|d| d.id == scope_id)
        .ok_or_else(|| not_found("Resource role scope", &scope_id))?;
    let scope = objects::role_scope(&doc.body)
        .ok_or_else(|| ApiError::internal("a stored resource role scope is unreadable"))?;
    w.delete_doc(Kind::RoleScope, &doc.id).await?;
    let (changes, mut audits) = reprovision(&state, &mut w, &p.id, &scope, false).await?;
    audits.push(audit(
        &caller,
        "Remove resource role from access package",
        ("AccessPackage", &p.id, name_of(&p)),
        scope_id,
    ));
    service::commit(&state, w, &changes, &audits).await?;
    Ok(no_content())
}

/// Gives (or takes away) a role scope to every live assignment of a package.
async fn reprovision(
    state: &AppState,
    w: &mut crate::store::Write,
    package: &str,
    scope: &engine::RoleScope,
    added: bool,
) -> ApiResult<(Vec<gatehouse_core::Change>, Vec<crate::store::AuditRecord>)> {
    let live = w.live_assignments(package, None).await?;
    let mut changes = Vec::new();
    let mut audits = Vec::new();
    let zone = state.governance.zone.clone();
    let mut cache = std::collections::HashMap::new();
    for a in live {
        if !cache.contains_key(&a.policy_id) {
            let l = service::load(w, &a.policy_id, &zone).await?;
            cache.insert(a.policy_id.clone(), l);
        }
        let Some(loaded) = cache.get(&a.policy_id).and_then(Option::as_ref) else { continue };
        let fx = {
            let dir = state.dir();
            let mut ids = crate::random::guid;
            let mut ctx = loaded.ctx(&dir, state.now(), None, &mut ids);
            engine::role_scope_changed(&mut ctx, a, scope, added)
        };
        let (c, au) =
            service::write_effects(state, w, &fx, loaded, &None, None, state.now()).await?;
        changes.extend(c);
        audits.extend(au);
    }
    Ok((changes, audits))
}

// ----- assignment policies -----

async fn package_policies(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let p = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    access.require(&p.parent)?;
    let docs = state.store.docs(Kind::Policy, Some(&p.id)).await?;
    let out = odata.respond(
        &state,
        &POLICIES,
        &format!("{EM}/accessPackages/{}/assignmentPolicies", p.id),
        docs,
        |d| d.id.as_str(),
        |d| d.body.clone(),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn list_policies(
    State(state): State<AppState>,
    access: CatalogAccess,
    odata: OData,
) -> ApiResult<Response> {
    let docs: Vec<Doc> = state.store.docs(Kind::Policy, None).await?;
    let mut visible = Vec::new();
    for d in docs {
        let catalog = d
            .body
            .get("catalog")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if access.may(catalog, CatalogRight::Read) {
            visible.push(d);
        }
    }
    let out = odata.respond(
        &state,
        &POLICIES,
        &format!("{EM}/assignmentPolicies"),
        visible,
        |d| d.id.as_str(),
        |d| d.body.clone(),
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn get_policy(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let (d, catalog) = super::catalog_of_policy(&state, &id).await?;
    access.require(&catalog)?;
    let out =
        odata.entity(&state, &POLICIES, &format!("{EM}/assignmentPolicies"), d.body, |e, m| {
            if e.name == "questions" {
                // Questions are always in the body; `$expand` keeps them.
                let q = m.get("questions").cloned().unwrap_or_default();
                m.insert("questions".into(), q);
            }
            Ok(())
        })?;
    Ok(ok(out))
}

async fn policy_questions(
    State(state): State<AppState>,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let (d, catalog) = super::catalog_of_policy(&state, &id).await?;
    access.require(&catalog)?;
    let qs: Vec<Value> =
        d.body.get("questions").and_then(Value::as_array).cloned().unwrap_or_default();
    let spec = Spec::plain("accessPackageQuestion", &["id", "sequence", "isRequired"]);
    let out = odata.respond(
        &state,
        &spec,
        &format!("{EM}/assignmentPolicies/{}/questions", d.id),
        qs,
        |q| q.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

/// Reads and checks a policy body: its package exists and the caller may manage it, everything
/// it names exists, its custom extensions belong to the catalog and serve their stages.
async fn checked_policy(
    state: &AppState,
    access: &CatalogAccess,
    id: &str,
    body: &Map<String, Value>,
    created: Option<i64>,
) -> ApiResult<(AssignmentPolicy, Doc)> {
    let mut policy =
        AssignmentPolicy::parse(id, body, &state.governance.zone, state.now()).map_err(gov)?;
    if let Some(c) = created {
        policy.created = c;
    }
    let package =
        state.store.doc(Kind::Package, &policy.access_package_id).await?.ok_or_else(|| {
            bad(
                "accessPackage.id",
                format!("access package `{}` does not exist", policy.access_package_id),
            )
        })?;
    access.require(&package.parent)?;
    policy.validate(&state.dir()).map_err(gov)?;
    for (stage, ext) in &policy.extensions {
        let d = state
            .store
            .doc(Kind::Extension, ext)
            .await?
            .filter(|d| d.parent == package.parent)
            .ok_or_else(|| {
                bad(
                    "customExtensionStageSettings",
                    format!("custom extension `{ext}` is not in the access package's catalog"),
                )
            })?;
        let ty = d.body.get("@odata.type").and_then(Value::as_str).unwrap_or_default();
        let fits = if stage.is_request_stage() {
            ty == objects::REQUEST_EXTENSION
        } else {
            ty == objects::ASSIGNMENT_EXTENSION
        };
        if !fits {
            return Err(bad(
                "customExtensionStageSettings",
                format!(
                    "stage `{}` needs {}, but `{ext}` is {ty}",
                    stage.as_str(),
                    if stage.is_request_stage() {
                        objects::REQUEST_EXTENSION
                    } else {
                        objects::ASSIGNMENT_EXTENSION
                    }
                ),
            ));
        }
        let _ = ExtensionStage::as_str(*stage);
    }
    Ok((policy, package))
}

async fn create_policy(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let id = crate::random::guid();
    let w = state.begin_write().await?;
    let (policy, package) = checked_policy(&state, &access, &id, &body, None).await?;
    let graph = policy.to_graph(&state.dir(), &package.parent);
    let record = audit(
        &caller,
        "Create access package assignment policy",
        ("AccessPackageAssignmentPolicy", &id, Some(&policy.display_name)),
        format!("for access package {}", package.id),
    );
    commit_docs(
        &state,
        w,
        &[(
            Kind::Policy,
            Doc { id, parent: package.id.clone(), created: policy.created, body: graph.clone() },
            None,
        )],
        &[],
        &[record],
    )
    .await?;
    if policy.automatic.is_some() {
        state.reconcile.store(true, std::sync::atomic::Ordering::SeqCst);
        state.work.notify_one();
    }
    Ok(created(crate::http::graph::entity(&state, &format!("{EM}/assignmentPolicies"), graph)))
}

/// `PUT`: the whole policy is replaced (omitted settings take their defaults); its package
/// stays.
async fn replace_policy(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (old, _) = super::catalog_of_policy(&state, &id).await?;
    let mut body = body;
    let old_package = old.parent.clone();
    if nested_id(&body, "accessPackage").is_none() {
        body.insert("accessPackage".into(), json!({"id": old_package}));
    }
    let (mut policy, package) =
        checked_policy(&state, &access, &old.id, &body, Some(old.created)).await?;
    if package.id != old_package {
        return Err(bad("accessPackage.id", "a policy cannot move to another access package"));
    }
    // Questions keep their ids when the body leaves them out, so answers stay linked.
    let old_policy = policy_of(&old, &state.governance.zone)?;
    for (i, q) in policy.questions.iter_mut().enumerate() {
        let given =
            body.get("questions").and_then(|qs| qs.get(i)).and_then(|q| q.get("id")).is_some();
        if !given && let Some(o) = old_policy.questions.get(i) {
            q.id = o.id.clone();
        }
    }
    policy.modified = state.now();
    let graph = policy.to_graph(&state.dir(), &package.parent);
    let record = audit(
        &caller,
        "Update access package assignment policy",
        ("AccessPackageAssignmentPolicy", &old.id, Some(&policy.display_name)),
        String::new(),
    );
    commit_docs(
        &state,
        w,
        &[(
            Kind::Policy,
            Doc {
                id: old.id.clone(),
                parent: package.id.clone(),
                created: old.created,
                body: graph.clone(),
            },
            None,
        )],
        &[],
        &[record],
    )
    .await?;
    state.reconcile.store(true, std::sync::atomic::Ordering::SeqCst);
    state.work.notify_one();
    Ok(ok(crate::http::graph::entity(&state, &format!("{EM}/assignmentPolicies"), graph)))
}

async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let (d, catalog) = super::catalog_of_policy(&state, &id).await?;
    access.require(&catalog)?;
    let n = w.count_assignments(None, Some(&d.id)).await?;
    if n > 0 {
        return Err(ApiError::conflict(format!(
            "policy `{}` has {n} assignment(s); remove them first",
            name_of(&d).unwrap_or(&d.id)
        )));
    }
    if w.count_open_requests(&d.id).await? > 0 {
        return Err(ApiError::conflict(format!(
            "policy `{}` has open requests; wait for them or cancel them first",
            name_of(&d).unwrap_or(&d.id)
        )));
    }
    let record = audit(
        &caller,
        "Delete access package assignment policy",
        ("AccessPackageAssignmentPolicy", &d.id, name_of(&d)),
        String::new(),
    );
    commit_docs(&state, w, &[], &[(Kind::Policy, d.id.clone())], &[record]).await?;
    Ok(no_content())
}

/// The policies of a package, read back.
pub async fn policies_of(state: &AppState, package: &str) -> ApiResult<Vec<AssignmentPolicy>> {
    let docs = state.store.docs(Kind::Policy, Some(package)).await?;
    docs.iter().map(|d| policy_of(d, &state.governance.zone).map_err(ApiError::from)).collect()
}

async fn requestable(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
) -> ApiResult<Response> {
    let mut out = Vec::new();
    for pkg in state.store.docs(Kind::Package, None).await? {
        if pkg.body.get("isHidden").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let catalog = state.store.doc(Kind::Catalog, &pkg.parent).await?;
        if catalog.as_ref().and_then(|c| c.body.get("state")).and_then(Value::as_str)
            == Some("unpublished")
        {
            continue;
        }
        let policies = policies_of(&state, &pkg.id).await?;
        let offered = !offered_to(&policies, &state.dir(), &caller.user_id).is_empty();
        if offered {
            out.push(pkg);
        }
    }
    answer_packages(&state, &odata, &format!("{EM}/accessPackages"), out).await
}

async fn requirements(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let pkg = doc_or_404(&state, Kind::Package, &id, "Access package").await?;
    let policies = policies_of(&state, &pkg.id).await?;
    let dir = state.dir();
    let items: Vec<Value> = offered_to(&policies, &dir, &caller.user_id)
        .into_iter()
        .map(|p| {
            json!({
                "policyId": p.id,
                "policyDisplayName": p.display_name,
                "policyDescription": p.description,
                "isApprovalRequiredForAdd": p.approval.required_for_add,
                "isApprovalRequiredForUpdate": p.approval.required_for_update,
                "isRequestorJustificationRequired": p.approval.requestor_justification_required,
                "allowCustomAssignmentSchedule": p.requestor.custom_schedule,
                "questions": p.questions.iter().map(|q| q.to_graph()).collect::<Vec<_>>(),
                "schedule": {"startDateTime": null, "expiration": p.expiration.to_graph(&p.zone)},
            })
        })
        .collect();
    drop(dir);
    Ok(ok(crate::http::graph::collection(
        &state,
        "Collection(microsoft.graph.accessPackageAssignmentRequestRequirements)",
        items,
        None,
        None,
    )))
}
