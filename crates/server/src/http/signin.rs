//! The sign-in API under `/signin` (`docs/signin-api.md`): anonymous JSON routes for the
//! steps of a sign-in, guarded by the per-IP throttle, and the two routes a session granted for
//! `registerSecurityInformation` uses to register the Authenticator app (TOTP).
//!
//! The rules live in `crate::signin`; this module reads requests and shapes answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_core::auth::totp;
use gatehouse_core::roles::Access;
use gatehouse_core::time::format;
use serde_json::{Map, Value, json};

use super::graph::{Body, created, no_content, ok};
use super::{Api, ApiError, ApiResult, Caller};
use crate::session::SessionKind;
use crate::signin::{self, BeginRequest, Client, Method as Step, Refusal, StepError};
use crate::state::AppState;
use crate::store::{AuditRecord, AuditTarget, TotpRow};

/// The issuer authenticator apps show beside the account.
pub const TOTP_ISSUER: &str = "Gatehouse";
/// The longest display name a registration may give its method.
const MAX_DISPLAY_NAME: usize = 128;

pub fn routes(api: Api) -> Api {
    api.route(
        Method::POST,
        "/signin/begin",
        Access::Anonymous,
        "Begin a sign-in to an app or a user action (returns a flow and its first methods)",
        begin,
    )
    .route(Method::POST, "/signin/{flow_id}/password", Access::Anonymous, "Sign-in step: password", password)
    .route(
        Method::POST,
        "/signin/{flow_id}/temporaryAccessPass",
        Access::Anonymous,
        "Sign-in step: Temporary Access Pass",
        temporary_access_pass,
    )
    .route(
        Method::POST,
        "/signin/{flow_id}/totp",
        Access::Anonymous,
        "Sign-in step: Authenticator-app verification code (TOTP)",
        totp_step,
    )
    .route(
        Method::POST,
        "/signin/{flow_id}/passkey/options",
        Access::Anonymous,
        "Sign-in: the options for a passkey step (the browser's navigator.credentials.get input)",
        passkey_options,
    )
    .route(
        Method::POST,
        "/signin/{flow_id}/passkey",
        Access::Anonymous,
        "Sign-in step: passkey (the browser's PublicKeyCredential)",
        passkey_step,
    )
    .route(
        Method::POST,
        "/signin/security-info/passkey",
        Access::SignedIn,
        "Start registering a passkey (needs a registerSecurityInformation session)",
        register_passkey,
    )
    .route(
        Method::POST,
        "/signin/security-info/passkey/{id}/finish",
        Access::SignedIn,
        "Finish registering a passkey with the browser's credential",
        finish_passkey,
    )
    .route(
        Method::POST,
        "/signin/signout",
        Access::SignedIn,
        "End the caller's session (its token stops working at once)",
        sign_out,
    )
    .route(
        Method::POST,
        "/signin/security-info/totp",
        Access::SignedIn,
        "Start registering the Authenticator app (needs a registerSecurityInformation session; the secret is shown once)",
        register_totp,
    )
    .route(
        Method::POST,
        "/signin/security-info/totp/{id}/verify",
        Access::SignedIn,
        "Finish registering the Authenticator app with a code from it",
        verify_totp,
    )
}

/// The client of a sign-in request: its address (through trusted proxies only) and country,
/// after taking one attempt from the address's budget (429 when it is spent).
pub struct SignInClient(pub Client);

impl FromRequestParts<AppState> for SignInClient {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded =
            parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let ip = signin::client_ip(peer, forwarded, &state.config.trusted_proxies);
        if let Err(seconds) = signin::throttle(state, ip) {
            let mut resp = ApiError::too_many(
                "Too many sign-in attempts from your address. Wait, then try again.",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Err(resp);
        }
        Ok(SignInClient(Client { ip, country: signin::country_of(state, ip) }))
    }
}

