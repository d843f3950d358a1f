//! Authentication methods over Graph: the tenant's `authenticationMethodsPolicy` (with the
//! Temporary Access Pass configuration), and each user's methods: Temporary Access Passes,
//! Authenticator-app (TOTP) methods and the password.
//!
//! The TAP rules (policy validation, scope, lifetimes, usability) live in
//! `gatehouse_core::auth::tap`; this module reads the directory and the store, applies them, and
//! writes. Decisions are listed in `docs/authentication.md`.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use gatehouse_core::auth::secret;
use gatehouse_core::auth::tap::{self, IssueRequest, TapError, TapPolicy};
use gatehouse_core::roles::{Access, Role, area, may_manage_methods_of};
use gatehouse_core::time::format;
use gatehouse_core::{Change, Directory};
use serde_json::{Map, Value, json};

use super::graph::{Body, collection, entity, no_content, ok};
use super::{Api, ApiError, ApiResult, Caller};
use crate::state::AppState;
use crate::store::{AuditRecord, AuditTarget, TapRow, TotpRow};

/// The singleton's fixed id.
pub const POLICY_ID: &str = "authenticationMethodsPolicy";
/// The id Graph gives every user's password method.
pub const PASSWORD_METHOD_ID: &str = "28c10230-6103-485e-b985-444c60001490";

const POLICY_PATH: &str = "/v1.0/policies/authenticationMethodsPolicy";
const CONFIG_PATH: &str =
    "/v1.0/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{id}";
const CONFIGS_CONTEXT: &str =
    "policies/authenticationMethodsPolicy/authenticationMethodConfigurations";
const SOFTWARE_OATH: &str = "SoftwareOath";
const FIDO2: &str = "Fido2";
const TAP_METHOD_TYPE: &str = "#microsoft.graph.temporaryAccessPassAuthenticationMethod";
const OATH_METHOD_TYPE: &str = "#microsoft.graph.softwareOathAuthenticationMethod";
const PASSWORD_METHOD_TYPE: &str = "#microsoft.graph.passwordAuthenticationMethod";

pub fn routes(api: Api) -> Api {
    let read = Access::Roles(area::AUTH_POLICY_READ);
    let write = Access::Roles(area::AUTH_POLICY_WRITE);
    let methods_read = Access::Roles(area::USER_METHODS_READ);
    let methods_write = Access::Roles(area::USER_METHODS_WRITE);
    api.route(Method::GET, POLICY_PATH, read, "Get the authentication methods policy", get_policy)
        .route(
            Method::PATCH,
            POLICY_PATH,
            write,
            "Update the authentication methods policy",
            patch_policy,
        )
        .route(
            Method::GET,
            "/v1.0/policies/authenticationMethodsPolicy/authenticationMethodConfigurations",
            read,
            "List authentication method configurations",
            list_configs,
        )
        .route(
            Method::GET,
            CONFIG_PATH,
            read,
            "Get an authentication method configuration",
            get_config,
        )
        .route(
            Method::PATCH,
            CONFIG_PATH,
            write,
            "Update the Temporary Access Pass configuration",
            patch_config,
        )
        .route(
            Method::DELETE,
            CONFIG_PATH,
            write,
            "Reset the Temporary Access Pass configuration to its defaults",
            delete_config,
        )
        .route(
            Method::POST,
            "/v1.0/users/{id}/authentication/temporaryAccessPassMethods",
            methods_write,
            "Issue a Temporary Access Pass (the code is shown once)",
            create_tap,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/temporaryAccessPassMethods",
            methods_read,
            "List a user's Temporary Access Pass",
            list_taps,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/temporaryAccessPassMethods/{method_id}",
            methods_read,
            "Get a user's Temporary Access Pass",
            get_tap,
        )
        .route(
            Method::DELETE,
            "/v1.0/users/{id}/authentication/temporaryAccessPassMethods/{method_id}",
            methods_write,
            "Delete a user's Temporary Access Pass",
            delete_tap,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/methods",
            methods_read,
            "List a user's authentication methods",
            list_methods,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/methods/{method_id}",
            methods_read,
            "Get one of a user's authentication methods",
            get_method,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/softwareOathMethods",
            methods_read,
            "List a user's Authenticator-app (TOTP) methods",
            list_oath,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/softwareOathMethods/{method_id}",
            methods_read,
            "Get a user's Authenticator-app (TOTP) method",
            get_oath,
        )
        .route(
            Method::DELETE,
            "/v1.0/users/{id}/authentication/softwareOathMethods/{method_id}",
            methods_write,
            "Delete a user's Authenticator-app (TOTP) method",
            delete_oath,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/fido2Methods",
            methods_read,
            "List a user's passkeys (FIDO2)",
            list_fido2,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/fido2Methods/{method_id}",
            methods_read,
            "Get a user's passkey (FIDO2)",
            get_fido2,
        )
        .route(
            Method::DELETE,
            "/v1.0/users/{id}/authentication/fido2Methods/{method_id}",
            methods_write,
            "Delete a user's passkey (FIDO2)",
            delete_fido2,
        )
        .route(
            Method::GET,
            "/signin/security-info/methods",
            Access::SignedIn,
            "The caller's own sign-in methods (needs a registerSecurityInformation session)",
            my_methods,
        )
        .route(
            Method::DELETE,
            "/signin/security-info/methods/{method_id}",
            Access::SignedIn,
            "Delete one of the caller's own methods: an Authenticator app, a passkey or the pass",
            delete_my_method,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/passwordMethods",
            methods_read,
            "List a user's password method",
            list_passwords,
        )
        .route(
            Method::GET,
            "/v1.0/users/{id}/authentication/passwordMethods/{method_id}",
            methods_read,
            "Get a user's password method",
            get_password,
        )
}

