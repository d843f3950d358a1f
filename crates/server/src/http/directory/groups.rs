//! `/v1.0/groups`: CRUD and membership. Members may be users, groups (nesting), service
//! principals or devices. Deleting a group a Conditional Access policy names is refused unless
//! forced. Owners are not served.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use gatehouse_core::Change;
use gatehouse_core::directory::Directory;
use gatehouse_core::roles::{Access, Role, area};
use serde_json::{Map, Value};

use super::users::text_count;
use super::{
    Kind, Prop, audit, commit, copy_props, group_json, merge, not_cleared, object_json, one_of,
    reference_body, reference_id, referencing_policies, require, target_of,
};
use crate::http::Api;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::graph::{Body, created, no_content, ok};
use crate::http::odata::{Expand, OData, Spec};
use crate::state::AppState;

const READ: Access = Access::Roles(area::DIRECTORY_READ);
const WRITE: Access = Access::Roles(area::GROUPS_WRITE);

pub const GROUPS: Spec = Spec {
    resource: "Group",
    filterable: &[
        "id",
        "displayName",
        "mailNickname",
        "securityEnabled",
        "mailEnabled",
        "groupTypes",
        "mail",
        "isAssignableToRole",
    ],
    searchable: &["displayName", "description", "mailNickname", "mail"],
    orderable: &["displayName"],
    expandable: &["members", "memberOf"],
};

/// Members of any kind: the properties that users, groups, service principals and devices
/// share or that clients filter members on.
pub const MEMBERS: Spec = Spec {
    resource: "DirectoryObject",
    filterable: &[
        "id",
        "displayName",
        "userPrincipalName",
        "mail",
        "userType",
        "accountEnabled",
        "appId",
        "deviceId",
        "mailNickname",
        "securityEnabled",
    ],
    searchable: &["displayName"],
    orderable: &["displayName"],
    expandable: &[],
};

const PROPS: &[Prop] = &[
    Prop("displayName", Kind::Text),
    Prop("description", Kind::Text),
    Prop("mailNickname", Kind::Text),
    Prop("mailEnabled", Kind::Bool),
    Prop("securityEnabled", Kind::Bool),
    Prop("groupTypes", Kind::Texts),
    Prop("isAssignableToRole", Kind::Bool),
    Prop("visibility", Kind::Text),
    Prop("classification", Kind::Text),
    Prop("preferredLanguage", Kind::Text),
    Prop("mail", Kind::Text),
];
const READ_ONLY: &[&str] =
    &["id", "createdDateTime", "membershipRule", "membershipRuleProcessingState"];
const REQUIRED: &[&str] = &["displayName", "mailEnabled", "mailNickname", "securityEnabled"];
/// Graph's limit on `members@odata.bind` in one request.
const MAX_BIND: usize = 20;

pub fn routes(api: Api) -> Api {
    api.route(Method::GET, "/v1.0/groups", READ, "List groups", list_groups)
        .route(
            Method::POST,
            "/v1.0/groups",
            WRITE,
            "Create a group (members@odata.bind accepted)",
            create_group,
        )
        .route(Method::GET, "/v1.0/groups/$count", READ, "Count groups (text/plain)", count_groups)
        .route(Method::GET, "/v1.0/groups/{id}", READ, "Get a group", get_group)
        .route(
            Method::PATCH,
            "/v1.0/groups/{id}",
            WRITE,
            "Update a group (members@odata.bind adds members)",
            update_group,
        )
        .route(
            Method::DELETE,
            "/v1.0/groups/{id}",
            WRITE,
            "Delete a group (409 while a Conditional Access policy names it, unless ?force=true)",
            delete_group,
        )
        .route(
            Method::GET,
            "/v1.0/groups/{id}/members",
            READ,
            "List a group's direct members",
            members,
        )
        .route(
            Method::GET,
            "/v1.0/groups/{id}/owners",
            READ,
            "List a group's owners (those an access package makes owners)",
            owners,
        )
        .route(
            Method::GET,
            "/v1.0/groups/{id}/members/$count",
            READ,
            "Count a group's direct members (text/plain)",
            count_members,
        )
        .route(
            Method::POST,
            "/v1.0/groups/{id}/members/$ref",
            WRITE,
            "Add a member to a group",
            add_member,
        )
        .route(
            Method::DELETE,
            "/v1.0/groups/{id}/members/{member}/$ref",
            WRITE,
            "Remove a member from a group",
            remove_member,
        )
        .route(
            Method::GET,
            "/v1.0/groups/{id}/transitiveMembers",
            READ,
            "List a group's members, nested ones included",
            transitive_members,
        )
        .route(
            Method::GET,
            "/v1.0/groups/{id}/memberOf",
            READ,
            "List the groups a group is a direct member of",
            member_of,
        )
        .route(
            Method::GET,
            "/v1.0/groups/{id}/transitiveMemberOf",
            READ,
            "List the groups a group is in, directly or through nesting",
            transitive_member_of,
        )
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("group", id)
}

