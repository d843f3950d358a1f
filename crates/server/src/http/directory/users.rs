//! `/v1.0/users`: CRUD, passwords (hashed in the same transaction, never echoed or audited),
//! the manager reference, direct reports and group membership.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_core::Change;
use gatehouse_core::directory::Directory;
use gatehouse_core::roles::{Access, Role, area, may_manage_user};
use gatehouse_policy::model::directory::User;
use serde_json::{Map, Value};

use super::{
    Kind, Prop, audit, commit, copy_props, group_json, merge, not_cleared, one_of, reference_body,
    reference_of, require, taken, target_of, user_json,
};
use crate::http::Api;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::graph::{Body, created, no_content, ok};
use crate::http::odata::{Expand, OData, Spec};
use crate::state::AppState;

const READ: Access = Access::Roles(area::DIRECTORY_READ);
const WRITE: Access = Access::Roles(area::USERS_WRITE);

pub const USERS: Spec = Spec {
    resource: "User",
    filterable: &[
        "id",
        "displayName",
        "userPrincipalName",
        "mail",
        "userType",
        "accountEnabled",
        "givenName",
        "surname",
        "department",
        "jobTitle",
        "employeeId",
        "createdDateTime",
    ],
    searchable: &["displayName", "userPrincipalName", "mail", "givenName", "surname"],
    orderable: &["displayName", "userPrincipalName"],
    expandable: &["manager", "memberOf", "directReports"],
};

/// Groups as the target of `memberOf` / `transitiveMemberOf`.
const MEMBER_OF: Spec = Spec { expandable: &[], ..super::groups::GROUPS };

/// Writable user properties (Graph v1.0 `user`); anything else is refused.
const PROPS: &[Prop] = &[
    Prop("accountEnabled", Kind::Bool),
    Prop("displayName", Kind::Text),
    Prop("givenName", Kind::Text),
    Prop("surname", Kind::Text),
    Prop("userPrincipalName", Kind::Text),
    Prop("mailNickname", Kind::Text),
    Prop("mail", Kind::Text),
    Prop("otherMails", Kind::Texts),
    Prop("userType", Kind::Text),
    Prop("jobTitle", Kind::Text),
    Prop("department", Kind::Text),
    Prop("companyName", Kind::Text),
    Prop("employeeId", Kind::Text),
    Prop("employeeType", Kind::Text),
    Prop("employeeHireDate", Kind::DateTime),
    Prop("employeeLeaveDateTime", Kind::DateTime),
    Prop("employeeOrgData", Kind::Object),
    Prop("officeLocation", Kind::Text),
    Prop("city", Kind::Text),
    Prop("state", Kind::Text),
    Prop("country", Kind::Text),
    Prop("streetAddress", Kind::Text),
    Prop("postalCode", Kind::Text),
    Prop("usageLocation", Kind::Text),
    Prop("preferredLanguage", Kind::Text),
    Prop("businessPhones", Kind::Texts),
    Prop("mobilePhone", Kind::Text),
    Prop("faxNumber", Kind::Text),
    Prop("passwordPolicies", Kind::Text),
    Prop("ageGroup", Kind::Text),
    Prop("consentProvidedForMinor", Kind::Text),
    Prop("onPremisesImmutableId", Kind::Text),
    Prop("onPremisesExtensionAttributes", Kind::Object),
    Prop("identities", Kind::Objects),
    Prop("showInAddressList", Kind::Bool),
];
const READ_ONLY: &[&str] = &["id", "createdDateTime", "creationType", "externalUserState"];
const REQUIRED: &[&str] = &["accountEnabled", "displayName", "mailNickname", "userPrincipalName"];

