//! Assignment requests (the only way assignments are made, changed or removed), approvals,
//! and assignments.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_core::Directory;
use gatehouse_core::governance::engine::{self, CallbackOutcome, NewRequest};
use gatehouse_core::governance::model::{
    Assignment, AssignmentState, Request, RequestState, RequestType, ReviewResult, StageStatus,
};
use gatehouse_core::governance::policy::{ExtensionStage, offered_to};
use gatehouse_core::governance::{GovError, derived_id};
use gatehouse_core::roles::{Access, CatalogRight, area};
use gatehouse_core::time;
use gatehouse_policy::json::normalize_id;
use serde_json::{Map, Value, json};

use super::packages::policies_of;
use super::{EM, bad, doc_or_404, gov, not_found, text};
use crate::governance::{self as service, Loaded, subject, webhook};
use crate::http::Api;
use crate::http::auth::{Caller, CatalogAccess, catalog_access};
use crate::http::error::{ApiError, ApiResult};
use crate::http::graph::{Body, created, no_content, ok, strict_value};
use crate::http::odata::{OData, Spec};
use crate::state::AppState;
use crate::store::governance::{Kind, Scope};

const READ: Access = Access::Catalog(area::GOVERNANCE_READ, CatalogRight::Read);
const ASSIGN: Access = Access::Catalog(area::GOVERNANCE_WRITE, CatalogRight::ManageAssignments);

const REQUESTS: Spec = Spec {
    resource: "accessPackageAssignmentRequest",
    filterable: &[
        "id",
        "state",
        "status",
        "requestType",
        "createdDateTime",
        "accessPackage/id",
        "requestor/objectId",
        "assignment/targetId",
        "assignment/id",
    ],
    searchable: &[],
    orderable: &["createdDateTime"],
    expandable: &["accessPackage", "assignment", "requestor"],
};
const ASSIGNMENTS: Spec = Spec {
    resource: "accessPackageAssignment",
    filterable: &[
        "id",
        "state",
        "status",
        "accessPackage/id",
        "assignmentPolicy/id",
        "target/objectId",
        "target/id",
    ],
    searchable: &[],
    orderable: &[],
    expandable: &["target", "accessPackage", "assignmentPolicy"],
};
const APPROVALS: Spec = Spec::plain("approval", &["id"]);
const STAGES: Spec =
    Spec::plain("approvalStage", &["id", "status", "reviewResult", "assignedToMe"]);

pub fn routes(api: Api) -> Api {
    api.route(Method::GET, em!("/assignmentRequests"), READ, "List assignment requests", list_requests)
        .route(Method::POST, em!("/assignmentRequests"), Access::SignedIn, "Request, extend or remove access (users for themselves; administrators and assignment managers for anyone)", create_request)
        .route(Method::GET, em!("/assignmentRequests/filterByCurrentUser(on='target')"), Access::SignedIn, "Requests for the caller's own access", requests_on_target)
        .route(Method::GET, em!("/assignmentRequests/filterByCurrentUser(on='createdBy')"), Access::SignedIn, "Requests the caller made", requests_created_by)
        .route(Method::GET, em!("/assignmentRequests/filterByCurrentUser(on='approver')"), Access::SignedIn, "Requests waiting for the caller's decision", requests_for_approver)
        .route(Method::GET, em!("/assignmentRequests/filterByCurrentUser(on='reviewer')"), Access::SignedIn, "Requests the caller was asked to decide, decided or not (a Gatehouse extension)", requests_for_reviewer)
        .route(Method::GET, em!("/assignmentRequests/{id}"), Access::SignedIn, "Get a request (the requestor, the target, an approver or a catalog reader)", get_request)
        .route(Method::DELETE, em!("/assignmentRequests/{id}"), ASSIGN, "Delete a denied or canceled request", delete_request)
        .route(Method::POST, em!("/assignmentRequests/{id}/cancel"), Access::SignedIn, "Cancel a request that is still pending (its requestor, or an assignment manager)", cancel_request)
        .route(Method::POST, em!("/assignmentRequests/{id}/reprocess"), ASSIGN, "Deliver again a request whose delivery failed", reprocess_request)
        .route(Method::POST, em!("/assignmentRequests/{id}/resume"), Access::SignedOr(area::GOVERNANCE_WRITE), "A custom extension's callback: continue, deny or cancel a waiting request", resume_request)
        .route(Method::GET, em!("/assignments"), READ, "List access package assignments", list_assignments)
        .route(Method::GET, em!("/assignments/filterByCurrentUser(on='target')"), Access::SignedIn, "The caller's own assignments", my_assignments)
        .route(Method::GET, em!("/assignments/{id}"), Access::SignedIn, "Get an assignment (its target or a catalog reader)", get_assignment)
        .route(Method::POST, em!("/assignments/{id}/reprocess"), ASSIGN, "Put an assignment's grants in place again", reprocess_assignment)
        .route(Method::GET, em!("/accessPackageAssignmentApprovals/filterByCurrentUser(on='approver')"), Access::SignedIn, "Approvals waiting for the caller", my_approvals)
        .route(Method::GET, em!("/accessPackageAssignmentApprovals/{id}"), Access::SignedIn, "Get an approval (its id is the request's)", get_approval)
        .route(Method::GET, em!("/accessPackageAssignmentApprovals/{id}/stages"), Access::SignedIn, "List an approval's stages", list_stages)
        .route(Method::GET, em!("/accessPackageAssignmentApprovals/{id}/stages/{stage}"), Access::SignedIn, "Get an approval stage", get_stage)
        .route(Method::PATCH, em!("/accessPackageAssignmentApprovals/{id}/stages/{stage}"), Access::SignedIn, "Approve or deny a stage (its approvers; the first decision wins)", decide_stage)
}