// ---------------------------------------------------------------------------------------------
// The tenant policy

/// The stored policy object (`Change::PutAuthMethodsPolicy` holds the whole Graph object); an
/// empty object when none was ever stored.
fn stored_policy(dir: &Directory) -> Map<String, Value> {
    match dir.auth_methods_policy() {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

fn stored_configs(policy: &Map<String, Value>) -> Vec<Value> {
    match policy.get("authenticationMethodConfigurations") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn config_id(config: &Value) -> &str {
    config.get("id").and_then(Value::as_str).unwrap_or("")
}

fn tap_from(policy: &Map<String, Value>) -> TapPolicy {
    let configs = stored_configs(policy);
    let Some(config) = configs.iter().find(|c| config_id(c).eq_ignore_ascii_case(tap::ID)) else {
        return TapPolicy::default();
    };
    TapPolicy::from_graph(config).unwrap_or_else(|e| {
        // Fail closed: the defaults have TAP disabled.
        tracing::error!(
            code = e.code(),
            "the stored Temporary Access Pass policy is unreadable: {e}"
        );
        TapPolicy::default()
    })
}

/// The tenant's Temporary Access Pass policy (Entra's defaults, TAP disabled, when none is
/// stored). For the sign-in flow as much as for these routes.
pub fn tap_policy(dir: &Directory) -> TapPolicy {
    tap_from(&stored_policy(dir))
}

/// `isUsable` and `methodUsabilityReason` of a stored pass at `now`, under the tenant's policy
/// as it is now (a pass issued before the policy was disabled reads `DisabledByPolicy`).
pub fn tap_usability(dir: &Directory, row: &TapRow, now: i64) -> (bool, &'static str) {
    let policy = tap_policy(dir);
    let in_policy = policy.state_enabled
        && tap::in_scope(&policy, &row.user_id, &dir.transitive_member_of(&row.user_id));
    tap::usability(row.start_at, row.lifetime_minutes, row.usable_once, row.used_at, in_policy, now)
}

fn all_users_target() -> Value {
    json!([{"id": tap::ALL_USERS, "targetType": "group", "isRegistrationRequired": false}])
}

/// Read-only configurations Gatehouse reports as they are: TOTP is the Authenticator-app
/// method it implements; FIDO2 is listed so authentication strengths that name it resolve.
fn builtin_configs() -> [Value; 2] {
    [
        json!({
            "@odata.type": "#microsoft.graph.softwareOathAuthenticationMethodConfiguration",
            "id": SOFTWARE_OATH,
            "state": "enabled",
            "includeTargets": all_users_target(),
            "excludeTargets": []
        }),
        json!({
            "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
            "id": FIDO2,
            "state": "enabled",
            "isSelfServiceRegistrationAllowed": true,
            "isAttestationEnforced": false,
            "keyRestrictions": {"isEnforced": false, "enforcementType": "block", "aaGuids": []},
            "includeTargets": all_users_target(),
            "excludeTargets": []
        }),
    ]
}

/// Every configuration as Graph shows it: the TAP one from its policy, stored ones as stored,
/// then the built-ins not stored.
fn configs_to_graph(policy: &Map<String, Value>) -> Vec<Value> {
    let tap_policy = tap_from(policy);
    let mut out: Vec<Value> = stored_configs(policy)
        .into_iter()
        .map(
            |c| if config_id(&c).eq_ignore_ascii_case(tap::ID) { tap_policy.to_graph() } else { c },
        )
        .collect();
    if !out.iter().any(|c| config_id(c).eq_ignore_ascii_case(tap::ID)) {
        out.insert(0, tap_policy.to_graph());
    }
    for builtin in builtin_configs() {
        if !out.iter().any(|c| config_id(c).eq_ignore_ascii_case(config_id(&builtin))) {
            out.push(builtin);
        }
    }
    out
}

fn default_registration_enforcement() -> Value {
    json!({"authenticationMethodsRegistrationCampaign": {
        "snoozeDurationInDays": 1,
        "enforceRegistrationAfterAllowedSnoozes": true,
        "state": "default",
        "excludeTargets": [],
        "includeTargets": [{"id": tap::ALL_USERS, "targetType": "group",
                            "targetedAuthenticationMethod": "microsoftAuthenticator"}]
    }})
}

fn policy_to_graph(state: &AppState, policy: &Map<String, Value>) -> Value {
    let field = |name: &str, default: Value| policy.get(name).cloned().unwrap_or(default);
    entity(
        state,
        "policies/authenticationMethodsPolicy",
        json!({
            "id": POLICY_ID,
            "displayName": "Authentication Methods Policy",
            "description": field("description", json!(
                "The tenant-wide policy that controls which authentication methods are allowed \
                 in the tenant, authentication method registration requirements, and self-service \
                 password reset settings")),
            "lastModifiedDateTime": field("lastModifiedDateTime", Value::Null),
            "policyVersion": "1.5",
            "policyMigrationState": "migrationComplete",
            "reconfirmationInDays": field("reconfirmationInDays", json!(0)),
            "registrationEnforcement": field("registrationEnforcement", default_registration_enforcement()),
            "authenticationMethodConfigurations@odata.context":
                super::graph::context(state, CONFIGS_CONTEXT),
            "authenticationMethodConfigurations": configs_to_graph(policy),
        }),
    )
}

async fn get_policy(State(state): State<AppState>) -> Response {
    let policy = stored_policy(&state.dir());
    ok(policy_to_graph(&state, &policy))
}

async fn list_configs(State(state): State<AppState>) -> Response {
    let policy = stored_policy(&state.dir());
    ok(collection(&state, CONFIGS_CONTEXT, configs_to_graph(&policy), None, None))
}

fn find_config(policy: &Map<String, Value>, id: &str) -> ApiResult<Value> {
    configs_to_graph(policy).into_iter().find(|c| config_id(c).eq_ignore_ascii_case(id)).ok_or_else(
        || {
            ApiError::item_not_found(format!(
                "Authentication method configuration '{id}' does not exist."
            ))
        },
    )
}

async fn get_config(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let policy = stored_policy(&state.dir());
    let config = find_config(&policy, &id)?;
    Ok(ok(entity(&state, CONFIGS_CONTEXT, config)))
}

/// Only the TAP configuration can be changed; the others exist (404 otherwise) but are fixed.
fn require_tap_config(policy: &Map<String, Value>, id: &str) -> ApiResult<()> {
    let config = find_config(policy, id)?;
    if config_id(&config).eq_ignore_ascii_case(tap::ID) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "The '{}' configuration is read-only in Gatehouse; only 'TemporaryAccessPass' can be changed.",
            config_id(&config)
        )))
    }
}