pub fn routes(api: Api) -> Api {
    api.route(Method::GET, "/v1.0/users", READ, "List users", list_users)
        .route(Method::POST, "/v1.0/users", WRITE, "Create a user (with a password)", create_user)
        .route(Method::GET, "/v1.0/users/$count", READ, "Count users (text/plain)", count_users)
        .route(
            Method::GET,
            "/v1.0/users/{id}",
            READ,
            "Get a user by id or user principal name",
            get_user,
        )
        .route(
            Method::PATCH,
            "/v1.0/users/{id}",
            WRITE,
            "Update a user (password reset revokes sessions)",
            update_user,
        )
        .route(Method::DELETE, "/v1.0/users/{id}", WRITE, "Delete a user", delete_user)
        .route(Method::GET, "/v1.0/users/{id}/manager", READ, "Get a user's manager", get_manager)
        .route(
            Method::GET,
            "/v1.0/users/{id}/manager/$ref",
            READ,
            "Get a reference to a user's manager",
            get_manager_ref,
        )
        .route(
            Method::PUT,
            "/v1.0/users/{id}/manager/$ref",
            WRITE,
            "Set a user's manager",
            put_manager,
        )
        .route(
            Method::DELETE,
            "/v1.0/users/{id}/manager/$ref",
            WRITE,
            "Remove a user's manager",
            delete_manager,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/sponsors",
            READ,
            "List a user's sponsors",
            list_sponsors,
        )
        .route(
            Method::POST,
            "/v1.0/users/{id}/sponsors/$ref",
            WRITE,
            "Add a sponsor (a user) to a user",
            add_sponsor,
        )
        .route(
            Method::DELETE,
            "/v1.0/users/{id}/sponsors/{sponsor}/$ref",
            WRITE,
            "Remove a sponsor from a user",
            remove_sponsor,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/directReports",
            READ,
            "List a user's direct reports",
            direct_reports,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/memberOf",
            READ,
            "List the groups a user is a direct member of",
            member_of,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/transitiveMemberOf",
            READ,
            "List the groups a user is in, directly or through nesting",
            transitive_member_of,
        )
}

/// `$expand` on a user: `manager` (object or null), `memberOf` and `directReports` (arrays).
pub fn expand_user(dir: &Directory, e: &Expand, m: &mut Map<String, Value>) -> ApiResult<()> {
    let id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let value = match e.name {
        "manager" => dir.manager_of(&id).map(|u| e.shape(user_json(u))).unwrap_or(Value::Null),
        "memberOf" => Value::Array(
            dir.member_of(&id)
                .iter()
                .filter_map(|g| dir.group(g))
                .map(|g| e.shape(group_json(g)))
                .collect(),
        ),
        _ => Value::Array(dir.direct_reports(&id).map(|u| e.shape(user_json(u))).collect()),
    };
    m.insert(e.name.to_owned(), value);
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("user", id)
}

/// Refuses a caller who may not change or delete `user` (a User Administrator acting on a
/// Global Administrator, say: `may_manage_user`).
fn require_manage(dir: &Directory, caller: &Caller, user: &str) -> ApiResult<()> {
    if may_manage_user(&caller.roles, &dir.roles_of(user)) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "Insufficient privileges to complete the operation: the user holds an administrator role \
         that your roles may not manage.",
    ))
}

async fn list_users(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        odata.respond(
            &state,
            &USERS,
            "users",
            dir.users(),
            |u| u.id.as_str(),
            |u| user_json(u),
            |e, m| expand_user(&dir, e, m),
        )?
    };
    Ok(ok(body))
}

/// `GET /users/$count`: the number of users matching `$filter`, as text (Graph's form).
async fn count_users(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    odata.for_count(&USERS)?;
    let n = {
        let dir = state.dir();
        odata.count(&USERS, dir.users().map(user_json))?
    };
    Ok(text_count(n))
}

pub fn text_count(n: usize) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], n.to_string())
        .into_response()
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        odata.entity(&state, &USERS, "users", user_json(u), |e, m| expand_user(&dir, e, m))?
    };
    Ok(ok(body))
}

/// `passwordProfile.password`, checked; the value goes only to the hasher.
fn password_of(body: &Map<String, Value>) -> ApiResult<Option<String>> {
    let Some(profile) =
        body.iter().find(|(k, _)| k.eq_ignore_ascii_case("passwordProfile")).map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let bad =
        |why: &str| ApiError::directory_bad_request(why.to_owned()).with_target("passwordProfile");
    let Value::Object(p) = profile else {
        return Err(bad("'passwordProfile' must be an object with a 'password'."));
    };
    for (k, v) in p {
        let known = matches!(
            k.as_str(),
            "password" | "forceChangePasswordNextSignIn" | "forceChangePasswordNextSignInWithMfa"
        );
        if !known && !k.starts_with('@') {
            return Err(bad(&format!(
                "Property '{k}' does not exist on type 'microsoft.graph.passwordProfile'."
            )));
        }
        if k.starts_with("force") && !v.is_boolean() && !v.is_null() {
            return Err(bad(&format!("'passwordProfile.{k}' must be true or false.")));
        }
    }
    match p.get("password") {
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if !(crate::password::MIN_LENGTH..=crate::password::MAX_LENGTH).contains(&n) {
                return Err(bad(&format!(
                    "The specified password does not comply with password complexity requirements: \
                     it must be {} to {} characters long.",
                    crate::password::MIN_LENGTH,
                    crate::password::MAX_LENGTH
                )));
            }
            Ok(Some(s.clone()))
        }
        _ => Err(bad("'passwordProfile.password' is required and must be a string.")),
    }
}