/// `{"error": {"code": "<AADSTS number>", "message", "correlationId", …, "innerError"}}`.
fn refusal_response(r: Refusal) -> Response {
    let mut error = Map::new();
    error.insert("code".into(), r.code.to_string().into());
    error.insert("message".into(), r.message.into());
    if !r.correlation_id.is_empty() {
        error.insert("correlationId".into(), r.correlation_id.into());
    }
    error.extend(r.details);
    let request_id = crate::random::guid();
    error.insert(
        "innerError".into(),
        json!({"request-id": request_id, "client-request-id": request_id}),
    );
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, Json(json!({ "error": error }))).into_response();
    if let Some(seconds) = r.retry_after
        && let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn respond(result: Result<Value, StepError>) -> Response {
    match result {
        Ok(v) => ok(v),
        Err(StepError::Invalid(message)) => ApiError::invalid_request(message).into_response(),
        Err(StepError::Refused(r)) => refusal_response(*r),
        Err(StepError::Conflict) => ApiError::conflict(
            "Another step of this sign-in finished first. If it did not sign you in, begin a new sign-in.",
        )
        .into_response(),
        Err(StepError::Store(e)) => ApiError::from(e).into_response(),
    }
}

async fn begin(State(state): State<AppState>, _client: SignInClient, Body(body): Body) -> Response {
    let result = match BeginRequest::from_json(&body) {
        Ok(request) => signin::begin(&state, request).await,
        Err(e) => Err(e),
    };
    respond(result)
}

/// `{flowToken, <secret>}`: both strings, nothing else.
fn step_body<'b>(
    body: &'b Map<String, Value>,
    secret: &str,
) -> Result<(&'b str, &'b str), StepError> {
    if let Some(k) =
        body.keys().find(|k| !k.contains("@odata.") && *k != "flowToken" && *k != secret)
    {
        return Err(StepError::Invalid(format!(
            "Unknown property `{k}` (expected: flowToken, {secret})."
        )));
    }
    let field = |k: &str| match body.get(k) {
        Some(Value::String(s)) => Ok(s.as_str()),
        _ => Err(StepError::Invalid(format!("`{k}` is required and must be a string."))),
    };
    Ok((field("flowToken")?, field(secret)?))
}

async fn run_step(
    state: &AppState,
    client: &Client,
    flow_id: &str,
    body: &Map<String, Value>,
    method: Step,
) -> Response {
    let secret_key = if method == Step::Password { "password" } else { "code" };
    let result = match step_body(body, secret_key) {
        Ok((token, input)) => signin::step(state, client, flow_id, token, method, input).await,
        Err(e) => Err(e),
    };
    respond(result)
}

async fn password(
    State(state): State<AppState>,
    SignInClient(client): SignInClient,
    Path(flow_id): Path<String>,
    Body(body): Body,
) -> Response {
    run_step(&state, &client, &flow_id, &body, Step::Password).await
}

async fn temporary_access_pass(
    State(state): State<AppState>,
    SignInClient(client): SignInClient,
    Path(flow_id): Path<String>,
    Body(body): Body,
) -> Response {
    run_step(&state, &client, &flow_id, &body, Step::TemporaryAccessPass).await
}

async fn passkey_options(
    State(state): State<AppState>,
    _client: SignInClient,
    Path(flow_id): Path<String>,
    Body(body): Body,
) -> Response {
    let token = match body.get("flowToken") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return ApiError::invalid_request("`flowToken` is required and must be a string.")
                .into_response();
        }
    };
    respond(signin::passkey_options(&state, &flow_id, &token).await)
}

async fn passkey_step(
    State(state): State<AppState>,
    SignInClient(client): SignInClient,
    Path(flow_id): Path<String>,
    Body(body): Body,
) -> Response {
    if let Some(k) = body.keys().find(|k| !matches!(k.as_str(), "flowToken" | "credential")) {
        return ApiError::invalid_request(format!(
            "Unknown property `{k}` (expected: flowToken, credential)."
        ))
        .into_response();
    }
    let token = match body.get("flowToken") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return ApiError::invalid_request("`flowToken` is required and must be a string.")
                .into_response();
        }
    };
    let credential = match body.get("credential") {
        Some(c @ Value::Object(_)) => c.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => {
            return ApiError::invalid_request(
                "`credential` is required: the browser's PublicKeyCredential.",
            )
            .into_response();
        }
    };
    respond(signin::step(&state, &client, &flow_id, &token, Step::Passkey, &credential).await)
}