/// The stored policy with the TAP configuration replaced and the modification time set.
fn with_tap(
    mut policy: Map<String, Value>,
    tap_policy: &TapPolicy,
    now: i64,
) -> Map<String, Value> {
    let mut configs: Vec<Value> = stored_configs(&policy)
        .into_iter()
        .filter(|c| !config_id(c).eq_ignore_ascii_case(tap::ID))
        .collect();
    configs.insert(0, tap_policy.to_graph());
    policy.insert("id".into(), POLICY_ID.into());
    policy.insert("authenticationMethodConfigurations".into(), Value::Array(configs));
    policy.insert("lastModifiedDateTime".into(), format(now).into());
    policy
}

fn tap_error(e: &TapError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

fn policy_audit(caller: &Caller, activity: &str, reason: String) -> AuditRecord {
    AuditRecord {
        id: crate::random::guid(),
        category: "Policy",
        activity: activity.into(),
        result: "success",
        result_reason: reason,
        initiated_by: caller.audit_actor(),
        targets: vec![AuditTarget {
            kind: "Policy",
            id: POLICY_ID.into(),
            display_name: Some("Authentication Methods Policy".into()),
        }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    }
}

/// Changes the stored policy: `edit` gets the policy as committed (read in the write
/// transaction, its row locked, so two admins editing different parts lose neither change) and
/// returns the new policy with its audit record, or `None` for no change. Returns the policy
/// as it now stands.
async fn update_policy(
    state: &AppState,
    edit: impl FnOnce(Map<String, Value>, i64) -> ApiResult<Option<(Map<String, Value>, AuditRecord)>>,
) -> ApiResult<Map<String, Value>> {
    let mut w = state.store.begin().await?;
    let current = match w.auth_methods_policy_for_update().await? {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let now = state.now();
    let Some((next, audit)) = edit(current.clone(), now)? else {
        return Ok(current); // dropping `w` rolls back: nothing was written
    };
    let change = Change::PutAuthMethodsPolicy { policy: Value::Object(next.clone()) };
    w.commit(now, &[change], &[audit]).await?;
    state.sync().await?;
    Ok(next)
}

async fn patch_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    update_policy(&state, |policy, now| {
        require_tap_config(&policy, &id)?;
        let next =
            tap_from(&policy).apply_patch(&Value::Object(body)).map_err(|e| tap_error(&e))?;
        let reason = "TemporaryAccessPass updated".to_owned();
        let audit = policy_audit(&caller, "Authentication Methods Policy Update", reason);
        Ok(Some((with_tap(policy, &next, now), audit)))
    })
    .await?;
    Ok(no_content())
}

async fn delete_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    update_policy(&state, |policy, now| {
        require_tap_config(&policy, &id)?;
        let reason = "TemporaryAccessPass reset to its defaults".to_owned();
        let audit = policy_audit(&caller, "Authentication Methods Policy Reset", reason);
        Ok(Some((with_tap(policy, &TapPolicy::default(), now), audit)))
    })
    .await?;
    Ok(no_content())
}

/// An integer, or a string holding one (Graph's doc examples send `"90"`).
fn lenient_int(name: &str, value: &Value) -> ApiResult<i64> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid value for `{name}`: expected an integer, got {value}."
        ))
    })
}