/// Hashes off the async workers: argon2 is deliberately slow.
async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || crate::password::hash(&password))
        .await
        .map_err(|e| ApiError::internal(format!("password hashing task failed: {e}")))?
        .map_err(|e| ApiError::directory_bad_request(e.to_string()).with_target("passwordProfile"))
}

/// `name@domain`: one `@`, both sides present, no spaces.
fn check_upn(upn: &str) -> ApiResult<()> {
    let ok = match upn.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain.contains('.')
                && !upn.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::directory_bad_request(format!(
            "Invalid value specified for property 'userPrincipalName' of resource 'User': `{upn}` is not name@domain."
        ))
        .with_target("userPrincipalName"))
    }
}

/// Graph's mail alias rules: 1 to 64 characters, none of them spaces or `@()\[]";:<>,`.
fn check_mail_nickname(nick: &str) -> ApiResult<()> {
    let bad = nick.is_empty()
        || nick.chars().count() > 64
        || nick
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@()\\[]\";:<>,".contains(c));
    if bad {
        return Err(ApiError::directory_bad_request(format!(
            "Invalid value specified for property 'mailNickname': `{nick}` must be 1 to 64 characters \
             without spaces or any of @()\\[]\";:<>,"
        ))
        .with_target("mailNickname"));
    }
    Ok(())
}

/// Checks the properties whose values have rules beyond their type.
fn check_values(patch: &mut Map<String, Value>) -> ApiResult<()> {
    if let Some(Value::String(upn)) = patch.get("userPrincipalName") {
        check_upn(upn)?;
    }
    if let Some(Value::String(nick)) = patch.get("mailNickname") {
        check_mail_nickname(nick)?;
    }
    if let Some(Value::String(name)) = patch.get("displayName")
        && name.chars().count() > 256
    {
        return Err(ApiError::directory_bad_request("'displayName' is limited to 256 characters.")
            .with_target("displayName"));
    }
    one_of("User", patch, "userType", &["Member", "Guest"])
}

async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut user = Map::new();
    copy_props("User", &body, PROPS, &["passwordProfile"], READ_ONLY, None, &mut user)?;
    require("user", &user, REQUIRED)?;
    check_values(&mut user)?;
    let Some(password) = password_of(&body)? else {
        return Err(ApiError::directory_bad_request(
            "Property 'passwordProfile' is required when creating a user.",
        )
        .with_target("passwordProfile"));
    };
    let upn = user.get("userPrincipalName").and_then(Value::as_str).unwrap_or_default().to_owned();
    if state.dir().resolve_user(&upn).is_some() {
        return Err(taken("userPrincipalName"));
    }
    let id = crate::random::guid();
    let now = state.now();
    user.insert("id".into(), id.clone().into());
    user.insert("createdDateTime".into(), gatehouse_core::time::format(now).into());
    user.entry("userType").or_insert_with(|| "Member".into());

    let phc = hash(password).await?;
    let mut w = state.begin_write().await?;
    if state.dir().resolve_user(&upn).is_some() {
        return Err(taken("userPrincipalName"));
    }
    let changes = [Change::PutUser { user, manager: None }];
    let record = audit(
        &caller,
        "UserManagement",
        "Add user",
        "",
        vec![crate::store::AuditTarget { kind: "User", id: id.clone(), display_name: Some(upn) }],
    );
    w.set_password(&id, &phc, now).await?;
    w.commit(now, &changes, &[record]).await?;
    state.sync().await?;
    let body = {
        let dir = state.dir();
        let u =
            dir.user(&id).ok_or_else(|| ApiError::internal("the created user is not in memory"))?;
        odata.entity(&state, &USERS, "users", user_json(u), |_, _| Ok(()))?
    };
    Ok(created(body))
}

/// A copy of a user and their manager, taken under a short read of the directory.
fn snapshot_user(state: &AppState, id: &str) -> ApiResult<User> {
    state.dir().resolve_user(id).cloned().ok_or_else(|| not_found(id))
}