fn expand_group(dir: &Directory, e: &Expand, m: &mut Map<String, Value>) -> ApiResult<()> {
    let id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let items: Vec<Value> = match e.name {
        "members" => {
            let mut ids = dir.members(&id).to_vec();
            ids.sort();
            ids.iter().filter_map(|x| object_json(dir, x)).map(|v| e.shape(v)).collect()
        }
        _ => dir
            .member_of(&id)
            .iter()
            .filter_map(|g| dir.group(g))
            .map(|g| e.shape(group_json(g)))
            .collect(),
    };
    m.insert(e.name.to_owned(), Value::Array(items));
    Ok(())
}

async fn list_groups(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        odata.respond(
            &state,
            &GROUPS,
            "groups",
            dir.groups(),
            |g| g.id.as_str(),
            |g| group_json(g),
            |e, m| expand_group(&dir, e, m),
        )?
    };
    Ok(ok(body))
}

async fn count_groups(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    odata.for_count(&GROUPS)?;
    let n = {
        let dir = state.dir();
        odata.count(&GROUPS, dir.groups().map(group_json))?
    };
    Ok(text_count(n))
}

async fn get_group(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let g = dir.group(&norm(&id)).ok_or_else(|| not_found(&id))?;
        odata.entity(&state, &GROUPS, "groups", group_json(g), |e, m| expand_group(&dir, e, m))?
    };
    Ok(ok(body))
}

fn norm(id: &str) -> String {
    gatehouse_policy::json::normalize_id(id)
}