fn int_in(name: &str, value: &Value, range: std::ops::RangeInclusive<i64>) -> ApiResult<i64> {
    let n = lenient_int(name, value)?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid value for `{name}`: {n} is outside {}..{}.",
            range.start(),
            range.end()
        )))
    }
}

fn is_annotation(key: &str) -> bool {
    key.contains("@odata.")
}

/// Checks and normalises a campaign target list: `[{id, targetType, …}]`.
fn campaign_targets(name: &str, value: &Value, extra: &[&str]) -> ApiResult<Value> {
    let bad = |why: &str| ApiError::bad_request(format!("Invalid `{name}`: {why}."));
    let items = value.as_array().ok_or_else(|| bad("expected an array of targets"))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let object = item.as_object().ok_or_else(|| bad("each target must be an object"))?;
        let mut target = Map::new();
        for (key, v) in object.iter().filter(|(k, _)| !is_annotation(k)) {
            match key.to_ascii_lowercase().as_str() {
                "id" => {
                    let id = v.as_str().map(str::trim).filter(|s| !s.is_empty());
                    target.insert(
                        "id".into(),
                        id.ok_or_else(|| bad("`id` must be a non-empty string"))?.into(),
                    );
                }
                "targettype" => {
                    let t = v.as_str().map(str::to_ascii_lowercase);
                    let t = t.filter(|t| t == "user" || t == "group");
                    target.insert(
                        "targetType".into(),
                        t.ok_or_else(|| bad("`targetType` must be `user` or `group`"))?.into(),
                    );
                }
                other => match extra.iter().find(|e| e.eq_ignore_ascii_case(other)) {
                    Some(e) if v.is_string() || v.is_null() => {
                        target.insert((*e).into(), v.clone());
                    }
                    _ => return Err(bad(&format!("unknown or invalid target property `{key}`"))),
                },
            }
        }
        if !target.contains_key("id") || !target.contains_key("targetType") {
            return Err(bad("each target needs `id` and `targetType`"));
        }
        out.push(Value::Object(target));
    }
    Ok(Value::Array(out))
}

/// Checks `registrationEnforcement` and returns it normalised (a complex property: PATCH
/// replaces it whole, as Graph does).
fn registration_enforcement(value: &Value) -> ApiResult<Value> {
    let bad =
        |why: String| ApiError::bad_request(format!("Invalid `registrationEnforcement`: {why}."));
    let object = value.as_object().ok_or_else(|| bad("expected an object".into()))?;
    let mut out = Map::new();
    for (key, v) in object.iter().filter(|(k, _)| !is_annotation(k)) {
        if !key.eq_ignore_ascii_case("authenticationMethodsRegistrationCampaign") {
            return Err(bad(format!("unknown property `{key}`")));
        }
        let campaign = v.as_object().ok_or_else(|| bad("the campaign must be an object".into()))?;
        let mut c = Map::new();
        for (ck, cv) in campaign.iter().filter(|(k, _)| !is_annotation(k)) {
            match ck.to_ascii_lowercase().as_str() {
                "state" => {
                    let s = cv.as_str().map(str::to_ascii_lowercase);
                    let s = s.filter(|s| matches!(s.as_str(), "default" | "enabled" | "disabled"));
                    let s = s.ok_or_else(|| {
                        bad("`state` must be `default`, `enabled` or `disabled`".into())
                    })?;
                    c.insert("state".into(), s.into());
                }
                "snoozedurationindays" => {
                    c.insert(
                        "snoozeDurationInDays".into(),
                        int_in("snoozeDurationInDays", cv, 0..=14)?.into(),
                    );
                }
                "enforceregistrationafterallowedsnoozes" => {
                    let b = cv.as_bool().ok_or_else(|| {
                        bad("`enforceRegistrationAfterAllowedSnoozes` must be true or false".into())
                    })?;
                    c.insert("enforceRegistrationAfterAllowedSnoozes".into(), b.into());
                }
                "includetargets" => {
                    let targets =
                        campaign_targets("includeTargets", cv, &["targetedAuthenticationMethod"])?;
                    c.insert("includeTargets".into(), targets);
                }
                "excludetargets" => {
                    c.insert("excludeTargets".into(), campaign_targets("excludeTargets", cv, &[])?);
                }
                _ => return Err(bad(format!("unknown campaign property `{ck}`"))),
            }
        }
        out.insert("authenticationMethodsRegistrationCampaign".into(), Value::Object(c));
    }
    Ok(Value::Object(out))
}