/// Deleting or disabling the user who holds every tenant-wide Global Administrator assignment
/// would leave nobody able to administer the server, as deleting the last assignment would
/// (`roles::delete_assignment`): 409.
fn require_not_last_global_admin(dir: &Directory, user: &str) -> ApiResult<()> {
    let ga = Role::GlobalAdministrator;
    let mut holders = dir
        .role_assignments()
        .filter(|a| a.directory_scope_id == "/" || a.directory_scope_id.is_empty())
        .filter(|a| Role::from_template_id(&a.role_template_id) == Some(ga))
        .map(|a| a.principal_id.as_str())
        .peekable();
    if holders.peek().is_some() && holders.all(|p| p == user) {
        return Err(ApiError::conflict(
            "This user holds the last tenant-wide Global Administrator assignment; deleting or \
             disabling them would lock every administrator out. Assign the role to someone else \
             first.",
        ));
    }
    Ok(())
}

/// The validated changes `body` asks of `current`.
fn user_patch(
    state: &AppState,
    current: &User,
    body: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    let mut patch = Map::new();
    copy_props(
        "User",
        body,
        PROPS,
        &["passwordProfile"],
        READ_ONLY,
        Some(&current.raw),
        &mut patch,
    )?;
    not_cleared("User", &patch, REQUIRED)?;
    check_values(&mut patch)?;
    if let Some(Value::String(upn)) = patch.get("userPrincipalName")
        && state.dir().resolve_user(upn).is_some_and(|other| other.id != current.id)
    {
        return Err(taken("userPrincipalName"));
    }
    Ok(patch)
}

async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    // Checked before argon2 runs, then again against the user as the write finds them.
    let before = snapshot_user(&state, &id)?;
    require_manage(&state.dir(), &caller, &before.id)?;
    let password = password_of(&body)?;
    if user_patch(&state, &before, &body)?.is_empty() && password.is_none() {
        return Ok(no_content());
    }
    // Hash before the write opens: other writes are not held for argon2's time.
    let phc = match password {
        Some(p) => Some(hash(p).await?),
        None => None,
    };
    let mut w = state.begin_write().await?;
    let current = snapshot_user(&state, &id)?;
    require_manage(&state.dir(), &caller, &current.id)?;
    let patch = user_patch(&state, &current, &body)?;
    if patch.get("accountEnabled") == Some(&Value::Bool(false)) {
        require_not_last_global_admin(&state.dir(), &current.id)?;
    }
    let target = crate::store::AuditTarget {
        kind: "User",
        id: current.id.clone(),
        display_name: current.user_principal_name.clone(),
    };
    let mut changes = Vec::new();
    let mut audits = Vec::new();
    if !patch.is_empty() {
        let disabling =
            current.account_enabled && patch.get("accountEnabled") == Some(&Value::Bool(false));
        let names: Vec<String> = patch.keys().cloned().collect();
        let mut user = current.raw.clone();
        merge(&mut user, patch);
        user.insert("id".into(), current.id.clone().into());
        changes.push(Change::PutUser { user, manager: current.manager.clone() });
        if disabling {
            // Stored sessions go too, so enabling the account later does not revive them.
            changes.push(Change::RevokeSessions { user_id: current.id.clone() });
        }
        let reason = format!("changed: {}", names.join(", "));
        let activity = if disabling { "Disable account" } else { "Update user" };
        audits.push(audit(&caller, "UserManagement", activity, reason, vec![target.clone()]));
    }
    let now = state.now();
    if let Some(phc) = phc {
        w.set_password(&current.id, &phc, now).await?;
        changes.push(Change::RevokeSessions { user_id: current.id.clone() });
        audits.push(audit(
            &caller,
            "UserManagement",
            "Reset user password",
            "sessions revoked",
            vec![target],
        ));
    }
    w.commit(now, &changes, &audits).await?;
    state.sync().await?;
    Ok(no_content())
}

async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let mut w = state.begin_write().await?;
    let (user_id, record) = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        require_manage(&dir, &caller, &u.id)?;
        require_not_last_global_admin(&dir, &u.id)?;
        (
            u.id.clone(),
            audit(&caller, "UserManagement", "Delete user", "", vec![target_of(&dir, &u.id)]),
        )
    };
    // Their access packages end and their open requests are canceled in the same transaction.
    let (mut changes, mut audits) =
        crate::governance::end_for_deleted_user(&state, &mut w, &user_id, &caller.audit_actor())
            .await?;
    changes.push(Change::DeleteUser { id: user_id });
    audits.push(record);
    commit(&state, w, &changes, &audits).await?;
    Ok(no_content())
}