// ----- shapes -----

pub fn request_json(dir: &Directory, r: &Request) -> Value {
    let mut v = r.to_graph(|id| subject(dir, id));
    if let Some(o) = v.as_object_mut() {
        // Gatehouse keeps each request's history; Graph has no property for it.
        o.insert(
            "history".into(),
            r.history
                .iter()
                .map(|h| json!({
                    "dateTime": time::format(h.at), "state": h.state.as_str(), "status": h.status.as_str(),
                    "by": h.by.as_deref().map(|b| subject(dir, b)), "detail": h.detail,
                }))
                .collect::<Vec<_>>()
                .into(),
        );
        if let Some(a) = o.get_mut("assignment").and_then(Value::as_object_mut) {
            a.insert("target".into(), subject(dir, &r.target_id));
        }
    }
    v
}

fn stage_id(request: &str, i: usize) -> String {
    derived_id(&format!("{request}/stage/{i}"))
}

fn stage_json(dir: &Directory, r: &Request, i: usize, caller: &str) -> Value {
    let Some(s) = r.stages.get(i) else { return Value::Null };
    let assigned = s.status == StageStatus::InProgress && s.approvers.contains(caller);
    json!({
        "id": stage_id(&r.id, i),
        "displayName": format!("Stage {}", i + 1),
        "status": s.status.as_str(),
        "assignedToMe": assigned,
        "reviewResult": s.result.as_str(),
        "justification": s.justification,
        "reviewedBy": s.reviewed_by.as_deref().map(|u| json!({"id": u, "displayName": dir.user(u).map(|x| x.display_name.clone())})),
        "reviewedDateTime": s.reviewed_at.map(time::format),
        "startedDateTime": s.started.map(time::format),
        "escalated": s.escalated,
    })
}

fn approval_json(dir: &Directory, r: &Request, caller: &str) -> Value {
    json!({
        "id": r.id,
        "stages": (0..r.stages.len()).map(|i| stage_json(dir, r, i, caller)).collect::<Vec<_>>(),
    })
}

fn assignment_json(dir: &Directory, a: &Assignment, now: i64) -> Value {
    a.to_graph(now, subject(dir, &a.target_id))
}

// ----- who may see what -----

/// The catalog of a request's package (requests outlive nothing: the package exists while
/// any request does, so a missing one reads as no catalog).
async fn catalog_of(state: &AppState, package: &str) -> ApiResult<String> {
    Ok(state.store.doc(Kind::Package, package).await?.map(|d| d.parent).unwrap_or_default())
}

/// Readers of a request: its requestor, its target, its approvers, and whoever may read the
/// package's catalog.
async fn may_read_request(state: &AppState, caller: &Caller, r: &Request) -> ApiResult<bool> {
    if r.requestor_id.as_deref() == Some(caller.user_id.as_str())
        || r.target_id == caller.user_id
        || r.stages.iter().any(|s| s.approvers.contains(&caller.user_id))
    {
        return Ok(true);
    }
    admin_may(state, caller, &r.access_package_id, area::GOVERNANCE_READ, CatalogRight::Read).await
}

async fn admin_may(
    state: &AppState,
    caller: &Caller,
    package: &str,
    roles: &[gatehouse_core::roles::Role],
    right: CatalogRight,
) -> ApiResult<bool> {
    let by_role = caller.roles.iter().any(|r| roles.contains(r));
    let access = catalog_access(state, caller, by_role, right).await?;
    let catalog = catalog_of(state, package).await?;
    Ok(access.may(&catalog, right))
}

// ----- requests -----