async fn patch_policy(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> ApiResult<Response> {
    let policy = update_policy(&state, |mut policy, now| {
        let mut changed = Vec::new();
        for (key, value) in body.iter().filter(|(k, _)| !is_annotation(k)) {
            match key.to_ascii_lowercase().as_str() {
                // Echoing the id back (GET, edit, PATCH) is harmless.
                "id" if value.as_str().is_some_and(|v| v.eq_ignore_ascii_case(POLICY_ID)) => {}
                "description" => {
                    if !(value.is_string() || value.is_null()) {
                        return Err(ApiError::bad_request(
                            "Invalid value for `description`: expected a string.",
                        ));
                    }
                    policy.insert("description".into(), value.clone());
                    changed.push("description");
                }
                "reconfirmationindays" => {
                    let days = int_in("reconfirmationInDays", value, 0..=365)?;
                    policy.insert("reconfirmationInDays".into(), days.into());
                    changed.push("reconfirmationInDays");
                }
                "registrationenforcement" => {
                    policy
                        .insert("registrationEnforcement".into(), registration_enforcement(value)?);
                    changed.push("registrationEnforcement");
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Property `{key}` cannot be updated here: only `registrationEnforcement`, \
                         `reconfirmationInDays` and `description` can (method configurations are \
                         updated at authenticationMethodConfigurations/{{id}})."
                    )));
                }
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        policy.insert("id".into(), POLICY_ID.into());
        policy.insert("lastModifiedDateTime".into(), format(now).into());
        let audit =
            policy_audit(&caller, "Authentication Methods Policy Update", changed.join(", "));
        Ok(Some((policy, audit)))
    })
    .await?;
    Ok(ok(policy_to_graph(&state, &policy)))
}

// ---------------------------------------------------------------------------------------------
// A user's methods

/// What the routes need to know about the user a path names, copied out of the directory.
struct Target {
    id: String,
    upn: String,
    roles: Vec<Role>,
    external_guest: bool,
    groups: Vec<String>,
}

fn resolve(state: &AppState, id_or_upn: &str) -> ApiResult<(Target, TapPolicy)> {
    let dir = state.dir();
    let user = dir.resolve_user(id_or_upn).ok_or_else(|| ApiError::not_found("user", id_or_upn))?;
    let target = Target {
        id: user.id.clone(),
        upn: user.user_principal_name.clone().unwrap_or_default(),
        roles: dir.roles_of(&user.id),
        external_guest: user.is_guest && user.is_external,
        groups: dir.transitive_member_of(&user.id),
    };
    Ok((target, tap_policy(&dir)))
}

fn methods_path(user_id: &str, kind: &str) -> String {
    format!("users('{user_id}')/authentication/{kind}")
}

/// Whether the caller may add or delete methods of `target` (Entra: Authentication
/// Administrators only for users who hold no admin role).
fn require_manage(caller: &Caller, target: &Target) -> ApiResult<()> {
    if may_manage_methods_of(&caller.roles, &target.roles) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Insufficient privileges to complete the operation: the target user holds an \
             administrator role that your roles may not manage.",
        ))
    }
}