async fn register_passkey(
    State(state): State<AppState>,
    _client: SignInClient,
    caller: Caller,
    Body(body): Body,
) -> ApiResult<Response> {
    require_registration_session(&caller)?;
    if let Some(k) = body.keys().find(|k| !k.contains("@odata.")) {
        return Err(ApiError::bad_request(format!("Unknown property `{k}` (expected none).")));
    }
    let name =
        state.dir().user(&caller.user_id).map(|u| u.display_name.clone()).unwrap_or_default();
    let (id, options) = state
        .passkeys
        .start_registration(
            &state.store,
            &caller.user_id,
            &caller.user_principal_name,
            &name,
            state.now(),
        )
        .await
        .map_err(passkey_error)?;
    Ok(created(json!({"id": id, "options": options})))
}

fn passkey_error(e: crate::passkey::PasskeyError) -> ApiError {
    match e {
        crate::passkey::PasskeyError::Store(s) => s.into(),
        other => ApiError::bad_request(format!("{other}.")),
    }
}

async fn finish_passkey(
    State(state): State<AppState>,
    _client: SignInClient,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    require_registration_session(&caller)?;
    if let Some(k) = body
        .keys()
        .find(|k| !k.contains("@odata.") && !matches!(k.as_str(), "credential" | "displayName"))
    {
        return Err(ApiError::bad_request(format!(
            "Unknown property `{k}` (expected: credential, displayName)."
        )));
    }
    let display_name = match body.get("displayName") {
        None | Some(Value::Null) => "Passkey".to_owned(),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_DISPLAY_NAME => {
            s.trim().to_owned()
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`displayName` must be a non-empty string of at most {MAX_DISPLAY_NAME} characters."
            )));
        }
    };
    let credential: webauthn_rs::prelude::RegisterPublicKeyCredential =
        match body.get("credential") {
            Some(c @ Value::Object(_)) => serde_json::from_value(c.clone()),
            Some(Value::String(s)) => serde_json::from_str(s),
            _ => {
                return Err(ApiError::bad_request(
                    "`credential` is required: the browser's PublicKeyCredential.",
                ));
            }
        }
        .map_err(|e| {
            ApiError::bad_request(format!("`credential` is not a WebAuthn registration: {e}"))
        })?;
    let now = state.now();
    let passkey = state
        .passkeys
        .finish_registration(&state.store, &id, &caller.user_id, &credential, now)
        .await
        .map_err(passkey_error)?;
    let method_id = crate::random::guid();
    let record = audit(&caller, "User registered security info", "Passkey (FIDO2)");
    let mut w = state.store.begin().await?;
    w.insert_passkey(&method_id, &caller.user_id, &display_name, now, &passkey).await.map_err(
        |e| {
            if e.is_conflict() {
                ApiError::conflict("This passkey is registered already.")
            } else {
                e.into()
            }
        },
    )?;
    w.commit(now, &[], &[record]).await?;
    Ok(created(json!({
        "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
        "id": method_id,
        "displayName": display_name,
        "createdDateTime": format(now),
    })))
}

/// Ends the caller's own session (signing out of the portal, or a script discarding its token).
async fn sign_out(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let now = state.now();
    let w = state.store.begin().await?;
    let end = gatehouse_core::Change::EndSession {
        user_id: caller.user_id.clone(),
        session_id: caller.session.id.clone(),
    };
    w.commit(now, &[end], &[]).await?;
    state.sync().await?;
    Ok(no_content())
}

async fn totp_step(
    State(state): State<AppState>,
    SignInClient(client): SignInClient,
    Path(flow_id): Path<String>,
    Body(body): Body,
) -> Response {
    run_step(&state, &client, &flow_id, &body, Step::Totp).await
}

// ---------------------------------------------------------------------------------------------
// Registering the Authenticator app

/// Security info is registered under the user action's Conditional Access policies: only a
/// session granted for `registerSecurityInformation` may do it (an app session or an API token
/// did not pass those policies).
pub(crate) fn require_registration_session(caller: &Caller) -> ApiResult<()> {
    let s = &caller.session;
    if s.kind == SessionKind::SignIn && s.target.as_deref() == Some(signin::REGISTER_SECURITY_INFO)
    {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "Registering security info needs a session granted for the user action \
         registerSecurityInformation: begin a sign-in with target {\"userAction\": \
         \"registerSecurityInformation\"} and use its session token.",
    ))
}