fn manager_missing(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource 'manager' does not exist or one of its queried reference-property objects are not present. (user {id})"
        ),
    )
}

async fn get_manager(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        let m = dir.manager_of(&u.id).ok_or_else(|| manager_missing(&id))?;
        odata.entity(&state, &USERS, "directoryObjects", user_json(m), |e, m| {
            expand_user(&dir, e, m)
        })?
    };
    Ok(ok(body))
}

async fn get_manager_ref(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let manager = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        dir.manager_of(&u.id).map(|m| m.id.clone()).ok_or_else(|| manager_missing(&id))?
    };
    Ok(ok(reference_of(&state, &manager)))
}

/// Would making `manager` the manager of `user` close a loop? Walks up from `manager`; the
/// bound stops a loop that an import brought in from running forever.
fn closes_cycle(dir: &Directory, user: &str, manager: &str) -> bool {
    let mut current = Some(manager.to_owned());
    for _ in 0..=dir.user_count() {
        match current {
            Some(c) if c == user => return true,
            Some(c) => current = dir.user(&c).and_then(|u| u.manager.clone()),
            None => return false,
        }
    }
    true
}

async fn list_sponsors(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        let sponsors: Vec<&User> = dir.sponsors_of(&u.id).filter_map(|s| dir.user(s)).collect();
        let path = format!("users/{}/sponsors", u.id);
        odata.respond(
            &state,
            &USERS,
            &path,
            sponsors,
            |s| s.id.as_str(),
            |s| user_json(s),
            |e, m| expand_user(&dir, e, m),
        )?
    };
    Ok(ok(body))
}