fn user_audit(caller: &Caller, target: &Target, activity: &str, reason: String) -> AuditRecord {
    AuditRecord {
        id: crate::random::guid(),
        category: "UserManagement",
        activity: activity.into(),
        result: "success",
        result_reason: reason,
        initiated_by: caller.audit_actor(),
        targets: vec![AuditTarget {
            kind: "User",
            id: target.id.clone(),
            display_name: Some(target.upn.clone()),
        }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    }
}

fn tap_to_graph(
    row: &TapRow,
    policy: &TapPolicy,
    target: &Target,
    now: i64,
    code: Option<&str>,
) -> Value {
    let in_policy = policy.state_enabled && tap::in_scope(policy, &target.id, &target.groups);
    let (usable, reason) = tap::usability(
        row.start_at,
        row.lifetime_minutes,
        row.usable_once,
        row.used_at,
        in_policy,
        now,
    );
    json!({
        "@odata.type": TAP_METHOD_TYPE,
        "id": row.id,
        "temporaryAccessPass": code,
        "createdDateTime": format(row.created_at),
        "startDateTime": format(row.start_at),
        "lifetimeInMinutes": row.lifetime_minutes,
        "isUsableOnce": row.usable_once,
        "isUsable": usable,
        "methodUsabilityReason": reason,
    })
}

fn oath_to_graph(row: &TotpRow) -> Value {
    // The secret is write-once: Graph always returns `secretKey: null`.
    json!({
        "@odata.type": OATH_METHOD_TYPE,
        "id": row.id,
        "secretKey": null,
        "createdDateTime": format(row.created_at),
    })
}

fn password_to_graph(set_at: i64) -> Value {
    json!({
        "@odata.type": PASSWORD_METHOD_TYPE,
        "id": PASSWORD_METHOD_ID,
        "password": null,
        "createdDateTime": format(set_at),
    })
}

async fn create_tap(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    // The target's roles and the policy as of every committed change (a role granted a moment
    // ago counts), and no other write in between.
    let mut w = state.begin_write().await?;
    let (target, policy) = resolve(&state, &id)?;
    if target.id == caller.user_id {
        return Err(ApiError::forbidden(
            "Administrators cannot issue a Temporary Access Pass to themselves; ask another administrator.",
        ));
    }
    require_manage(&caller, &target)?;
    if target.external_guest {
        return Err(ApiError::bad_request(
            "Temporary Access Pass cannot be added to an external guest user.",
        ));
    }
    let now = state.now();
    let request = IssueRequest::from_json(&Value::Object(body), now).map_err(|e| tap_error(&e))?;
    let issue = tap::plan_issue(&policy, &target.id, &target.groups, &request, now)
        .map_err(|e| tap_error(&e))?;
    let code = tap::generate(issue.length, &mut crate::random::below);
    let row = TapRow {
        id: crate::random::guid(),
        user_id: target.id.clone(),
        secret_hash: secret::hash(&code),
        created_at: now,
        start_at: issue.start,
        lifetime_minutes: issue.lifetime_minutes,
        usable_once: issue.usable_once,
        used_at: None,
    };
    let audit = user_audit(
        &caller,
        &target,
        "Admin registered temporary access pass method for user",
        format!(
            "lifetime {} minutes from {}, {}",
            issue.lifetime_minutes,
            format(issue.start),
            if issue.usable_once { "one-time" } else { "multi-use" }
        ),
    );
    // A new pass replaces the old one at once, and the old one's sessions end with it.
    let replaced = w.put_tap(&row).await?;
    let changes: Vec<Change> = replaced
        .into_iter()
        .map(|tap_id| Change::EndTapSessions { user_id: target.id.clone(), tap_id })
        .collect();
    w.commit(now, &changes, &[audit]).await?;
    state.sync().await?;
    let value = tap_to_graph(&row, &policy, &target, now, Some(&code));
    let path = methods_path(&target.id, "temporaryAccessPassMethods");
    Ok(super::graph::created(entity(&state, &path, value)))
}

async fn list_taps(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (target, policy) = resolve(&state, &id)?;
    let row = state.store.tap_of(&target.id).await?;
    let now = state.now();
    let items = row.iter().map(|r| tap_to_graph(r, &policy, &target, now, None)).collect();
    let path = methods_path(&target.id, "temporaryAccessPassMethods");
    Ok(ok(collection(&state, &path, items, None, None)))
}

/// The user's pass if its id is `method_id` (ids compare case-insensitively).
async fn find_tap(state: &AppState, target: &Target, method_id: &str) -> ApiResult<TapRow> {
    state
        .store
        .tap_of(&target.id)
        .await?
        .filter(|r| r.id.eq_ignore_ascii_case(method_id))
        .ok_or_else(|| method_not_found(method_id))
}

fn method_not_found(method_id: &str) -> ApiError {
    ApiError::item_not_found(format!(
        "Authentication method '{method_id}' does not exist for this user."
    ))
}

async fn get_tap(
    State(state): State<AppState>,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, policy) = resolve(&state, &id)?;
    let row = find_tap(&state, &target, &method_id).await?;
    let value = tap_to_graph(&row, &policy, &target, state.now(), None);
    Ok(ok(entity(&state, &methods_path(&target.id, "temporaryAccessPassMethods"), value)))
}