fn audit(caller: &Caller, activity: &str, reason: &str) -> AuditRecord {
    AuditRecord {
        id: crate::random::guid(),
        category: "UserManagement",
        activity: activity.into(),
        result: "success",
        result_reason: reason.into(),
        initiated_by: caller.audit_actor(),
        targets: vec![AuditTarget {
            kind: "User",
            id: caller.user_id.clone(),
            display_name: Some(caller.user_principal_name.clone()),
        }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    }
}

async fn register_totp(
    State(state): State<AppState>,
    _client: SignInClient,
    caller: Caller,
    Body(body): Body,
) -> ApiResult<Response> {
    require_registration_session(&caller)?;
    if let Some(k) = body.keys().find(|k| !k.contains("@odata.") && *k != "displayName") {
        return Err(ApiError::bad_request(format!(
            "Unknown property `{k}` (expected: displayName)."
        )));
    }
    let display_name = match body.get("displayName") {
        None | Some(Value::Null) => "Authenticator app".to_owned(),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_DISPLAY_NAME => {
            s.trim().to_owned()
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`displayName` must be a non-empty string of at most {MAX_DISPLAY_NAME} characters."
            )));
        }
    };
    let mut seed = [0u8; 20];
    crate::random::fill(&mut seed);
    let secret = totp::generate_secret(seed);
    let now = state.now();
    let row = TotpRow {
        id: crate::random::guid(),
        user_id: caller.user_id.clone(),
        display_name: display_name.clone(),
        secret: secret.to_base32(),
        verified: false,
        created_at: now,
        // Steps are counted from 1970: every real code is later than step 0.
        last_step: 0,
    };
    let record =
        audit(&caller, "User started security info registration", "Authenticator app (TOTP)");
    let mut w = state.store.begin().await?;
    // One registration in progress at a time: a new one replaces the unfinished ones.
    w.delete_unverified_totp(&caller.user_id).await?;
    w.insert_totp(&row).await?;
    w.commit(now, &[], &[record]).await?;
    Ok(created(json!({
        "id": row.id,
        "displayName": display_name,
        "secret": row.secret,
        "otpauthUri": totp::otpauth_uri(TOTP_ISSUER, &caller.user_principal_name, &secret),
        "isVerified": false,
        "createdDateTime": format(now),
    })))
}

async fn verify_totp(
    State(state): State<AppState>,
    _client: SignInClient,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    require_registration_session(&caller)?;
    if let Some(k) = body.keys().find(|k| !k.contains("@odata.") && *k != "code") {
        return Err(ApiError::bad_request(format!("Unknown property `{k}` (expected: code).")));
    }
    let Some(Value::String(code)) = body.get("code") else {
        return Err(ApiError::bad_request(
            "`code` is required: the 6 digits the authenticator app shows.",
        ));
    };
    let not_found = || {
        ApiError::item_not_found(format!("Authenticator-app registration '{id}' does not exist."))
    };
    let row = state
        .store
        .totp_methods_of(&caller.user_id)
        .await?
        .into_iter()
        .find(|t| t.id.eq_ignore_ascii_case(&id))
        .ok_or_else(not_found)?;
    if row.verified {
        return Err(ApiError::conflict("This Authenticator-app method is already verified."));
    }
    let secret = totp::Secret::from_base32(&row.secret).map_err(|e| {
        tracing::error!(code = e.code(), method = %row.id, "a stored TOTP secret is unreadable");
        ApiError::internal("The stored method is unreadable; start the registration again.")
    })?;
    let now = state.now();
    let step = totp::verify(&secret, code, now, row.last_step).map_err(|e| {
        ApiError::bad_request(match e {
            totp::TotpError::Malformed => "The verification code must be the 6 digits your authenticator app shows.",
            totp::TotpError::Replayed => "This verification code has already been used; wait for the next one.",
            _ => "The verification code is not valid. Check the time on your device and try the current code.",
        })
    })?;
    let record =
        audit(&caller, "User registered security info", "User registered Authenticator app (TOTP)");
    let mut w = state.store.begin().await?;
    if !w.verify_totp(&caller.user_id, &row.id, step).await? {
        // A concurrent verification won, or this code's step was just used.
        return Err(ApiError::bad_request(
            "This verification code has already been used, or the method was verified meanwhile.",
        ));
    }
    w.commit(now, &[], &[record]).await?;
    Ok(no_content())
}