async fn answer_requests(
    state: &AppState,
    odata: &OData,
    path: &str,
    reqs: Vec<Request>,
) -> ApiResult<Response> {
    let items: Vec<Value> = {
        let dir = state.dir();
        reqs.iter().map(|r| request_json(&dir, r)).collect()
    };
    let mut packages = std::collections::HashMap::new();
    for e in odata.expands(&REQUESTS)? {
        if e.name == "accessPackage" {
            for r in &reqs {
                if !packages.contains_key(&r.access_package_id) {
                    let d = state.store.doc(Kind::Package, &r.access_package_id).await?;
                    packages.insert(r.access_package_id.clone(), d.map(|d| d.body));
                }
            }
        }
    }
    let out = odata.respond(
        state,
        &REQUESTS,
        path,
        items,
        |v| v.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |e, m| {
            if e.name == "accessPackage" {
                let id = m
                    .get("accessPackage")
                    .and_then(|p| p.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(Some(p)) = packages.get(&id) {
                    m.insert("accessPackage".into(), e.shape(p.clone()));
                }
            }
            Ok(())
        },
    )?;
    Ok(ok(out))
}

async fn list_requests(
    State(state): State<AppState>,
    access: CatalogAccess,
    odata: OData,
) -> ApiResult<Response> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.store.requests(&Scope::default(), after.as_deref(), 5_000).await?;
        let last = page.last().map(|r| r.id.clone());
        all.extend(page);
        match last {
            Some(l) if after.as_deref() != Some(l.as_str()) => after = Some(l),
            _ => break,
        }
        if all.len() % 5_000 != 0 {
            break;
        }
    }
    let mut visible = Vec::new();
    let mut catalogs = std::collections::HashMap::new();
    for r in all {
        if !catalogs.contains_key(&r.access_package_id) {
            catalogs.insert(
                r.access_package_id.clone(),
                catalog_of(&state, &r.access_package_id).await?,
            );
        }
        if catalogs.get(&r.access_package_id).is_some_and(|c| access.may(c, CatalogRight::Read)) {
            visible.push(r);
        }
    }
    answer_requests(&state, &odata, &format!("{EM}/assignmentRequests"), visible).await
}

async fn requests_on_target(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
) -> ApiResult<Response> {
    requests_for(&state, &caller, &odata, "target").await
}

async fn requests_created_by(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
) -> ApiResult<Response> {
    requests_for(&state, &caller, &odata, "createdBy").await
}

async fn requests_for_approver(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
) -> ApiResult<Response> {
    requests_for(&state, &caller, &odata, "approver").await
}

async fn requests_for_reviewer(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
) -> ApiResult<Response> {
    requests_for(&state, &caller, &odata, "reviewer").await
}

async fn requests_for(
    state: &AppState,
    caller: &Caller,
    odata: &OData,
    on: &str,
) -> ApiResult<Response> {
    let reqs = match on {
        "target" => {
            state
                .store
                .requests(
                    &Scope { target: Some(caller.user_id.clone()), ..Scope::default() },
                    None,
                    100_000,
                )
                .await?
        }
        "createdBy" => {
            state
                .store
                .requests(
                    &Scope { requestor: Some(caller.user_id.clone()), ..Scope::default() },
                    None,
                    100_000,
                )
                .await?
        }
        "approver" => state.store.requests_for_approver(&caller.user_id, true).await?,
        // Gatehouse's own option: every request the caller was asked to decide, decided or
        // not (Graph's `approver` lists only those still waiting), for approvers' history.
        "reviewer" => state.store.requests_for_approver(&caller.user_id, false).await?,
        other => {
            return Err(bad(
                "on",
                format!(
                    "`{other}` is not a filterByCurrentUser option here (target, createdBy, approver, reviewer)"
                ),
            ));
        }
    };
    answer_requests(state, odata, &format!("{EM}/assignmentRequests"), reqs).await
}

/// `filterByCurrentUser(on='x')` sent percent-encoded arrives as an id: served the same.
fn filter_by_current_user(id: &str) -> Option<String> {
    let decoded = id
        .replace("%27", "'")
        .replace("%28", "(")
        .replace("%29", ")")
        .replace("%3D", "=")
        .replace("%3d", "=");
    let rest = decoded.strip_prefix("filterByCurrentUser(on=")?.strip_suffix(')')?;
    Some(rest.trim_matches('\'').to_owned())
}