async fn delete_tap(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let mut w = state.begin_write().await?;
    let (target, _) = resolve(&state, &id)?;
    if target.id == caller.user_id {
        return Err(ApiError::forbidden(
            "Administrators cannot delete their own Temporary Access Pass; ask another administrator.",
        ));
    }
    require_manage(&caller, &target)?;
    let row = find_tap(&state, &target, &method_id).await?;
    let audit = user_audit(
        &caller,
        &target,
        "Admin deleted temporary access pass method for user",
        format!("method {}", row.id),
    );
    if !w.delete_tap(&target.id, &row.id).await? {
        // Replaced or deleted by another request since we read it.
        return Err(method_not_found(&method_id));
    }
    let end = Change::EndTapSessions { user_id: target.id.clone(), tap_id: row.id.clone() };
    w.commit(state.now(), &[end], &[audit]).await?;
    state.sync().await?;
    Ok(no_content())
}

/// Every method of the user, in Graph's polymorphic shape: password, pass, TOTP.
async fn all_methods(
    state: &AppState,
    target: &Target,
    policy: &TapPolicy,
) -> ApiResult<Vec<Value>> {
    let now = state.now();
    let mut items = Vec::new();
    if let Some(set_at) = state.store.password_set_at(&target.id).await? {
        items.push(password_to_graph(set_at));
    }
    if let Some(row) = state.store.tap_of(&target.id).await? {
        items.push(tap_to_graph(&row, policy, target, now, None));
    }
    items.extend(verified_oath(state, &target.id).await?.iter().map(oath_to_graph));
    items.extend(state.store.passkeys_of(&target.id).await?.iter().map(fido2_to_graph));
    Ok(items)
}

/// Graph's `fido2AuthenticationMethod` for a passkey (no key material: only what it is).
pub fn fido2_to_graph(p: &crate::passkey::StoredPasskey) -> Value {
    serde_json::json!({
        "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
        "id": p.id,
        "displayName": p.display_name,
        "createdDateTime": gatehouse_core::time::format(p.created_at),
        "aaGuid": null,
        "model": null,
        "attestationCertificates": [],
        "attestationLevel": "notAttested",
    })
}

async fn list_fido2(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    let items = state.store.passkeys_of(&target.id).await?.iter().map(fido2_to_graph).collect();
    Ok(ok(collection(&state, &methods_path(&target.id, "fido2Methods"), items, None, None)))
}

async fn get_fido2(
    State(state): State<AppState>,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    let p = state
        .store
        .passkeys_of(&target.id)
        .await?
        .into_iter()
        .find(|p| p.id.eq_ignore_ascii_case(&method_id))
        .ok_or_else(|| method_not_found(&method_id))?;
    Ok(ok(entity(&state, &methods_path(&target.id, "fido2Methods"), fido2_to_graph(&p))))
}

async fn delete_fido2(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    require_manage(&caller, &target)?;
    let audit = user_audit(
        &caller,
        &target,
        "Admin deleted security info",
        format!("Passkey (FIDO2) method {method_id}"),
    );
    let mut w = state.store.begin().await?;
    if !w.delete_passkey(&target.id, &gatehouse_policy::json::normalize_id(&method_id)).await? {
        return Err(method_not_found(&method_id));
    }
    w.commit(state.now(), &[], &[audit]).await?;
    Ok(no_content())
}

async fn verified_oath(state: &AppState, user_id: &str) -> ApiResult<Vec<TotpRow>> {
    // Unverified rows are registrations in progress, not methods yet.
    Ok(state.store.totp_methods_of(user_id).await?.into_iter().filter(|t| t.verified).collect())
}

async fn list_methods(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (target, policy) = resolve(&state, &id)?;
    let items = all_methods(&state, &target, &policy).await?;
    Ok(ok(collection(&state, &methods_path(&target.id, "methods"), items, None, None)))
}

async fn get_method(
    State(state): State<AppState>,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, policy) = resolve(&state, &id)?;
    let item = all_methods(&state, &target, &policy)
        .await?
        .into_iter()
        .find(|m| {
            m.get("id").and_then(Value::as_str).is_some_and(|i| i.eq_ignore_ascii_case(&method_id))
        })
        .ok_or_else(|| method_not_found(&method_id))?;
    Ok(ok(entity(&state, &methods_path(&target.id, "methods"), item)))
}

async fn list_oath(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    let items = verified_oath(&state, &target.id).await?.iter().map(oath_to_graph).collect();
    Ok(ok(collection(&state, &methods_path(&target.id, "softwareOathMethods"), items, None, None)))
}

async fn find_oath(state: &AppState, target: &Target, method_id: &str) -> ApiResult<TotpRow> {
    verified_oath(state, &target.id)
        .await?
        .into_iter()
        .find(|t| t.id.eq_ignore_ascii_case(method_id))
        .ok_or_else(|| method_not_found(method_id))
}

async fn get_oath(
    State(state): State<AppState>,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    let row = find_oath(&state, &target, &method_id).await?;
    Ok(ok(entity(&state, &methods_path(&target.id, "softwareOathMethods"), oath_to_graph(&row))))
}