/// Sponsors are users who vouch for a user (often a guest); entitlement management can ask them
/// to approve (`targetUserSponsors`).
async fn add_sponsor(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let reference = reference_body(&body)?;
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        let s = dir
            .resolve_user(&reference)
            .ok_or_else(|| ApiError::not_found("sponsor", &reference))?;
        if s.id == u.id {
            return Err(ApiError::directory_bad_request("A user cannot sponsor themselves."));
        }
        let mut sponsors: Vec<String> = dir.sponsors_of(&u.id).cloned().collect();
        if sponsors.contains(&s.id) {
            return Err(ApiError::directory_bad_request(
                "One or more added object references already exist for the following modified properties: 'sponsors'.",
            ));
        }
        sponsors.push(s.id.clone());
        let record = audit(
            &caller,
            "UserManagement",
            "Add sponsor to user",
            "",
            vec![target_of(&dir, &u.id), target_of(&dir, &s.id)],
        );
        (Change::SetSponsors { user: u.id.clone(), sponsors }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

async fn remove_sponsor(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sponsor)): Path<(String, String)>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        let sponsor = gatehouse_policy::json::normalize_id(&sponsor);
        let mut sponsors: Vec<String> = dir.sponsors_of(&u.id).cloned().collect();
        if !sponsors.contains(&sponsor) {
            return Err(ApiError::not_found("sponsor", &sponsor));
        }
        sponsors.retain(|s| s != &sponsor);
        let record = audit(
            &caller,
            "UserManagement",
            "Remove sponsor from user",
            "",
            vec![target_of(&dir, &u.id), target_of(&dir, &sponsor)],
        );
        (Change::SetSponsors { user: u.id.clone(), sponsors }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

async fn put_manager(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
    Body(body): Body,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let reference = reference_body(&body)?;
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        let Some(m) = dir.resolve_user(&reference) else {
            return Err(match dir.kind_of(&reference) {
                Some(_) => ApiError::directory_bad_request(format!(
                    "'{reference}' is not a user; a manager must be a user."
                )),
                None => ApiError::not_found("manager", &reference),
            });
        };
        if m.id == u.id {
            return Err(ApiError::directory_bad_request("A user cannot be their own manager."));
        }
        if u.manager.as_deref() == Some(m.id.as_str()) {
            return Ok(no_content());
        }
        if closes_cycle(&dir, &u.id, &m.id) {
            return Err(ApiError::directory_bad_request(format!(
                "Setting '{}' as the manager of '{}' would create a management cycle.",
                m.user_principal_name.as_deref().unwrap_or(&m.id),
                u.user_principal_name.as_deref().unwrap_or(&u.id)
            )));
        }
        let mut user = u.raw.clone();
        user.insert("id".into(), u.id.clone().into());
        let reason =
            format!("manager set to {}", m.user_principal_name.as_deref().unwrap_or(&m.id));
        let record = audit(
            &caller,
            "UserManagement",
            "Update user",
            reason,
            vec![target_of(&dir, &u.id), target_of(&dir, &m.id)],
        );
        (Change::PutUser { user, manager: Some(m.id.clone()) }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

async fn delete_manager(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    odata.refuse_all()?;
    let w = state.begin_write().await?;
    let (change, record) = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        if dir.manager_of(&u.id).is_none() {
            return Err(manager_missing(&id));
        }
        let mut user = u.raw.clone();
        user.insert("id".into(), u.id.clone().into());
        let record = audit(
            &caller,
            "UserManagement",
            "Update user",
            "manager removed",
            vec![target_of(&dir, &u.id)],
        );
        (Change::PutUser { user, manager: None }, record)
    };
    commit(&state, w, &[change], &[record]).await?;
    Ok(no_content())
}

async fn direct_reports(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    let body = {
        let dir = state.dir();
        let u = dir.resolve_user(&id).ok_or_else(|| not_found(&id))?;
        let path = format!("users/{}/directReports", u.id);
        let spec = Spec { expandable: &[], ..USERS };
        odata.respond(
            &state,
            &spec,
            &path,
            dir.direct_reports(&u.id),
            |u| u.id.as_str(),
            |u| user_json(u),
            |_, _| Ok(()),
        )?
    };
    Ok(ok(body))
}

fn groups_of(state: &AppState, id: &str, odata: &OData, transitive: bool) -> ApiResult<Value> {
    let dir = state.dir();
    let u = dir.resolve_user(id).ok_or_else(|| not_found(id))?;
    let ids = if transitive { dir.transitive_member_of(&u.id) } else { dir.member_of(&u.id) };
    let segment = if transitive { "transitiveMemberOf" } else { "memberOf" };
    let path = format!("users/{}/{segment}", u.id);
    let groups = ids.iter().filter_map(|g| dir.group(g));
    odata.respond(
        state,
        &MEMBER_OF,
        &path,
        groups,
        |g| g.id.as_str(),
        |g| group_json(g),
        |_, _| Ok(()),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_principal_names_and_nicknames() {
        for good in ["a@b.example", "pat_fabrikam.example#EXT#@contoso.onmicrosoft.com"] {
            assert!(check_upn(good).is_ok(), "{good}");
        }
        for bad in
            ["", "a", "@b.example", "a@", "a@b", "a b@c.example", "a@b@c.example", "a@.example"]
        {
            assert!(check_upn(bad).is_err(), "{bad}");
        }
        assert!(check_mail_nickname("adele.v").is_ok());
        for bad in ["", "a b", "a@b", "a;b", &"x".repeat(65)] {
            assert!(check_mail_nickname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_profiles_are_checked_and_never_echoed() {
        let body = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(password_of(&body(json!({}))).unwrap(), None);
        let p = password_of(&body(
            json!({"passwordProfile": {"password": "Long-enough-1", "forceChangePasswordNextSignIn": true}}),
        ));
        assert_eq!(p.unwrap().as_deref(), Some("Long-enough-1"));
        let e = password_of(&body(json!({"passwordProfile": {"password": "Sh0rt!"}}))).unwrap_err();
        assert!(e.message.contains("complexity") && !e.message.contains("Sh0rt!"), "{}", e.message);
        assert!(
            password_of(&body(json!({"passwordProfile": {"forceChangePasswordNextSignIn": true}})))
                .is_err()
        );
        assert!(
            password_of(&body(json!({"passwordProfile": {"password": "Long-enough-1", "pin": 1}})))
                .is_err()
        );
        assert!(password_of(&body(json!({"passwordProfile": "x"}))).is_err());
    }

    #[test]
    fn manager_cycles_are_found_even_through_an_imported_loop() {
        let mut dir = Directory::new();
        let put = |id: &str, manager: Option<&str>| Change::PutUser {
            user: json!({"id": id, "userPrincipalName": format!("{id}@x.example")})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            manager: manager.map(str::to_owned),
        };
        for c in [
            put("a", None),
            put("b", Some("a")),
            put("c", Some("b")),
            put("x", Some("y")),
            put("y", Some("x")),
        ] {
            dir.apply(&c).unwrap();
        }
        assert!(closes_cycle(&dir, "a", "c"));
        assert!(closes_cycle(&dir, "a", "a"));
        assert!(!closes_cycle(&dir, "c", "a"));
        // An existing loop above the new manager is reported, not followed forever.
        assert!(closes_cycle(&dir, "a", "x"));
    }
}