async fn get_request(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    if let Some(on) = filter_by_current_user(&id) {
        return requests_for(&state, &caller, &odata, &on).await;
    }
    let r = state
        .store
        .request(&normalize_id(&id))
        .await?
        .ok_or_else(|| not_found("Assignment request", &id))?;
    if !may_read_request(&state, &caller, &r).await? {
        return Err(not_found("Assignment request", &id));
    }
    let v = request_json(&state.dir(), &r);
    let pkg = state.store.doc(Kind::Package, &r.access_package_id).await?;
    let asg = state.store.assignment(&r.assignment_id).await?;
    let now = state.now();
    let out = odata.entity(&state, &REQUESTS, &format!("{EM}/assignmentRequests"), v, |e, m| {
        match e.name {
            "accessPackage" => {
                if let Some(p) = &pkg {
                    m.insert("accessPackage".into(), e.shape(p.body.clone()));
                }
            }
            "assignment" => {
                if let Some(a) = &asg {
                    m.insert("assignment".into(), e.shape(assignment_json(&state.dir(), a, now)));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(ok(out))
}

/// The request body's names, including the legacy ones the docs still show.
struct Asked<'b> {
    request_type: RequestType,
    assignment: Map<String, Value>,
    justification: Option<&'b str>,
    schedule: Option<&'b Map<String, Value>>,
    answers: Vec<Value>,
}

fn read_request_body(body: &Map<String, Value>) -> ApiResult<Asked<'_>> {
    for (k, _) in body {
        let known = [
            "requestType",
            "assignment",
            "accessPackageAssignment",
            "justification",
            "schedule",
            "answers",
            "isValidationOnly",
            "@odata.type",
            "requestState",
            "requestStatus",
            "accessPackageId",
            "assignmentPolicyId",
            "targetId",
        ];
        if !known.iter().any(|n| n.eq_ignore_ascii_case(k)) {
            return Err(bad(k, "is not a property of an assignment request a client may set"));
        }
    }
    if super::flag(body, "isValidationOnly")? == Some(true) {
        return Err(bad(
            "isValidationOnly",
            "validation-only requests are not served; POST the request itself",
        ));
    }
    let ty = text(body, "requestType")?.ok_or_else(|| {
        bad(
            "requestType",
            "is required (userAdd, userUpdate, userRemove, adminAdd, adminUpdate, adminRemove)",
        )
    })?;
    let request_type = RequestType::parse(ty).filter(|t| !matches!(t, RequestType::SystemAdd | RequestType::SystemUpdate | RequestType::SystemRemove)).ok_or_else(|| {
        bad("requestType", format!("`{ty}` is not a request type a client may make (userAdd, userUpdate, userRemove, adminAdd, adminUpdate, adminRemove); to extend, use userUpdate"))
    })?;
    let mut assignment = body
        .get("assignment")
        .or_else(|| body.get("accessPackageAssignment"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // Top-level ids (older examples) fill in what `assignment` lacks.
    for k in ["accessPackageId", "assignmentPolicyId", "targetId"] {
        if let Some(v) = body.get(k)
            && !assignment.contains_key(k)
        {
            assignment.insert(k.to_owned(), v.clone());
        }
    }
    let answers = match body.get("answers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad("answers", "expected an array")),
    };
    let schedule = match body.get("schedule") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(bad("schedule", "expected an object")),
    };
    Ok(Asked {
        request_type,
        assignment,
        justification: text(body, "justification")?,
        schedule,
        answers,
    })
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    for name in ["idempotency-key", "client-request-id"] {
        if let Some(v) = headers.get(name) {
            let v = v.to_str().map_err(|_| bad(name, "must be printable text"))?.trim();
            if v.is_empty() || v.len() > 200 {
                return Err(bad(name, "must be 1 to 200 characters"));
            }
            return Ok(Some(v.to_owned()));
        }
    }
    Ok(None)
}

async fn create_request(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let asked = read_request_body(&body)?;
    let key = idempotency_key(&headers)?;
    let t = asked.request_type;
    let zone = state.governance.zone.clone();
    let aid = |k: &str| asked.assignment.get(k).and_then(Value::as_str).map(normalize_id);

    let mut w = state.begin_write().await?;
    // A repeated POST (same caller, same key) gets the request the first one made.
    if let Some(k) = &key
        && let Some(first) = w.request_by_key(&caller.user_id, k).await?
    {
        return Ok(created(crate::http::graph::entity(
            &state,
            &format!("{EM}/assignmentRequests"),
            request_json(&state.dir(), &first),
        )));
    }
    // The assignment an update or remove is about; the package and policy it has.
    let existing = if t.is_add() {
        None
    } else {
        let id = aid("id")
            .ok_or_else(|| bad("assignment.id", "is required for update and remove requests"))?;
        Some(w.assignment(&id).await?.ok_or_else(|| not_found("Access package assignment", &id))?)
    };
    let package_id = match &existing {
        Some(a) => a.access_package_id.clone(),
        None => aid("accessPackageId")
            .ok_or_else(|| bad("assignment.accessPackageId", "is required"))?,
    };
    let package = doc_or_404(&state, Kind::Package, &package_id, "Access package").await?;
    let target = match (&existing, aid("targetId")) {
        (Some(a), _) => a.target_id.clone(),
        (None, Some(t)) => {
            let dir = state.dir();
            dir.user(&t)
                .or_else(|| dir.resolve_user(&t))
                .map(|u| u.id.clone())
                .ok_or_else(|| not_found("User", &t))?
        }
        (None, None) if t.by_user() => caller.user_id.clone(),
        (None, None) => return Err(bad("assignment.targetId", "is required for adminAdd")),
    };
    if !t.by_user()
        && !admin_may(
            &state,
            &caller,
            &package.id,
            area::GOVERNANCE_WRITE,
            CatalogRight::ManageAssignments,
        )
        .await?
    {
        return Err(ApiError::forbidden(
            "only administrators and the catalog's assignment managers may assign access directly; request it with userAdd",
        ));
    }
    let policies = policies_of(&state, &package.id).await?;
    let policy = match (&existing, aid("assignmentPolicyId")) {
        (Some(a), _) => policies
            .iter()
            .find(|p| p.id == a.policy_id)
            .cloned()
            .ok_or_else(|| not_found("Assignment policy", &a.policy_id))?,
        (None, Some(pid)) => {
            let p = policies.iter().find(|p| p.id == pid).cloned().ok_or_else(|| {
                bad(
                    "assignment.assignmentPolicyId",
                    format!("`{pid}` is not a policy of access package `{}`", package.id),
                )
            })?;
            if t == RequestType::UserAdd && target == caller.user_id {
                let offered = offered_to(&policies, &state.dir(), &caller.user_id);
                if p.allows_target(&state.dir(), &target) && !offered.iter().any(|o| o.id == p.id) {
                    let names: Vec<&str> =
                        offered.iter().map(|o| o.display_name.as_str()).collect();
                    return Err(gov(GovError::forbidden(format!(
                        "a more specific policy of this access package applies to you: {}",
                        names.join(", ")
                    ))
                    .with_code("GH-EM-033")));
                }
            }
            p
        }
        (None, None) => {
            let offered: Vec<_> = if t.by_user() {
                offered_to(&policies, &state.dir(), &target).into_iter().cloned().collect()
            } else {
                policies.clone()
            };
            match offered.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(gov(GovError::forbidden(
                        "no policy of this access package lets you request it",
                    )
                    .with_code("GH-EM-031")));
                }
                many => {
                    return Err(bad(
                        "assignment.assignmentPolicyId",
                        format!(
                            "is required: several policies apply ({})",
                            many.iter()
                                .map(|p| format!("{} `{}`", p.display_name, p.id))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    };
    let Some(loaded) = service::load(&mut w, &policy.id, &zone).await? else {
        return Err(not_found("Assignment policy", &policy.id));
    };
    let now = state.now();
    // Who may ask, and whether the request is well formed, before what exists is revealed.
    let req = {
        let dir = state.dir();
        engine::prepare(
            NewRequest {
                id: crate::random::guid(),
                new_assignment_id: crate::random::guid(),
                request_type: t,
                caller: &caller.user_id,
                target: &target,
                existing: existing.as_ref(),
                answers: &asked.answers,
                justification: asked.justification,
                schedule: asked.schedule,
            },
            &dir,
            &loaded.policy,
            now,
        )
        .map_err(gov)?
    };
    // One open request per package and target; one live assignment per package and target.
    if let Some(open) = w.open_request_for(&package.id, &target).await? {
        return Err(gov(GovError::conflict(format!(
            "request `{}` ({}, {}) for this access package and user is still open; cancel it or wait for it",
            open.id,
            open.request_type.as_str(),
            open.state.as_str()
        ))
        .with_code("GH-EM-034"))
        .with_target(open.id));
    }
    if t.is_add()
        && let Some(live) = w
            .live_assignments(&package.id, Some(&target))
            .await?
            .into_iter()
            .find(|a| a.state_at(now) != AssignmentState::Expired)
    {
        return Err(gov(GovError::conflict(format!(
            "the user already has this access package (assignment `{}`); to extend it, send userUpdate",
            live.id
        ))
        .with_code("GH-EM-035"))
        .with_target(live.id));
    }
    let fx = {
        let dir = state.dir();
        let mut ids = crate::random::guid;
        let mut ctx = loaded.ctx(&dir, now, Some(caller.user_id.clone()), &mut ids);
        engine::submit(&mut ctx, req, existing.clone())
    };
    let (changes, audits) = service::write_effects(
        &state,
        &mut w,
        &fx,
        &loaded,
        &caller.audit_actor(),
        key.as_deref(),
        now,
    )
    .await?;
    service::commit(&state, w, &changes, &audits).await?;
    let r = fx.request.as_ref().ok_or_else(|| ApiError::internal("the request was not made"))?;
    Ok(created(crate::http::graph::entity(
        &state,
        &format!("{EM}/assignmentRequests"),
        request_json(&state.dir(), r),
    )))
}

/// Loads a request and its policy inside a write.
async fn load_request(
    state: &AppState,
    w: &mut crate::store::Write,
    id: &str,
) -> ApiResult<(Request, Loaded)> {
    let id = normalize_id(id);
    let r = w.request(&id).await?.ok_or_else(|| not_found("Assignment request", &id))?;
    let loaded = service::load(w, &r.policy_id, &state.governance.zone)
        .await?
        .ok_or_else(|| not_found("Assignment policy", &r.policy_id))?;
    Ok((r, loaded))
}

async fn cancel_request(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let (r, loaded) = load_request(&state, &mut w, &id).await?;
    let own =
        r.requestor_id.as_deref() == Some(caller.user_id.as_str()) || r.target_id == caller.user_id;
    if !own
        && !admin_may(
            &state,
            &caller,
            &r.access_package_id,
            area::GOVERNANCE_WRITE,
            CatalogRight::ManageAssignments,
        )
        .await?
    {
        if may_read_request(&state, &caller, &r).await? {
            return Err(ApiError::forbidden(
                "only the requestor or an assignment manager may cancel this request",
            ));
        }
        return Err(not_found("Assignment request", &id));
    }
    let now = state.now();
    let fx = {
        let dir = state.dir();
        let mut ids = crate::random::guid;
        let mut ctx = loaded.ctx(&dir, now, Some(caller.user_id.clone()), &mut ids);
        engine::cancel(&mut ctx, r).map_err(gov)?
    };
    let (changes, audits) =
        service::write_effects(&state, &mut w, &fx, &loaded, &caller.audit_actor(), None, now)
            .await?;
    service::commit(&state, w, &changes, &audits).await?;
    Ok(no_content())
}

async fn reprocess_request(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let (r, loaded) = load_request(&state, &mut w, &id).await?;
    access.require(&loaded.catalog_id)?;
    let existing = w.assignment(&r.assignment_id).await?;
    let now = state.now();
    let fx = {
        let dir = state.dir();
        let mut ids = crate::random::guid;
        let mut ctx = loaded.ctx(&dir, now, Some(caller.user_id.clone()), &mut ids);
        engine::reprocess(&mut ctx, r, existing).map_err(gov)?
    };
    let (changes, audits) =
        service::write_effects(&state, &mut w, &fx, &loaded, &caller.audit_actor(), None, now)
            .await?;
    service::commit(&state, w, &changes, &audits).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn delete_request(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let (r, loaded) = load_request(&state, &mut w, &id).await?;
    access.require(&loaded.catalog_id)?;
    let hangs = w
        .assignment(&r.assignment_id)
        .await?
        .is_some_and(|a| r.request_type.is_add() && a.state != AssignmentState::Expired);
    if !matches!(
        r.state,
        RequestState::Denied | RequestState::Canceled | RequestState::DeliveryFailed
    ) || hangs
    {
        return Err(gov(GovError::conflict(format!(
            "request `{}` is {}; only a denied or canceled request without an assignment can be deleted",
            r.id,
            r.state.as_str()
        ))));
    }
    w.delete_request(&r.id).await?;
    let record = super::catalogs::audit(
        &caller,
        "Delete access package assignment request",
        ("AccessPackageAssignmentRequest", &r.id, None),
        String::new(),
    );
    service::commit(&state, w, &[], &[record]).await?;
    Ok(no_content())
}

/// `POST /assignmentRequests/{id}/resume`: a launch-and-wait extension reports back. Signed with
/// the extension's secret (or sent with an administrator's token).
async fn resume_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let body = match strict_value(&bytes)? {
        Value::Object(m) => m,
        _ => return Err(bad("", "The request body must be a JSON object.")),
    };
    let data = body.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
    let stage_text = text(&data, "stage")?
        .map(str::to_owned)
        .or_else(|| {
            text(&body, "type").ok().flatten().and_then(|t| t.rsplit('.').next()).map(str::to_owned)
        })
        .ok_or_else(|| {
            bad("data.stage", "is required (assignmentRequestCreated or assignmentRequestApproved)")
        })?;
    let stage = ExtensionStage::parse(&stage_text)
        .filter(|s| matches!(s, ExtensionStage::RequestCreated | ExtensionStage::RequestApproved))
        .ok_or_else(|| {
            bad("data.stage", format!("`{stage_text}` is not a stage that waits for a callback"))
        })?;
    let outcome = match text(&data, "state")? {
        None => CallbackOutcome::Continue,
        Some(s) if s.eq_ignore_ascii_case("denied") => CallbackOutcome::Deny,
        Some(s) if s.eq_ignore_ascii_case("canceled") => CallbackOutcome::Cancel,
        Some(s) => {
            return Err(bad(
                "data.state",
                format!("`{s}` is not an outcome a callback may set (denied, canceled)"),
            ));
        }
    };
    let instance = text(&data, "customExtensionStageInstanceId")?.map(str::to_owned);
    let detail = text(&data, "customExtensionStageInstanceDetail")?.map(str::to_owned);
    let mut w = state.begin_write().await?;
    let (r, loaded) = load_request(&state, &mut w, &id).await?;
    if let Some(sig) = headers.get(webhook::SIGNATURE_HEADER) {
        // The extension the request waits on must have signed the body.
        let ext = r
            .callouts
            .iter()
            .rev()
            .find(|c| c.wait && c.stage.eq_ignore_ascii_case(stage.as_str()))
            .map(|c| c.extension_id.clone())
            .ok_or_else(|| {
                gov(GovError::conflict("this request is not waiting for a callback at that stage")
                    .with_code("GH-EM-050"))
            })?;
        let secret = w.extension_secret(&ext).await?.unwrap_or_default();
        let sig = sig.to_str().unwrap_or_default();
        webhook::verify(&secret, sig, &bytes, state.now())
            .map_err(|m| ApiError::unauthenticated(format!("Invalid callback signature: {m}.")))?;
    }
    let now = state.now();
    let fx = {
        let dir = state.dir();
        let mut ids = crate::random::guid;
        let mut ctx = loaded.ctx(&dir, now, None, &mut ids);
        engine::callback(&mut ctx, r, stage, instance.as_deref(), outcome, detail.as_deref())
            .map_err(gov)?
    };
    let (changes, audits) =
        service::write_effects(&state, &mut w, &fx, &loaded, &None, None, now).await?;
    service::commit(&state, w, &changes, &audits).await?;
    Ok(no_content())
}

// ----- assignments -----

async fn answer_assignments(
    state: &AppState,
    odata: &OData,
    path: &str,
    list: Vec<Assignment>,
) -> ApiResult<Response> {
    let now = state.now();
    let items: Vec<Value> = {
        let dir = state.dir();
        list.iter().map(|a| assignment_json(&dir, a, now)).collect()
    };
    let mut docs = std::collections::HashMap::new();
    for e in odata.expands(&ASSIGNMENTS)? {
        let kind = match e.name {
            "accessPackage" => Kind::Package,
            "assignmentPolicy" => Kind::Policy,
            _ => continue,
        };
        for a in &list {
            let id = if kind == Kind::Package { &a.access_package_id } else { &a.policy_id };
            if !docs.contains_key(id) {
                docs.insert(id.clone(), state.store.doc(kind, id).await?.map(|d| d.body));
            }
        }
    }
    let out = odata.respond(
        state,
        &ASSIGNMENTS,
        path,
        items,
        |v| v.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |e, m| {
            if matches!(e.name, "accessPackage" | "assignmentPolicy") {
                let id = m
                    .get(e.name)
                    .and_then(|p| p.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(Some(d)) = docs.get(&id) {
                    m.insert(e.name.to_owned(), e.shape(d.clone()));
                }
            }
            Ok(())
        },
    )?;
    Ok(ok(out))
}

async fn list_assignments(
    State(state): State<AppState>,
    access: CatalogAccess,
    odata: OData,
) -> ApiResult<Response> {
    let list = state.store.assignments(&Scope::default(), None, 1_000_000).await?;
    let mut visible = Vec::new();
    let mut catalogs = std::collections::HashMap::new();
    for a in list {
        if !catalogs.contains_key(&a.access_package_id) {
            catalogs.insert(
                a.access_package_id.clone(),
                catalog_of(&state, &a.access_package_id).await?,
            );
        }
        if catalogs.get(&a.access_package_id).is_some_and(|c| access.may(c, CatalogRight::Read)) {
            visible.push(a);
        }
    }
    answer_assignments(&state, &odata, &format!("{EM}/assignments"), visible).await
}

async fn my_assignments(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
) -> ApiResult<Response> {
    let list = state
        .store
        .assignments(
            &Scope { target: Some(caller.user_id.clone()), ..Scope::default() },
            None,
            100_000,
        )
        .await?;
    answer_assignments(&state, &odata, &format!("{EM}/assignments"), list).await
}

async fn get_assignment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    if filter_by_current_user(&id).as_deref() == Some("target") {
        return my_assignments(State(state), caller, odata).await;
    }
    let a = state
        .store
        .assignment(&normalize_id(&id))
        .await?
        .ok_or_else(|| not_found("Access package assignment", &id))?;
    if a.target_id != caller.user_id
        && !admin_may(
            &state,
            &caller,
            &a.access_package_id,
            area::GOVERNANCE_READ,
            CatalogRight::Read,
        )
        .await?
    {
        return Err(not_found("Access package assignment", &id));
    }
    let v = assignment_json(&state.dir(), &a, state.now());
    let pkg = state.store.doc(Kind::Package, &a.access_package_id).await?;
    let pol = state.store.doc(Kind::Policy, &a.policy_id).await?;
    let out = odata.entity(&state, &ASSIGNMENTS, &format!("{EM}/assignments"), v, |e, m| {
        let d = match e.name {
            "accessPackage" => &pkg,
            "assignmentPolicy" => &pol,
            _ => return Ok(()),
        };
        if let Some(d) = d {
            m.insert(e.name.to_owned(), e.shape(d.body.clone()));
        }
        Ok(())
    })?;
    Ok(ok(out))
}

async fn reprocess_assignment(
    State(state): State<AppState>,
    caller: Caller,
    access: CatalogAccess,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let a = w
        .assignment(&normalize_id(&id))
        .await?
        .ok_or_else(|| not_found("Access package assignment", &id))?;
    let loaded = service::load(&mut w, &a.policy_id, &state.governance.zone)
        .await?
        .ok_or_else(|| not_found("Assignment policy", &a.policy_id))?;
    access.require(&loaded.catalog_id)?;
    if a.state_at(state.now()) == AssignmentState::Expired {
        return Err(gov(GovError::conflict(format!(
            "assignment `{}` has expired; request access again",
            a.id
        ))));
    }
    let now = state.now();
    let mut changes = Vec::new();
    let mut audits = Vec::new();
    let mut current = a;
    for scope in loaded.role_scopes.clone() {
        let fx = {
            let dir = state.dir();
            let mut ids = crate::random::guid;
            let mut ctx = loaded.ctx(&dir, now, Some(caller.user_id.clone()), &mut ids);
            engine::role_scope_changed(&mut ctx, current.clone(), &scope, true)
        };
        // Grants already in place are put again: the store and every node converge on them.
        for g in &current.grants {
            if g.role_scope_id == scope.id {
                changes.push(gatehouse_core::Change::Grant {
                    grant: gatehouse_core::grants::GrantRow {
                        role: g.role.clone(),
                        principal: current.target_id.clone(),
                        assignment: current.id.clone(),
                        from: current.schedule.start,
                        until: current.schedule.end,
                    },
                });
            }
        }
        let (c, au) =
            service::write_effects(&state, &mut w, &fx, &loaded, &caller.audit_actor(), None, now)
                .await?;
        changes.extend(c);
        audits.extend(au);
        if let Some(next) = fx.assignment {
            current = next;
        }
    }
    audits.push(super::catalogs::audit(
        &caller,
        "Reprocess access package assignment",
        ("AccessPackageAssignment", &current.id, None),
        String::new(),
    ));
    service::commit(&state, w, &changes, &audits).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

// ----- approvals -----

async fn approval_for(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Request> {
    let r =
        state.store.request(&normalize_id(id)).await?.ok_or_else(|| not_found("Approval", id))?;
    let approver = r.stages.iter().any(|s| s.approvers.contains(&caller.user_id));
    if approver
        || admin_may(state, caller, &r.access_package_id, area::GOVERNANCE_READ, CatalogRight::Read)
            .await?
    {
        Ok(r)
    } else {
        Err(not_found("Approval", id))
    }
}

async fn my_approvals(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
) -> ApiResult<Response> {
    let reqs = state.store.requests_for_approver(&caller.user_id, true).await?;
    let items: Vec<Value> = {
        let dir = state.dir();
        reqs.iter().map(|r| approval_json(&dir, r, &caller.user_id)).collect()
    };
    let out = odata.respond(
        &state,
        &APPROVALS,
        &format!("{EM}/accessPackageAssignmentApprovals"),
        items,
        |v| v.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

async fn get_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    if filter_by_current_user(&id).as_deref() == Some("approver") {
        return my_approvals(State(state), caller, odata).await;
    }
    let r = approval_for(&state, &caller, &id).await?;
    let v = approval_json(&state.dir(), &r, &caller.user_id);
    Ok(ok(odata.entity(
        &state,
        &APPROVALS,
        &format!("{EM}/accessPackageAssignmentApprovals"),
        v,
        |_, _| Ok(()),
    )?))
}

async fn list_stages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let r = approval_for(&state, &caller, &id).await?;
    let items: Vec<Value> = {
        let dir = state.dir();
        (0..r.stages.len()).map(|i| stage_json(&dir, &r, i, &caller.user_id)).collect()
    };
    let out = odata.respond(
        &state,
        &STAGES,
        &format!("{EM}/accessPackageAssignmentApprovals/{}/stages", r.id),
        items,
        |v| v.get("id").and_then(Value::as_str).unwrap_or_default(),
        Value::clone,
        |_, _| Ok(()),
    )?;
    Ok(ok(out))
}

fn stage_index(r: &Request, stage: &str) -> ApiResult<usize> {
    let s = normalize_id(stage);
    (0..r.stages.len())
        .find(|i| stage_id(&r.id, *i) == s)
        .ok_or_else(|| not_found("Approval stage", stage))
}

async fn get_stage(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, stage)): Path<(String, String)>,
    odata: OData,
) -> ApiResult<Response> {
    let r = approval_for(&state, &caller, &id).await?;
    let i = stage_index(&r, &stage)?;
    let v = stage_json(&state.dir(), &r, i, &caller.user_id);
    Ok(ok(odata.entity(
        &state,
        &STAGES,
        &format!("{EM}/accessPackageAssignmentApprovals/{}/stages", r.id),
        v,
        |_, _| Ok(()),
    )?))
}

/// `PATCH …/stages/{stage}` with `{"reviewResult": "Approve" | "Deny", "justification"}`: the
/// first decision in the stage wins; a later or concurrent one gets 409.
async fn decide_stage(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, stage)): Path<(String, String)>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    super::allow_keys(&body, &["reviewResult", "justification"], "an approval stage")?;
    let verdict = text(&body, "reviewResult")?
        .ok_or_else(|| bad("reviewResult", "is required (Approve or Deny)"))?;
    let approve = match verdict.to_ascii_lowercase().as_str() {
        "approve" | "approved" => true,
        "deny" | "denied" => false,
        _ => {
            return Err(bad(
                "reviewResult",
                format!("`{verdict}` is not a decision (Approve or Deny)"),
            ));
        }
    };
    let justification = text(&body, "justification")?;
    let mut w = state.begin_write().await?;
    let (r, loaded) = load_request(&state, &mut w, &id).await?;
    let may_see = r.stages.iter().any(|s| s.approvers.contains(&caller.user_id))
        || r.requestor_id.as_deref() == Some(caller.user_id.as_str())
        || r.target_id == caller.user_id;
    if !may_see {
        return Err(not_found("Approval", &id));
    }
    let i = stage_index(&r, &stage)?;
    let now = state.now();
    let fx = {
        let dir = state.dir();
        let mut ids = crate::random::guid;
        let mut ctx = loaded.ctx(&dir, now, Some(caller.user_id.clone()), &mut ids);
        engine::decide(&mut ctx, r, i, approve, &caller.user_id, justification).map_err(gov)?
    };
    let (changes, audits) =
        service::write_effects(&state, &mut w, &fx, &loaded, &caller.audit_actor(), None, now)
            .await?;
    service::commit(&state, w, &changes, &audits).await?;
    let _ = ReviewResult::NotReviewed;
    Ok(no_content())
}