async fn delete_oath(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    require_manage(&caller, &target)?;
    let row = find_oath(&state, &target, &method_id).await?;
    let audit = user_audit(
        &caller,
        &target,
        "Admin deleted security info",
        format!("Authenticator app (softwareOath) method {}", row.id),
    );
    let mut w = state.store.begin().await?;
    if !w.delete_totp(&target.id, &row.id).await? {
        return Err(method_not_found(&method_id));
    }
    w.commit(state.now(), &[], &[audit]).await?;
    Ok(no_content())
}

async fn list_passwords(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    let items =
        state.store.password_set_at(&target.id).await?.map(password_to_graph).into_iter().collect();
    Ok(ok(collection(&state, &methods_path(&target.id, "passwordMethods"), items, None, None)))
}

async fn get_password(
    State(state): State<AppState>,
    Path((id, method_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (target, _) = resolve(&state, &id)?;
    let set_at = state
        .store
        .password_set_at(&target.id)
        .await?
        .filter(|_| method_id.eq_ignore_ascii_case(PASSWORD_METHOD_ID))
        .ok_or_else(|| method_not_found(&method_id))?;
    Ok(ok(entity(&state, &methods_path(&target.id, "passwordMethods"), password_to_graph(set_at))))
}

// ---------------------------------------------------------------------------------------------
// The caller's own methods (My Security Info), under the registerSecurityInformation session

/// The caller's methods, as My Security Info lists them: what each is, its name, when added.
async fn my_methods(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    super::signin::require_registration_session(&caller)?;
    let (target, policy) = resolve(&state, &caller.user_id)?;
    let now = state.now();
    let mut items = Vec::new();
    if let Some(set_at) = state.store.password_set_at(&target.id).await? {
        items.push(json!({"id": PASSWORD_METHOD_ID, "kind": "password", "displayName": "Password",
                          "createdDateTime": format(set_at)}));
    }
    if let Some(row) = state.store.tap_of(&target.id).await? {
        let tap = tap_to_graph(&row, &policy, &target, now, None);
        items.push(json!({"id": row.id, "kind": "temporaryAccessPass", "displayName": "Temporary Access Pass",
                          "createdDateTime": format(row.created_at), "startDateTime": format(row.start_at),
                          "lifetimeInMinutes": row.lifetime_minutes, "isUsable": tap.get("isUsable"),
                          "methodUsabilityReason": tap.get("methodUsabilityReason")}));
    }
    for row in verified_oath(&state, &target.id).await? {
        items.push(json!({"id": row.id, "kind": "softwareOath", "displayName": row.display_name,
                          "createdDateTime": format(row.created_at)}));
    }
    for p in state.store.passkeys_of(&target.id).await? {
        items.push(json!({"id": p.id, "kind": "fido2", "displayName": p.display_name,
                          "createdDateTime": format(p.created_at)}));
    }
    Ok(ok(json!({ "value": items })))
}

/// Deletes one of the caller's own methods. The password stays (it is changed, not deleted);
/// deleting the pass ends the sessions signed in with it, this one included.
async fn delete_my_method(
    State(state): State<AppState>,
    caller: Caller,
    Path(method_id): Path<String>,
) -> ApiResult<Response> {
    super::signin::require_registration_session(&caller)?;
    let (target, _) = resolve(&state, &caller.user_id)?;
    let id = gatehouse_policy::json::normalize_id(&method_id);
    if id.eq_ignore_ascii_case(PASSWORD_METHOD_ID) {
        return Err(ApiError::bad_request("The password cannot be deleted; change it instead."));
    }
    let audit = |what: String| user_audit(&caller, &target, "User deleted security info", what);
    let mut w = state.store.begin().await?;
    if let Some(row) =
        state.store.tap_of(&target.id).await?.filter(|t| t.id.eq_ignore_ascii_case(&id))
    {
        if !w.delete_tap(&target.id, &row.id).await? {
            return Err(method_not_found(&method_id));
        }
        let end = Change::EndTapSessions { user_id: target.id.clone(), tap_id: row.id.clone() };
        w.commit(state.now(), &[end], &[audit(format!("Temporary Access Pass {}", row.id))])
            .await?;
        state.sync().await?;
        return Ok(no_content());
    }
    if w.delete_totp(&target.id, &id).await? {
        w.commit(
            state.now(),
            &[],
            &[audit(format!("Authenticator app (softwareOath) method {id}"))],
        )
        .await?;
        return Ok(no_content());
    }
    if w.delete_passkey(&target.id, &id).await? {
        w.commit(state.now(), &[], &[audit(format!("Passkey (FIDO2) method {id}"))]).await?;
        return Ok(no_content());
    }
    Err(method_not_found(&method_id))
}