/// The members a `members@odata.bind` array names, checked to exist and not be `group`.
fn bound_members(
    dir: &Directory,
    body: &Map<String, Value>,
    group: &str,
) -> ApiResult<Vec<String>> {
    let Some((_, links)) = body.iter().find(|(k, _)| k.eq_ignore_ascii_case("members@odata.bind"))
    else {
        return Ok(Vec::new());
    };
    let bad = |why: String| ApiError::directory_bad_request(why).with_target("members@odata.bind");
    let Value::Array(links) = links else {
        return Err(bad("'members@odata.bind' must be an array of directoryObjects URLs.".into()));
    };
    if links.len() > MAX_BIND {
        return Err(bad(format!("At most {MAX_BIND} members can be bound in one request.")));
    }
    let mut out: Vec<String> = Vec::new();
    for link in links {
        let Some(id) = link.as_str().and_then(reference_id) else {
            return Err(bad(format!("Invalid object reference `{link}` in 'members@odata.bind'.")));
        };
        check_member(dir, group, &id)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A member must exist, and a group may not contain itself.
fn check_member(dir: &Directory, group: &str, member: &str) -> ApiResult<()> {
    if dir.kind_of(member).is_none() {
        return Err(ApiError::not_found("directoryObject", member));
    }
    if member == group {
        return Err(ApiError::directory_bad_request("A group cannot be a member of itself."));
    }
    Ok(())
}

/// Whether changing `group` changes who holds a directory role: it can be assigned roles, holds
/// one, or is nested (at any depth) in a group that does.
fn confers_roles(dir: &Directory, group: &str) -> bool {
    let assignable = |id: &str| {
        dir.group(id)
            .and_then(|g| g.raw.get("isAssignableToRole"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut holders = dir.transitive_member_of(group);
    holders.push(group.to_owned());
    holders.iter().any(|g| assignable(g))
        || dir.role_assignments().any(|a| holders.contains(&a.principal_id))
}

/// Who is in a group that confers roles decides who is an administrator: only a Global
/// Administrator may change such a group, its members, or delete it (Entra: Global or
/// Privileged Role Administrators), or a Groups Administrator could make themself one.
fn require_role_group_admin(dir: &Directory, caller: &Caller, group: &str) -> ApiResult<()> {
    if caller.roles.contains(&Role::GlobalAdministrator) || !confers_roles(dir, group) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "Insufficient privileges to complete the operation: this group can be assigned directory \
         roles (or is nested in one that can), so only a Global Administrator may change it or its \
         members.",
    ))
}

fn already_member() -> ApiError {
    ApiError::directory_bad_request(
        "One or more added object references already exist for the following modified properties: 'members'.",
    )
}

/// Group-type rules: only `Unified` is known; dynamic membership is not evaluated here.
fn check_values(group: &mut Map<String, Value>) -> ApiResult<()> {
    if let Some(Value::Array(types)) = group.get_mut("groupTypes") {
        for t in types.iter_mut() {
            let given = t.as_str().unwrap_or_default();
            if given.eq_ignore_ascii_case("Unified") {
                *t = "Unified".into();
            } else if given.eq_ignore_ascii_case("DynamicMembership") {
                return Err(ApiError::directory_bad_request(
                    "Dynamic membership groups are not supported; add members explicitly.",
                )
                .with_target("groupTypes"));
            } else {
                return Err(ApiError::directory_bad_request(format!(
                    "Unknown group type '{given}'."
                ))
                .with_target("groupTypes"));
            }
        }
    }
    if let Some(Value::String(nick)) = group.get("mailNickname")
        && (nick.chars().count() > 64
            || nick.chars().any(|c| c.is_whitespace() || "@()\\[]\";:<>,".contains(c)))
    {
        return Err(ApiError::directory_bad_request(format!(
            "Invalid value specified for property 'mailNickname': `{nick}` must be 1 to 64 characters \
             without spaces or any of @()\\[]\";:<>,"
        ))
        .with_target("mailNickname"));
    }
    one_of("Group", group, "visibility", &["Private", "Public", "HiddenMembership"])
}

async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut group = Map::new();
    // Owners are not modelled: `owners@odata.bind` is accepted and ignored (docs/graph-api.md).
    copy_props(
        "Group",
        &body,
        PROPS,
        &["members@odata.bind", "owners@odata.bind"],
        READ_ONLY,
        None,
        &mut group,
    )?;
    require("group", &group, REQUIRED)?;
    check_values(&mut group)?;
    if group.get("isAssignableToRole") == Some(&Value::Bool(true))
        && !caller.roles.contains(&Role::GlobalAdministrator)
    {
        return Err(ApiError::forbidden(
            "Insufficient privileges to complete the operation: only a Global Administrator may \
             create a group that can be assigned directory roles.",
        ));
    }
    let id = crate::random::guid();
    group.insert("id".into(), id.clone().into());
    group.insert("createdDateTime".into(), gatehouse_core::time::format(state.now()).into());
    let name = group.get("displayName").and_then(Value::as_str).map(str::to_owned);
    let w = state.begin_write().await?;
    let (changes, record) = {
        let dir = state.dir();
        let members = bound_members(&dir, &body, &id)?;
        let mut changes = vec![Change::PutGroup { group }];
        changes.extend(
            members.iter().map(|m| Change::AddMember { group: id.clone(), member: m.clone() }),
        );
        let reason =
            if members.is_empty() { String::new() } else { format!("{} members", members.len()) };
        let target =
            crate::store::AuditTarget { kind: "Group", id: id.clone(), display_name: name };
        (changes, audit(&caller, "GroupManagement", "Add group", reason, vec![target]))
    };
    commit(&state, w, &changes, &[record]).await?;
    let body = {
        let dir = state.dir();
        let g = dir
            .group(&id)
            .ok_or_else(|| ApiError::internal("the created group is not in memory"))?;
        odata.entity(&state, &GROUPS, "groups", group_json(g), |_, _| Ok(()))?
    };
    Ok(created(body))
}

async fn update_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (changes, record) = {
        let dir = state.dir();
        let current = dir.group(&norm(&id)).ok_or_else(|| not_found(&id))?;
        require_role_group_admin(&dir, &caller, &current.id)?;
        let mut patch = Map::new();
        let read_only: Vec<&str> =
            READ_ONLY.iter().copied().chain(["isAssignableToRole"]).collect();
        copy_props(
            "Group",
            &body,
            PROPS,
            &["members@odata.bind"],
            &read_only,
            Some(&current.raw),
            &mut patch,
        )?;
        not_cleared("Group", &patch, REQUIRED)?;
        check_values(&mut patch)?;
        let members = bound_members(&dir, &body, &current.id)?;
        if members.iter().any(|m| current.members.contains(m)) {
            return Err(already_member());
        }
        if patch.is_empty() && members.is_empty() {
            return Ok(no_content());
        }
        let mut changes = Vec::new();
        let mut names: Vec<String> = patch.keys().cloned().collect();
        if !patch.is_empty() {
            let mut group = current.raw.clone();
            merge(&mut group, patch);
            group.insert("id".into(), current.id.clone().into());
            changes.push(Change::PutGroup { group });
        }
        if !members.is_empty() {
            names.push(format!("members (+{})", members.len()));
        }
        changes.extend(
            members.into_iter().map(|m| Change::AddMember { group: current.id.clone(), member: m }),
        );
        let reason = format!("changed: {}", names.join(", "));
        (
            changes,
            audit(
                &caller,
                "GroupManagement",
                "Update group",
                reason,
                vec![target_of(&dir, &current.id)],
            ),
        )
    };
    commit(&state, w, &changes, &[record]).await?;
    Ok(no_content())
}

async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let force = odata.flag("force")?;
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (group_id, record) = {
        let dir = state.dir();
        let g = dir.group(&norm(&id)).ok_or_else(|| not_found(&id))?;
        require_role_group_admin(&dir, &caller, &g.id)?;
        let policies = referencing_policies(&dir, &[&g.id]);
        if !policies.is_empty() && !force {
            return Err(ApiError::conflict(format!(
                "Group '{}' is referenced by Conditional Access policies {}; change those policies \
                 first, or delete with ?force=true.",
                g.display_name,
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
        (
            g.id.clone(),
            audit(&caller, "GroupManagement", "Delete group", reason, vec![target_of(&dir, &g.id)]),
        )
    };
    // A group that is an access package resource: refused unless forced; forced, it leaves
    // its catalogs and packages with it (its grants end as the group goes).
    let mut w = w;
    let mut dropped = Vec::new();
    for r in state.store.docs(crate::store::governance::Kind::Resource, None).await? {
        if crate::governance::objects::origin_id(&r.body) != group_id {
            continue;
        }
        if !force {
            let catalog =
                state.store.doc(crate::store::governance::Kind::Catalog, &r.parent).await?;
            let name = catalog
                .as_ref()
                .and_then(|c| c.body.get("displayName"))
                .and_then(Value::as_str)
                .unwrap_or(&r.parent)
                .to_owned();
            return Err(ApiError::conflict(format!(
                "Group '{group_id}' is a resource of the access package catalog '{name}'; remove it \
                 from the catalog first (a resource request with requestType adminRemove), or \
                 delete with ?force=true."
            )));
        }
        w.delete_doc(crate::store::governance::Kind::Resource, &r.id).await?;
        dropped.push(r.id);
    }
    if !dropped.is_empty() {
        for rs in state.store.docs(crate::store::governance::Kind::RoleScope, None).await? {
            let names = rs
                .body
                .get("role")
                .and_then(|r| r.get("resource"))
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str);
            if names.is_some_and(|id| dropped.iter().any(|d| d == id)) {
                w.delete_doc(crate::store::governance::Kind::RoleScope, &rs.id).await?;
            }
        }
    }
    commit(&state, w, &[Change::DeleteGroup { id: group_id }], &[record]).await?;
    Ok(no_content())
}

/// Owners come from access packages (the Owner role of a group resource); Gatehouse does not
/// keep owners set by hand (`owners@odata.bind` is accepted and ignored).
async fn owners(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let g = dir.group(&norm(&id)).ok_or_else(|| not_found(&id))?;
        let mut ids: Vec<String> = dir
            .granted_roles()
            .filter(|(role, _)| matches!(role, gatehouse_core::governance::model::GrantedRole::GroupOwner { group_id } if *group_id == g.id))
            .map(|(_, p)| p.to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        let users: Vec<_> = ids.iter().filter_map(|u| dir.user(u)).collect();
        let path = format!("groups/{}/owners", g.id);
        odata.respond(
            &state,
            &super::users::USERS,
            &path,
            users,
            |u| u.id.as_str(),
            |u| super::user_json(u),
            |_, _| Ok(()),
        )?
    };
    Ok(ok(body))
}

fn member_list(state: &AppState, id: &str, odata: &OData, transitive: bool) -> ApiResult<Value> {
    let dir = state.dir();
    let g = dir.group(&norm(id)).ok_or_else(|| not_found(id))?;
    let ids = if transitive { dir.transitive_members(&g.id) } else { dir.members(&g.id).to_vec() };
    let segment = if transitive { "transitiveMembers" } else { "members" };
    let path = format!("groups/{}/{segment}", g.id);
    let objects: Vec<(String, Value)> =
        ids.into_iter().filter_map(|m| object_json(&dir, &m).map(|v| (m, v))).collect();
    odata.respond(
        state,
        &MEMBERS,
        &path,
        objects,
        |(id, _)| id.as_str(),
        |(_, v)| v.clone(),
        |_, _| Ok(()),
    )
}

async fn members(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    Ok(ok(member_list(&state, &id, &odata, false)?))
}

async fn transitive_members(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    Ok(ok(member_list(&state, &id, &odata, true)?))
}

async fn count_members(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.for_count(&MEMBERS)?;
    let n = {
        let dir = state.dir();
        let g = dir.group(&norm(&id)).ok_or_else(|| not_found(&id))?;
        odata.count(&MEMBERS, g.members.iter().filter_map(|m| object_json(&dir, m)))?
    };
    Ok(text_count(n))
}

async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let member = reference_body(&body)?;
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let g = dir.group(&norm(&id)).ok_or_else(|| not_found(&id))?;
        require_role_group_admin(&dir, &caller, &g.id)?;
        // A user may be named by user principal name too.
        let member = match dir.kind_of(&member) {
            Some(_) => member,
            None => dir.resolve_user(&member).map(|u| u.id.clone()).unwrap_or(member),
        };
        check_member(&dir, &g.id, &member)?;
        // A member only through an access package may still be made a direct member.
        if dir.is_direct_member(&g.id, &member) {
            return Err(already_member());
        }
        let record = audit(
            &caller,
            "GroupManagement",
            "Add member to group",
            "",
            vec![target_of(&dir, &member), target_of(&dir, &g.id)],
        );
        (Change::AddMember { group: g.id.clone(), member }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, member)): Path<(String, String)>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let member = norm(&member);
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let g = dir.group(&norm(&id)).ok_or_else(|| not_found(&id))?;
        require_role_group_admin(&dir, &caller, &g.id)?;
        if !g.members.contains(&member) {
            return Err(ApiError::not_found("member", &member));
        }
        if !dir.is_direct_member(&g.id, &member) {
            let role = gatehouse_core::governance::model::GrantedRole::GroupMember {
                group_id: g.id.clone(),
            };
            let by = dir.granting_assignments(&role, &member);
            return Err(ApiError::conflict(format!(
                "`{member}` is a member through access package assignment(s) {}; remove the \
                 assignment (adminRemove) instead",
                by.join(", ")
            )));
        }
        let record = audit(
            &caller,
            "GroupManagement",
            "Remove member from group",
            "",
            vec![target_of(&dir, &member), target_of(&dir, &g.id)],
        );
        (Change::RemoveMember { group: g.id.clone(), member }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

fn groups_of(state: &AppState, id: &str, odata: &OData, transitive: bool) -> ApiResult<Value> {
    let dir = state.dir();
    let g = dir.group(&norm(id)).ok_or_else(|| not_found(id))?;
    let ids = if transitive { dir.transitive_member_of(&g.id) } else { dir.member_of(&g.id) };
    let segment = if transitive { "transitiveMemberOf" } else { "memberOf" };
    let path = format!("groups/{}/{segment}", g.id);
    let spec = Spec { expandable: &[], ..GROUPS };
    let groups = ids.iter().filter_map(|x| dir.group(x));
    odata.respond(state, &spec, &path, groups, |g| g.id.as_str(), |g| group_json(g), |_, _| Ok(()))
}

async fn member_of(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    Ok(ok(groups_of(&state, &id, &odata, false)?))
}

async fn transitive_member_of(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    Ok(ok(groups_of(&state, &id, &odata, true)?))
}
