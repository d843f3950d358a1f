//! Sign-in under Conditional Access: the flow behind `docs/signin-api.md`.
//!
//! ```text
//! begin ─► flow (in the store, any node continues it)
//!   step (password | temporaryAccessPass | totp)
//!     lockout? ─► 50053            (nothing verified, nothing revealed)
//!     verify the credential         (argon2 / constant-time hash / RFC 6238)
//!     one transaction: lockout counter, consumed pass or TOTP step, flow, session, log row
//!     CA: evaluate the live snapshot, decide with the methods used so far
//!       blocked ─► 53003 · unmet, a method helps ─► challenge · unmet, none ─► registration
//!       granted ─► session (ends by the sign-in frequency and the pass, whichever is first)
//! ```
//!
//! Every terminal step writes one sign-in log row in Graph's `signIn` shape, in the same
//! transaction as the step's state change. Passwords, codes and tokens are never logged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use gatehouse_core::auth::lockout::{self, LockoutPolicy, Scope, State as LockState};
use gatehouse_core::auth::{secret, tap, totp};
use gatehouse_core::time::{self, MINUTE, Millis};
use gatehouse_policy::device_filter::DeviceAttributes;
use gatehouse_policy::model::enums::{
    CLIENT_APP_TYPES, ClientAppType, GrantOperator, InsiderRiskLevel, PLATFORMS, Platform,
    RiskLevel, USER_ACTIONS, UserAction,
};
use gatehouse_policy::model::policy::SignInFrequency;
use gatehouse_policy::request::{Identity, SignInConditions, Target};
use gatehouse_policy::{
    AuthState, Control, Decision, MethodMode, MethodSet, Outcome, SignInRequest, Snapshot, Unknowns,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::session::{Session, SessionKind};
use crate::state::AppState;
use crate::store::{FlowRow, SignInLogRow, StoreError, TapRow, Write};

/// What a session granted for registering security info is for (`Session::target`).
pub const REGISTER_SECURITY_INFO: &str = "userAction:registersecurityinfo";
/// How long a session lasts under `signInFrequency: everyTime`: Entra re-prompts after five
/// minutes of clock skew tolerance, so a session outliving that would never be used again.
pub const EVERY_TIME_SESSION_MS: Millis = 5 * MINUTE;
/// The longest username accepted (Entra's UPNs are at most 113 characters).
pub const MAX_USERNAME: usize = 256;
/// The apps Entra logs user-action sign-ins against.
const MY_SIGNINS: (&str, &str) = ("19db86c3-b2b9-44cc-b339-36da233a3be2", "My Signins");
const DEVICE_REGISTRATION: (&str, &str) =
    ("01cb2876-7ebd-4aa4-9cc9-d28bd4d359a9", "Device Registration Service");
/// Compared against when the user has no pass, so "no pass" costs what "wrong pass" costs.
const NO_TAP_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Entra's error codes (AADSTS numbers) the sign-in API answers with.
pub mod code {
    pub const INVALID_CREDENTIALS: u32 = 50126;
    pub const LOCKED: u32 = 50053;
    pub const DISABLED: u32 = 50057;
    pub const MFA_REQUIRED: u32 = 50074;
    pub const REGISTRATION_REQUIRED: u32 = 50079;
    pub const FLOW_EXPIRED: u32 = 50089;
    pub const DEVICE_NOT_COMPLIANT: u32 = 53000;
    pub const DEVICE_NOT_DOMAIN_JOINED: u32 = 53001;
    pub const APP_NOT_APPROVED: u32 = 53002;
    pub const BLOCKED_BY_CA: u32 = 53003;
    pub const TAP_BLOCKED_BY_POLICY: u32 = 130501;
    pub const TAP_EXPIRED: u32 = 130504;
    pub const TAP_NOT_VERIFIED: u32 = 130507;
    pub const TOTP_INVALID: u32 = 500121;
    pub const PASSKEY_NOT_VERIFIED: u32 = 135011;
    pub const APP_NOT_FOUND: u32 = 700016;
}

/// Where a request comes from, as the HTTP edge resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// `None`: not known (no database configured, or the address is not in it).
    pub country: Option<String>,
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not itself a trusted proxy. An unreadable entry stops the
/// walk (what lies left of it cannot be trusted either).
pub fn client_ip<'h>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'h str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = crate::geo::canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|h| h.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(crate::geo::canonical)
}

/// The country of `ip`: the configured database's answer, `None` when it has none or no
/// database is configured (Conditional Access then sees an unknown country).
pub fn country_of(state: &AppState, ip: IpAddr) -> Option<String> {
    state.geo.as_ref().and_then(|g| g.country(ip))
}

/// Takes a sign-in attempt from `ip`'s budget. `Err(seconds)` is how long to wait.
pub fn throttle(state: &AppState, ip: IpAddr) -> Result<(), u64> {
    let rate = state.config.signin.attempts_per_second_per_ip;
    if rate == 0 {
        return Ok(()); // 0 turns the throttle off
    }
    let mut t = state.throttle.lock().unwrap_or_else(|p| p.into_inner());
    // At `rate` >= 1 per second the next attempt is allowed within a second.
    if t.try_take(ip, state.now()) { Ok(()) } else { Err(1) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Password,
    TemporaryAccessPass,
    Totp,
    /// A passkey (WebAuthn): a first factor that is multifactor and phishing-resistant alone.
    Passkey,
}

impl Method {
    /// The API's name (route segment, `methods` lists, `session.methods`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::TemporaryAccessPass => "temporaryAccessPass",
            Method::Totp => "totp",
            Method::Passkey => "passkey",
        }
    }

    /// Entra's sign-in log words (`authenticationDetails.authenticationMethod`).
    fn log_name(self) -> &'static str {
        match self {
            Method::Password => "Password",
            Method::TemporaryAccessPass => "Temporary Access Pass",
            Method::Totp => "OATH verification code",
            Method::Passkey => "Passkey (FIDO2)",
        }
    }

    fn from_name(name: &str) -> Option<Method> {
        [Method::Password, Method::TemporaryAccessPass, Method::Totp, Method::Passkey]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// A sign-in in progress, as stored (`signin_flows.body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub id: String,
    /// None: the username names nobody (the flow fails at its credential step).
    pub user_id: Option<String>,
    /// As typed, trimmed and lower-cased.
    pub username: String,
    /// The lockout row key: the user id, or a hash of the username for unknown users (so they
    /// lock exactly as real users do and lockout reveals nothing).
    pub lockout_key: String,
    pub app_id: Option<String>,
    /// A user action's URN (`urn:user:registersecurityinfo`).
    pub user_action: Option<String>,
    /// Graph spelling; None: the client did not say (an unknown platform).
    pub platform: Option<String>,
    pub client_app_type: String,
    pub device_id: Option<String>,
    pub correlation_id: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Credential steps passed so far.
    pub steps: Vec<Step>,
    /// The pass used, if one was.
    pub tap: Option<TapUse>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub method: String,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapUse {
    pub id: String,
    pub end: Millis,
    pub one_time: bool,
}

impl Flow {
    fn used(&self, m: Method) -> bool {
        self.steps.iter().any(|s| s.method == m.name())
    }

    fn modes(&self) -> MethodSet {
        self.steps.iter().filter_map(|s| Method::from_name(&s.method)).fold(
            MethodSet::default(),
            |set, m| {
                set.with(match m {
                    Method::Password => MethodMode::Password,
                    Method::Totp => MethodMode::SoftwareOath,
                    Method::Passkey => MethodMode::Fido2,
                    Method::TemporaryAccessPass => {
                        tap_mode(self.tap.as_ref().is_some_and(|t| t.one_time))
                    }
                })
            },
        )
    }

    /// What a session from this flow is for.
    fn target(&self) -> String {
        match (&self.app_id, &self.user_action) {
            (Some(app), _) => app.clone(),
            (None, Some(urn)) => format!("userAction:{}", urn.trim_start_matches("urn:user:")),
            (None, None) => String::new(),
        }
    }
}

fn tap_mode(one_time: bool) -> MethodMode {
    if one_time {
        MethodMode::TemporaryAccessPassOneTime
    } else {
        MethodMode::TemporaryAccessPassMultiUse
    }
}

/// Why a step did not go through.
#[derive(Debug)]
pub enum StepError {
    /// Malformed input: a Graph `invalidRequest` (400). Not an attempt; not logged.
    Invalid(String),
    /// The sign-in is refused, with Entra's code; logged.
    Refused(Box<Refusal>),
    /// Another step of the same flow finished first.
    Conflict,
    Store(StoreError),
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Store(e)
    }
}

/// A refusal as the API shows it: `{"error": {"code": "<code>", "message", …details}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub code: u32,
    pub message: String,
    pub correlation_id: String,
    /// Extra members of the error object (`policy`, `lockedUntil`, `methodUsabilityReason`).
    pub details: Map<String, Value>,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<i64>,
}

impl Refusal {
    fn new(status: u16, code: u32, message: impl Into<String>, correlation_id: &str) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            correlation_id: correlation_id.to_owned(),
            details: Map::new(),
            retry_after: None,
        }
    }

    fn with(mut self, key: &str, value: Value) -> Refusal {
        self.details.insert(key.to_owned(), value);
        self
    }

    /// The same body whether the user exists or not, and whatever was wrong.
    fn invalid_credentials(correlation_id: &str) -> Refusal {
        Refusal::new(
            401,
            code::INVALID_CREDENTIALS,
            "Error validating credentials due to invalid username or password.",
            correlation_id,
        )
    }
}

fn refused(r: Refusal) -> StepError {
    StepError::Refused(Box::new(r))
}

fn invalid(message: impl Into<String>) -> StepError {
    StepError::Invalid(message.into())
}

// ---------------------------------------------------------------------------------------------
// Begin

/// `POST /signin/begin`, read.
#[derive(Debug, Clone, PartialEq)]
pub struct BeginRequest {
    pub username: String,
    pub app_id: Option<String>,
    pub user_action: Option<UserAction>,
    pub platform: Option<Platform>,
    pub client_app_type: ClientAppType,
    pub device_id: Option<String>,
}

fn check_keys(object: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), StepError> {
    match object.keys().find(|k| !k.contains("@odata.") && !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!(
            "Unknown property `{k}` in {what} (expected: {}).",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, StepError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(format!("`{what}` must be a string."))),
    }
}

fn lookup<T: Copy>(table: &[(&str, T)], raw: &str, what: &str) -> Result<T, StepError> {
    table.iter().find(|(n, _)| n.eq_ignore_ascii_case(raw.trim())).map(|(_, v)| *v).ok_or_else(
        || {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            invalid(format!(
                "`{raw}` is not a valid {what} (expected one of: {}).",
                names.join(", ")
            ))
        },
    )
}

impl BeginRequest {
    pub fn from_json(body: &Map<String, Value>) -> Result<BeginRequest, StepError> {
        check_keys(body, &["username", "target", "client"], "the request")?;
        let username = string_field(body, "username", "username")?
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| invalid("`username` is required."))?;
        if username.chars().count() > MAX_USERNAME {
            return Err(invalid(format!("`username` is longer than {MAX_USERNAME} characters.")));
        }
        let target = match body.get("target") {
            Some(Value::Object(t)) => t,
            _ => {
                return Err(invalid(
                    "`target` is required: {\"appId\": \"<app id>\"} or {\"userAction\": \"registerSecurityInformation\"}.",
                ));
            }
        };
        check_keys(target, &["appId", "userAction"], "`target`")?;
        let app_id =
            string_field(target, "appId", "target.appId")?.map(|a| a.trim().to_ascii_lowercase());
        let user_action = string_field(target, "userAction", "target.userAction")?
            .map(|a| lookup(USER_ACTIONS, a, "user action"))
            .transpose()?;
        match (&app_id, &user_action) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid("`target` needs exactly one of `appId` and `userAction`."));
            }
            (Some(a), None) if a.is_empty() => return Err(invalid("`target.appId` is empty.")),
            _ => {}
        }
        let empty = Map::new();
        let client = match body.get("client") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(c)) => c,
            Some(_) => return Err(invalid("`client` must be an object.")),
        };
        check_keys(client, &["platform", "clientAppType", "deviceId"], "`client`")?;
        let platform = string_field(client, "platform", "client.platform")?
            .map(|p| lookup(PLATFORMS, p, "platform"))
            .transpose()?;
        if platform == Some(Platform::All) {
            return Err(invalid("`all` is not a platform a client runs on."));
        }
        let client_app_type = string_field(client, "clientAppType", "client.clientAppType")?
            .map(|c| lookup(CLIENT_APP_TYPES, c, "client app type"))
            .transpose()?
            .unwrap_or(ClientAppType::Browser);
        if client_app_type == ClientAppType::All {
            return Err(invalid("`all` is not a client app type a client can be."));
        }
        let device_id = string_field(client, "deviceId", "client.deviceId")?
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        Ok(BeginRequest {
            username: username.to_owned(),
            app_id,
            user_action,
            platform,
            client_app_type,
            device_id,
        })
    }
}

fn graph_name<T: Copy + PartialEq>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, t)| *t == v).map_or("", |(n, _)| *n)
}

fn usable_tap(state: &AppState, row: &TapRow, now: Millis) -> (bool, &'static str) {
    let dir = state.dir();
    let (usable, reason) = crate::http::methods::tap_usability(&dir, row, now);
    // Entra refuses a multi-use pass once the policy demands one-time passes.
    if usable && crate::http::methods::tap_policy(&dir).is_usable_once && !row.usable_once {
        return (false, "DisabledByPolicy");
    }
    (usable, reason)
}

/// Starts a sign-in. Unknown users get a flow too, indistinguishable from a real one.
pub async fn begin(state: &AppState, request: BeginRequest) -> Result<Value, StepError> {
    let now = state.now();
    let correlation_id = crate::random::guid();
    let user_id = {
        let dir = state.dir();
        if let Some(app) = &request.app_id {
            let known = dir.service_principals().any(|s| s.app_id.eq_ignore_ascii_case(app))
                || gatehouse_policy::suites::app_name(app).is_some();
            if !known {
                let message = format!(
                    "Application with identifier '{app}' was not found in the directory. Register the \
                     application (a service principal) before signing in to it."
                );
                return Err(refused(Refusal::new(
                    400,
                    code::APP_NOT_FOUND,
                    message,
                    &correlation_id,
                )));
            }
        }
        dir.resolve_user(&request.username).map(|u| u.id.clone())
    };
    let username = request.username.to_lowercase();
    let lockout_key = match &user_id {
        Some(id) => id.clone(),
        None => format!("unknown:{}", secret::hash(&username)),
    };
    let mut methods = Vec::new();
    if let Some(id) = &user_id
        && let Some(row) = state.store.tap_of(id).await?
        && usable_tap(state, &row, now).0
    {
        methods.push(Method::TemporaryAccessPass.name());
    }
    // A passkey first: it is the strongest first factor, and phishing-resistant.
    if let Some(id) = &user_id
        && state.passkeys.available()
        && !state.store.passkeys_of(id).await?.is_empty()
    {
        methods.insert(0, Method::Passkey.name());
    }
    methods.push(Method::Password.name());
    let flow = Flow {
        id: crate::random::guid(),
        user_id,
        username,
        lockout_key,
        app_id: request.app_id.clone(),
        user_action: request.user_action.map(|a| a.urn().to_owned()),
        platform: request.platform.map(|p| graph_name(PLATFORMS, p).to_owned()),
        client_app_type: graph_name(CLIENT_APP_TYPES, request.client_app_type).to_owned(),
        device_id: request.device_id.clone(),
        correlation_id: correlation_id.clone(),
        created_at: now,
        expires_at: now.saturating_add(state.config.signin.flow_minutes.saturating_mul(MINUTE)),
        steps: Vec::new(),
        tap: None,
    };
    let token = crate::random::token("ghf_");
    let body = serde_json::to_string(&flow).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut w = state.store.begin().await?;
    w.delete_expired_flows(now).await?;
    w.insert_flow(
        &flow.id,
        &FlowRow { token_hash: secret::hash(&token), expires_at: flow.expires_at, body },
    )
    .await?;
    w.commit(now, &[], &[]).await?;
    Ok(json!({
        "flowId": flow.id,
        "flowToken": token,
        "methods": methods,
        "expiresDateTime": time::format(flow.expires_at),
        "correlationId": correlation_id,
    }))
}

// ---------------------------------------------------------------------------------------------
// Steps

/// The flow `id` if `token` is its token and it has not expired. Every failure reads the same.
async fn load_flow(
    state: &AppState,
    id: &str,
    token: &str,
    now: Millis,
) -> Result<(Flow, String), StepError> {
    let expired = || {
        refused(Refusal::new(
            400,
            code::FLOW_EXPIRED,
            "This sign-in does not exist, has expired, or its flowToken is wrong. Begin a new sign-in.",
            "",
        ))
    };
    let Some(row) = state.store.signin_flow(id).await? else { return Err(expired()) };
    if !secret::matches(token, &row.token_hash) || now >= row.expires_at {
        return Err(expired());
    }
    let flow: Flow = serde_json::from_str(&row.body)
        .map_err(|e| StoreError::Corrupt(format!("sign-in flow {id}: {e}")))?;
    Ok((flow, row.body))
}

/// What the directory says about the flow's user, app and device, copied out of it.
struct Facts {
    user: Option<UserFacts>,
    app_display_name: Option<String>,
    device: DeviceAttributes,
    device_display_name: Option<String>,
    device_registered: bool,
}

struct UserFacts {
    id: String,
    upn: String,
    display_name: String,
    enabled: bool,
}

fn facts(state: &AppState, flow: &Flow) -> Facts {
    let dir = state.dir();
    let user = flow.user_id.as_deref().and_then(|id| dir.user(id)).map(|u| UserFacts {
        id: u.id.clone(),
        upn: u.user_principal_name.clone().unwrap_or_default(),
        display_name: u.display_name.clone(),
        enabled: u.account_enabled,
    });
    let app_display_name = match (&flow.app_id, &flow.user_action) {
        (Some(app), _) => dir
            .service_principals()
            .find(|s| s.app_id.eq_ignore_ascii_case(app))
            .map(|s| s.display_name.clone())
            .or_else(|| gatehouse_policy::suites::app_name(app).map(str::to_owned)),
        (None, Some(urn)) if urn.ends_with("registerdevice") => {
            Some(DEVICE_REGISTRATION.1.to_owned())
        }
        (None, Some(_)) => Some(MY_SIGNINS.1.to_owned()),
        (None, None) => None,
    };
    // Compliance and trust come from the directory's device object, never from the client.
    let device = flow.device_id.as_deref().and_then(|wanted| {
        dir.devices().find(|d| {
            d.get("deviceId")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(wanted))
                && d.get("accountEnabled").and_then(Value::as_bool) != Some(false)
        })
    });
    Facts {
        user,
        app_display_name,
        device: device.map(device_attributes).unwrap_or_default(),
        device_display_name: device
            .and_then(|d| d.get("displayName"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        device_registered: device.is_some(),
    }
}

/// A directory device (Graph `device`) as the device filter reads it.
pub fn device_attributes(d: &Map<String, Value>) -> DeviceAttributes {
    let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
    let list = |k: &str| {
        d.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
    };
    let mut extension_attributes: [Option<String>; 15] = Default::default();
    let ext = d.get("extensionAttributes").and_then(Value::as_object);
    for (i, slot) in extension_attributes.iter_mut().enumerate() {
        let key = format!("extensionAttribute{}", i + 1);
        *slot = ext
            .and_then(|e| e.get(&key))
            .or_else(|| d.get(&key))
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    DeviceAttributes {
        device_id: s("deviceId"),
        display_name: s("displayName"),
        enrollment_profile_name: s("enrollmentProfileName"),
        manufacturer: s("manufacturer"),
        model: s("model"),
        operating_system: s("operatingSystem"),
        operating_system_version: s("operatingSystemVersion"),
        extension_attributes,
        device_ownership: s("deviceOwnership"),
        is_compliant: d.get("isCompliant").and_then(Value::as_bool),
        mdm_app_id: s("mdmAppId"),
        physical_ids: list("physicalIds"),
        system_labels: list("systemLabels"),
        profile_type: s("profileType"),
        trust_type: s("trustType"),
    }
}

/// The Conditional Access request for this flow's sign-in, as the engine reads it. Gatehouse
/// has no risk detection, so every risk level is `none`.
fn request_of(
    flow: &Flow,
    user_id: &str,
    client: &Client,
    device: &DeviceAttributes,
) -> SignInRequest {
    let platform =
        |name: &str| PLATFORMS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    let target = match (&flow.app_id, &flow.user_action) {
        (Some(app), _) => Target::Apps(vec![app.clone()]),
        (None, Some(urn)) => USER_ACTIONS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(urn))
            .map_or(Target::Apps(Vec::new()), |(_, a)| Target::UserAction(*a)),
        (None, None) => Target::Apps(Vec::new()),
    };
    SignInRequest {
        identity: Identity::User {
            user_id: user_id.to_owned(),
            external_tenant_id: None,
            external_user_type: None,
        },
        target,
        conditions: SignInConditions {
            client_app_type: CLIENT_APP_TYPES
                .iter()
                .find(|(n, _)| *n == flow.client_app_type)
                .map(|(_, c)| *c)
                .or(Some(ClientAppType::Browser)),
            device_platform: Some(
                flow.platform.as_deref().and_then(platform).unwrap_or(Platform::Unknown),
            ),
            ip_address: Some(client.ip),
            country: Some(client.country.clone()),
            device: Some(device.clone()),
            sign_in_risk: Some(RiskLevel::None),
            user_risk: Some(RiskLevel::None),
            service_principal_risk: None,
            insider_risk: Some(InsiderRiskLevel::None),
            authentication_flow: Some(None),
        },
        applied_policies_only: false,
    }
}

/// What a policy decision means for this step, in owned values (the decision borrows the
/// snapshot).
struct Evaluated {
    verdict: Verdict,
    /// `appliedConditionalAccessPolicies`.
    applied: Vec<Value>,
    ca_status: &'static str,
    /// How long a session may last under the merged `signInFrequency`.
    sign_in_frequency: Option<Millis>,
    /// Whether Conditional Access asks for more than one factor (`authenticationRequirement`).
    mfa_required: bool,
}

type Named = (String, String);

enum Verdict {
    Granted,
    Blocked { policies: Vec<Named> },
    Challenge { methods: Vec<Method>, reason: String, policies: Vec<Named> },
    Registration { reason: String, policies: Vec<Named> },
    Unsatisfiable { code: u32, reason: String, policies: Vec<Named> },
}

fn is_method_control(c: &Control) -> bool {
    matches!(c, Control::Mfa | Control::AuthenticationStrength { .. })
}

/// How far a decision is from granting: 0 granted; otherwise the controls still unmet.
fn distance(d: &Decision<'_>) -> usize {
    match &d.outcome {
        Outcome::Granted => 0,
        Outcome::Blocked { .. } => usize::MAX,
        Outcome::ActionRequired { requirements } => {
            requirements.iter().map(|r| r.unmet.len().max(1)).sum()
        }
    }
}

fn auth(methods: MethodSet) -> AuthState {
    AuthState { methods, ..AuthState::default() }
}

/// Decides the sign-in with `used` methods; `available` are the methods the user holds and has
/// not used yet, offered when they bring the sign-in closer to a grant.
fn judge(
    snapshot: &Snapshot,
    request: &SignInRequest,
    used: MethodSet,
    available: &[(Method, MethodMode)],
) -> Evaluated {
    let evaluation = snapshot.evaluate(request);
    let decide = |m: MethodSet| evaluation.decide_with(&auth(m), Unknowns::Enforce);
    let decision = decide(used);
    let names: HashMap<&str, &str> = decision.policies().map(|p| (p.id, p.display_name)).collect();
    let named = |id: &str| (id.to_owned(), names.get(id).copied().unwrap_or_default().to_owned());
    let applied = decision
        .policies()
        .map(|p| {
            json!({
                "id": p.id,
                "displayName": p.display_name,
                "enforcedGrantControls": p.enforced_grant_controls(),
                "enforcedSessionControls": p.enforced_session_controls(),
                "result": p.result.graph_name(),
            })
        })
        .collect();
    let mfa_required = matches!(&decide(MethodSet::default()).outcome,
        Outcome::ActionRequired { requirements } if requirements.iter().any(|r| r.unmet.iter().any(|c| is_method_control(c))));
    let sign_in_frequency = decision.session.sign_in_frequency.map(|f| match f {
        SignInFrequency::EveryTime => EVERY_TIME_SESSION_MS,
        SignInFrequency::Hours(h) => i64::from(h).saturating_mul(60 * MINUTE),
    });
    let verdict = match &decision.outcome {
        Outcome::Granted => Verdict::Granted,
        Outcome::Blocked { policies } => {
            Verdict::Blocked { policies: policies.iter().map(|p| named(p)).collect() }
        }
        Outcome::ActionRequired { requirements } => {
            let now_at = distance(&decision);
            let helps = |extra: MethodSet| distance(&decide(MethodSet(used.0 | extra.0))) < now_at;
            let methods: Vec<Method> = available
                .iter()
                .filter(|(_, mode)| helps(MethodSet::of(&[*mode])))
                .map(|(m, _)| *m)
                .collect();
            let policies: Vec<Named> = requirements.iter().map(|r| named(r.policy_id)).collect();
            let reason = requirements
                .iter()
                .map(|r| {
                    let joiner = if r.operator == GrantOperator::And { " and " } else { " or " };
                    let wants: Vec<String> = r.unmet.iter().map(|c| c.describe()).collect();
                    let name = names.get(r.policy_id).copied().unwrap_or(r.policy_id);
                    format!("Conditional Access policy '{name}' requires {}.", wants.join(joiner))
                })
                .collect::<Vec<_>>()
                .join(" ");
            // What the user could register: the Authenticator app (with a password), or be
            // issued: a Temporary Access Pass.
            let registrable = [
                MethodSet::of(&[MethodMode::Password, MethodMode::SoftwareOath]),
                MethodSet::of(&[MethodMode::TemporaryAccessPassOneTime]),
            ];
            let beyond_methods =
                requirements.iter().find(|r| !r.unmet.iter().any(|c| is_method_control(c)));
            if !methods.is_empty() {
                Verdict::Challenge { methods, reason, policies }
            } else if let Some(r) = beyond_methods {
                let code = if r.unmet.contains(&&Control::CompliantDevice) {
                    code::DEVICE_NOT_COMPLIANT
                } else if r.unmet.contains(&&Control::DomainJoinedDevice) {
                    code::DEVICE_NOT_DOMAIN_JOINED
                } else if r.unmet.iter().any(|c| {
                    matches!(c, Control::ApprovedApplication | Control::CompliantApplication)
                }) {
                    code::APP_NOT_APPROVED
                } else {
                    code::BLOCKED_BY_CA
                };
                Verdict::Unsatisfiable { code, reason, policies: vec![named(r.policy_id)] }
            } else if registrable.iter().any(|extra| helps(*extra)) {
                Verdict::Registration { reason, policies }
            } else {
                let reason =
                    format!("{reason} None of the methods Gatehouse supports satisfies it.");
                Verdict::Unsatisfiable { code: code::BLOCKED_BY_CA, reason, policies }
            }
        }
    };
    Evaluated {
        verdict,
        applied,
        ca_status: decision.conditional_access_status(),
        sign_in_frequency,
        mfa_required,
    }
}

/// A verified (or refused) credential, before anything is written.
enum Checked {
    Password,
    Tap(TapRow),
    Totp {
        method_id: String,
        step: i64,
    },
    Passkey {
        id: String,
        passkey: Box<webauthn_rs::prelude::Passkey>,
    },
    /// A wrong credential: counted towards lockout.
    Wrong(Refusal),
    /// The right credential, but not usable (an expired pass): not counted.
    Unusable(Refusal),
}

async fn check(
    state: &AppState,
    flow: &Flow,
    facts: &Facts,
    method: Method,
    input: &str,
    now: Millis,
) -> Result<Checked, StepError> {
    let cid = flow.correlation_id.as_str();
    let user = facts.user.as_ref();
    match method {
        Method::Password => {
            let phc = match user {
                Some(u) => state.store.password_of(&u.id).await?,
                None => None,
            };
            let input = input.to_owned();
            // The same argon2 work whether the user or their password exists or not.
            let ok = tokio::task::spawn_blocking(move || {
                let matched = crate::password::verify(
                    &input,
                    phc.as_deref().unwrap_or(crate::password::dummy_hash()),
                );
                matched && phc.is_some()
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("password check task: {e}")))?;
            Ok(if ok && user.is_some() {
                Checked::Password
            } else {
                Checked::Wrong(Refusal::invalid_credentials(cid))
            })
        }
        Method::TemporaryAccessPass => {
            let row = match user {
                Some(u) => state.store.tap_of(&u.id).await?,
                None => None,
            };
            let code = input.trim();
            let matched =
                secret::matches(code, row.as_ref().map_or(NO_TAP_HASH, |r| r.secret_hash.as_str()));
            let Some(row) = row.filter(|_| matched) else {
                return Ok(Checked::Wrong(Refusal::new(
                    401,
                    code::TAP_NOT_VERIFIED,
                    "An access pass could not be found or verified for the user.",
                    cid,
                )));
            };
            let (usable, reason) = usable_tap(state, &row, now);
            if usable {
                return Ok(Checked::Tap(row));
            }
            Ok(Checked::Unusable(tap_refusal(reason, &row, cid)))
        }
        Method::Passkey => {
            let wrong = || {
                Checked::Wrong(Refusal::new(
                    401,
                    code::PASSKEY_NOT_VERIFIED,
                    "Your passkey could not be verified. Try again, or use another method.",
                    cid,
                ))
            };
            let Some(u) = user else { return Ok(wrong()) };
            let Ok(credential) =
                serde_json::from_str::<webauthn_rs::prelude::PublicKeyCredential>(input)
            else {
                return Err(invalid(
                    "`credential` must be the browser's PublicKeyCredential as JSON.",
                ));
            };
            match state
                .passkeys
                .finish_authentication(&state.store, &flow.id, &u.id, &credential, now)
                .await
            {
                Ok((id, passkey)) => Ok(Checked::Passkey { id, passkey: Box::new(passkey) }),
                Err(crate::passkey::PasskeyError::Store(e)) => Err(e.into()),
                Err(crate::passkey::PasskeyError::Unavailable(m)) => Err(invalid(m)),
                Err(_) => Ok(wrong()),
            }
        }
        Method::Totp => {
            let methods = match user {
                Some(u) => state.store.totp_methods_of(&u.id).await?,
                None => Vec::new(),
            };
            let mut error = totp::TotpError::Invalid;
            for m in methods.iter().filter(|m| m.verified) {
                let Ok(secret) = totp::Secret::from_base32(&m.secret) else { continue };
                match totp::verify(&secret, input, now, m.last_step) {
                    Ok(step) => return Ok(Checked::Totp { method_id: m.id.clone(), step }),
                    Err(e @ (totp::TotpError::Replayed | totp::TotpError::Malformed)) => error = e,
                    Err(_) => {}
                }
            }
            Ok(Checked::Wrong(totp_refusal(error, cid)))
        }
    }
}

fn tap_refusal(reason: &'static str, row: &TapRow, cid: &str) -> Refusal {
    let (code, message) = match reason {
        "Expired" => (
            code::TAP_EXPIRED,
            "Your Temporary Access Pass has expired. Contact your administrator to obtain a new pass.".to_owned(),
        ),
        "NotYetValid" => (
            code::TAP_BLOCKED_BY_POLICY,
            format!(
                "Your Temporary Access Pass is not valid yet: it can be used from {}.",
                time::format(row.start_at)
            ),
        ),
        "OneTimeUsed" => (
            code::TAP_BLOCKED_BY_POLICY,
            "Temporary Access Pass sign in was blocked due to User Credential Policy: this one-time \
             pass has already been used. Contact your administrator to obtain a new pass."
                .to_owned(),
        ),
        _ => (
            code::TAP_BLOCKED_BY_POLICY,
            "Temporary Access Pass sign in was blocked due to User Credential Policy: the \
             authentication methods policy does not let you use this pass."
                .to_owned(),
        ),
    };
    Refusal::new(401, code, message, cid).with("methodUsabilityReason", reason.into())
}

fn totp_refusal(e: totp::TotpError, cid: &str) -> Refusal {
    let message = match e {
        totp::TotpError::Replayed => {
            "This verification code has already been used. Wait for the next code in your authenticator app."
        }
        totp::TotpError::Malformed => {
            "The verification code must be the 6 digits your authenticator app shows."
        }
        _ => "The verification code is not valid.",
    };
    Refusal::new(401, code::TOTP_INVALID, message, cid)
}

fn lockout_policy(state: &AppState) -> LockoutPolicy {
    let c = &state.config.signin;
    LockoutPolicy {
        threshold: c.lockout_threshold,
        unfamiliar_threshold: c.lockout_unfamiliar_threshold,
        duration_ms: c.lockout_seconds.saturating_mul(1000),
        max_duration_ms: LockoutPolicy::default()
            .max_duration_ms
            .max(c.lockout_seconds.saturating_mul(1000)),
    }
}

/// A sign-in from a familiar network is refused only while that scope is locked; one from
/// elsewhere while either is (a lock earned at home holds everywhere).
fn locked(states: &(LockState, LockState), scope: Scope, now: Millis) -> Option<Millis> {
    let (familiar, unfamiliar) = states;
    let mut until = lockout::check(familiar, now).err().map(|l| l.0);
    if scope == Scope::Unfamiliar {
        until = until.max(lockout::check(unfamiliar, now).err().map(|l| l.0));
    }
    until
}

fn lock_refusal(until: Millis, now: Millis, cid: &str) -> Refusal {
    let mut r = Refusal::new(
        423,
        code::LOCKED,
        format!(
            "Your account is temporarily locked to prevent unauthorized use: too many sign-in \
             attempts failed. Try again after {}.",
            time::format(until)
        ),
        cid,
    )
    .with("lockedUntil", time::format(until).into());
    r.retry_after = Some((until - now + 999) / 1000);
    r
}

/// The methods the user holds and has not used in this flow, with the mode each adds.
async fn available(
    state: &AppState,
    flow: &Flow,
    user_id: &str,
    now: Millis,
) -> Result<Vec<(Method, MethodMode)>, StoreError> {
    let mut out = Vec::new();
    if !flow.used(Method::Totp)
        && state.store.totp_methods_of(user_id).await?.iter().any(|t| t.verified)
    {
        out.push((Method::Totp, MethodMode::SoftwareOath));
    }
    if !flow.used(Method::TemporaryAccessPass)
        && let Some(row) = state.store.tap_of(user_id).await?
        && usable_tap(state, &row, now).0
    {
        out.push((Method::TemporaryAccessPass, tap_mode(row.usable_once)));
    }
    if !flow.used(Method::Password) && state.store.password_of(user_id).await?.is_some() {
        out.push((Method::Password, MethodMode::Password));
    }
    if !flow.used(Method::Passkey)
        && state.passkeys.available()
        && !state.store.passkeys_of(user_id).await?.is_empty()
    {
        out.push((Method::Passkey, MethodMode::Fido2));
    }
    Ok(out)
}

/// One sign-in step: verify `input` for `method`, then let Conditional Access decide.
pub async fn step(
    state: &AppState,
    client: &Client,
    flow_id: &str,
    token: &str,
    method: Method,
    input: &str,
) -> Result<Value, StepError> {
    if input.is_empty() {
        return Err(invalid(match method {
            Method::Password => "`password` is required.",
            Method::Passkey => "`credential` is required.",
            _ => "`code` is required.",
        }));
    }
    let now = state.now();
    let (mut flow, old_body) = load_flow(state, flow_id, token, now).await?;
    if flow.used(method) {
        return Err(invalid(format!("This sign-in already passed the `{}` step.", method.name())));
    }
    if method == Method::Totp && flow.steps.is_empty() {
        return Err(invalid(
            "Sign in with a password or a Temporary Access Pass before the verification code.",
        ));
    }
    let facts = facts(state, &flow);
    let familiar = match &facts.user {
        Some(u) => state.store.familiar_networks(&u.id).await?,
        None => Vec::new(),
    };
    let scope = lockout::scope_of(client.ip, &familiar);
    let cid = flow.correlation_id.clone();

    // Locked: refuse before looking at the credential, so a right one is not revealed.
    if let Some(until) = locked(&state.store.lockout_states(&flow.lockout_key).await?, scope, now) {
        let refusal = lock_refusal(until, now, &cid);
        let row = attempt(&flow, &facts, client, now, method).failed(&refusal, false);
        let mut w = state.store.begin().await?;
        w.insert_signin_log(&row).await?;
        w.commit(now, &[], &[]).await?;
        return Err(refused(refusal));
    }

    let checked = check(state, &flow, &facts, method, input, now).await?;
    let user_id = facts.user.as_ref().map(|u| u.id.clone());
    let available = match (&checked, &user_id) {
        (
            Checked::Password | Checked::Tap(_) | Checked::Totp { .. } | Checked::Passkey { .. },
            Some(id),
        ) => available(state, &flow, id, now).await?,
        _ => Vec::new(),
    };

    let mut w = state.store.begin().await?;
    let states = w.lock_lockout_states(&flow.lockout_key).await?;
    if let Some(until) = locked(&states, scope, now) {
        let refusal = lock_refusal(until, now, &cid);
        w.insert_signin_log(&attempt(&flow, &facts, client, now, method).failed(&refusal, false))
            .await?;
        w.commit(now, &[], &[]).await?;
        return Err(refused(refusal));
    }
    // A failure counts against the scope the attempt came from.
    let failure = lockout::record_failure(
        if scope == Scope::Familiar { &states.0 } else { &states.1 },
        &lockout_policy(state),
        scope,
        now,
    );
    match checked {
        Checked::Wrong(refusal) => {
            w.put_lockout_state(&flow.lockout_key, scope, &failure).await?;
            w.insert_signin_log(
                &attempt(&flow, &facts, client, now, method).failed(&refusal, false),
            )
            .await?;
            w.commit(now, &[], &[]).await?;
            return Err(refused(refusal));
        }
        Checked::Unusable(refusal) => {
            w.insert_signin_log(
                &attempt(&flow, &facts, client, now, method).failed(&refusal, true),
            )
            .await?;
            w.commit(now, &[], &[]).await?;
            return Err(refused(refusal));
        }
        Checked::Tap(row) => {
            // The one race-free moment: of two sign-ins with one one-time pass, one wins.
            if !w.consume_tap(&row.id, now).await? {
                let refusal = tap_refusal("OneTimeUsed", &row, &cid);
                w.insert_signin_log(
                    &attempt(&flow, &facts, client, now, method).failed(&refusal, true),
                )
                .await?;
                w.commit(now, &[], &[]).await?;
                return Err(refused(refusal));
            }
            flow.tap = Some(TapUse {
                id: row.id.clone(),
                end: tap::end_of(row.start_at, row.lifetime_minutes),
                one_time: row.usable_once,
            });
        }
        Checked::Totp { method_id, step } => {
            if !w.accept_totp_step(&method_id, step).await? {
                // Another sign-in used this code a moment ago.
                let refusal = totp_refusal(totp::TotpError::Replayed, &cid);
                w.put_lockout_state(&flow.lockout_key, scope, &failure).await?;
                w.insert_signin_log(
                    &attempt(&flow, &facts, client, now, method).failed(&refusal, false),
                )
                .await?;
                w.commit(now, &[], &[]).await?;
                return Err(refused(refusal));
            }
        }
        Checked::Passkey { id, passkey } => {
            w.touch_passkey(&id, &passkey, now).await?;
        }
        Checked::Password => {}
    }
    let (Some(user), Some(user_id)) = (facts.user.as_ref(), user_id) else {
        return Err(StepError::Store(StoreError::Corrupt("a credential matched no user".into())));
    };
    flow.steps.push(Step { method: method.name().to_owned(), at: now });
    let log = attempt(&flow, &facts, client, now, method);

    if !user.enabled {
        let refusal = Refusal::new(
            403,
            code::DISABLED,
            "The user account is disabled. Contact your administrator.",
            &cid,
        );
        if !w.finish_flow(&flow.id, &old_body).await? {
            return Err(StepError::Conflict);
        }
        w.insert_signin_log(&log.failed(&refusal, true)).await?;
        w.commit(now, &[], &[]).await?;
        return Err(refused(refusal));
    }

    let request = request_of(&flow, &user_id, client, &facts.device);
    let snapshot = state.snapshot_at(now).await?;
    let evaluated = judge(&snapshot, &request, flow.modes(), &available);
    let policies_json = |p: &[Named]| -> Value {
        p.iter().map(|(id, name)| json!({"id": id, "displayName": name})).collect()
    };

    match evaluated.verdict {
        Verdict::Blocked { ref policies } => {
            let (id, name) = policies.first().cloned().unwrap_or_default();
            let refusal = Refusal::new(
                403,
                code::BLOCKED_BY_CA,
                format!(
                    "Access has been blocked by Conditional Access policies. The access policy does \
                     not allow token issuance: blocked by policy '{name}' ({id})."
                ),
                &cid,
            )
            .with("policy", json!({"id": id, "displayName": name}))
            .with("policies", policies_json(policies));
            finish(&mut w, &flow, &old_body).await?;
            w.insert_signin_log(&log.decided(&refusal_status(&refusal), &evaluated)).await?;
            w.commit(now, &[], &[]).await?;
            Err(refused(refusal))
        }
        Verdict::Unsatisfiable { code, ref reason, ref policies } => {
            let (id, name) = policies.first().cloned().unwrap_or_default();
            let refusal = Refusal::new(403, code, reason.clone(), &cid)
                .with("policy", json!({"id": id, "displayName": name}))
                .with("policies", policies_json(policies));
            finish(&mut w, &flow, &old_body).await?;
            w.insert_signin_log(&log.decided(&refusal_status(&refusal), &evaluated)).await?;
            w.commit(now, &[], &[]).await?;
            Err(refused(refusal))
        }
        Verdict::Registration { ref reason, ref policies } => {
            let message = format!(
                "{reason} You have no method that satisfies it yet. Ask an administrator for a \
                 Temporary Access Pass, sign in with it for the user action \
                 registerSecurityInformation, and register the Authenticator app (TOTP)."
            );
            finish(&mut w, &flow, &old_body).await?;
            let status = Status {
                code: code::REGISTRATION_REQUIRED,
                reason: message.clone(),
                details: reason.clone(),
            };
            w.insert_signin_log(&log.decided(&status, &evaluated)).await?;
            w.commit(now, &[], &[]).await?;
            Ok(json!({
                "status": "registrationRequired",
                "errorCode": code::REGISTRATION_REQUIRED,
                "message": message,
                "policies": policies_json(policies),
                "correlationId": cid,
            }))
        }
        Verdict::Challenge { ref methods, ref reason, ref policies } => {
            let body =
                serde_json::to_string(&flow).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if !w.update_flow(&flow.id, &old_body, &body).await? {
                return Err(StepError::Conflict);
            }
            let status = Status {
                code: code::MFA_REQUIRED,
                reason: "Strong authentication is required.".into(),
                details: reason.clone(),
            };
            w.insert_signin_log(&log.decided(&status, &evaluated)).await?;
            w.commit(now, &[], &[]).await?;
            Ok(json!({
                "status": "challenge",
                "flowId": flow.id,
                "methods": methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
                "reason": reason,
                "policies": policies_json(policies),
                "errorCode": code::MFA_REQUIRED,
                "expiresDateTime": time::format(flow.expires_at),
                "correlationId": cid,
            }))
        }
        Verdict::Granted => {
            let mut expires =
                now.saturating_add(state.config.signin.session_minutes.saturating_mul(MINUTE));
            if let Some(sif) = evaluated.sign_in_frequency {
                expires = expires.min(now.saturating_add(sif));
            }
            // A session from a pass never outlives the pass.
            if let Some(t) = &flow.tap {
                expires = expires.min(t.end);
            }
            let methods: Vec<String> = flow.steps.iter().map(|s| s.method.clone()).collect();
            let session = Session {
                id: crate::random::guid(),
                user_id: user_id.clone(),
                kind: SessionKind::SignIn,
                created_at: now,
                expires_at: Some(expires),
                methods: methods.clone(),
                tap_id: flow.tap.as_ref().map(|t| t.id.clone()),
                target: Some(flow.target()),
            };
            let token = crate::random::token("ghs_");
            finish(&mut w, &flow, &old_body).await?;
            w.insert_session(&secret::hash(&token), &session).await?;
            w.touch_familiar_network(&user_id, &lockout::network_of(client.ip), now).await?;
            w.put_lockout_state(&flow.lockout_key, scope, &lockout::record_success()).await?;
            let status = Status { code: 0, reason: String::new(), details: String::new() };
            w.insert_signin_log(&log.decided(&status, &evaluated)).await?;
            w.commit(now, &[], &[]).await?;
            Ok(json!({
                "status": "success",
                "session": {
                    "token": token,
                    "expiresDateTime": time::format(expires),
                    "methods": methods,
                    "target": session.target,
                    "conditionalAccessStatus": evaluated.ca_status,
                },
                "correlationId": cid,
            }))
        }
    }
}

async fn finish(w: &mut Write, flow: &Flow, old_body: &str) -> Result<(), StepError> {
    if w.finish_flow(&flow.id, old_body).await? { Ok(()) } else { Err(StepError::Conflict) }
}

// ---------------------------------------------------------------------------------------------
// The sign-in log

/// `signIn.status`.
struct Status {
    code: u32,
    reason: String,
    details: String,
}

fn refusal_status(r: &Refusal) -> Status {
    Status { code: r.code, reason: r.message.clone(), details: String::new() }
}

fn attempt<'a>(
    flow: &'a Flow,
    facts: &'a Facts,
    client: &'a Client,
    now: Millis,
    method: Method,
) -> Attempt<'a> {
    Attempt { flow, facts, client, now, method }
}

/// One attempt, for its log row.
struct Attempt<'a> {
    flow: &'a Flow,
    facts: &'a Facts,
    client: &'a Client,
    now: Millis,
    method: Method,
}

impl Attempt<'_> {
    /// A row for an attempt that ended before Conditional Access was evaluated.
    fn failed(&self, r: &Refusal, credential_ok: bool) -> SignInLogRow {
        let status = Status { code: r.code, reason: r.message.clone(), details: String::new() };
        self.row(&status, credential_ok, None)
    }

    /// A row for an attempt Conditional Access decided.
    fn decided(&self, status: &Status, e: &Evaluated) -> SignInLogRow {
        self.row(status, true, Some(e))
    }

    fn row(&self, status: &Status, step_ok: bool, e: Option<&Evaluated>) -> SignInLogRow {
        let (flow, facts, client) = (self.flow, self.facts, self.client);
        let user = facts.user.as_ref();
        let (app_id, app_name) = match (&flow.app_id, &flow.user_action) {
            (Some(app), _) => (Some(app.clone()), facts.app_display_name.clone()),
            (None, Some(urn)) if urn.ends_with("registerdevice") => {
                (Some(DEVICE_REGISTRATION.0.to_owned()), Some(DEVICE_REGISTRATION.1.to_owned()))
            }
            (None, Some(_)) => (Some(MY_SIGNINS.0.to_owned()), Some(MY_SIGNINS.1.to_owned())),
            (None, None) => (None, None),
        };
        let upn = user.map_or_else(|| flow.username.clone(), |u| u.upn.clone());
        // Earlier steps of this flow (they succeeded), then this one unless it is already in.
        let mut details: Vec<Value> = flow
            .steps
            .iter()
            .map(|s| match Method::from_name(&s.method) {
                Some(m) => step_detail(m.log_name(), true, s.at, ""),
                None => step_detail(&s.method, true, s.at, ""),
            })
            .collect();
        let this_logged =
            flow.steps.last().is_some_and(|s| s.method == self.method.name() && s.at == self.now);
        if !this_logged {
            details.push(step_detail(
                self.method.log_name(),
                step_ok && status.code == 0,
                self.now,
                &status.reason,
            ));
        }
        let ca_status = e.map_or("notApplied", |e| e.ca_status);
        let d = &facts.device;
        let os = d.operating_system.clone().or_else(|| flow.platform.clone());
        let body = json!({
            "id": crate::random::guid(),
            "createdDateTime": time::format(self.now),
            "userDisplayName": user.map(|u| u.display_name.clone()),
            "userPrincipalName": upn,
            "userId": user.map(|u| u.id.clone()),
            "appId": app_id,
            "appDisplayName": app_name,
            "resourceId": app_id,
            "resourceDisplayName": app_name,
            "ipAddress": client.ip.to_string(),
            "clientAppUsed": client_app_used(&flow.client_app_type),
            "correlationId": flow.correlation_id,
            "conditionalAccessStatus": ca_status,
            "isInteractive": true,
            "riskDetail": "none",
            "riskLevelAggregated": "none",
            "riskLevelDuringSignIn": "none",
            "riskState": "none",
            "riskEventTypes_v2": [],
            "status": {
                "errorCode": status.code,
                "failureReason": if status.code == 0 { Value::Null } else { status.reason.clone().into() },
                "additionalDetails": if status.details.is_empty() { Value::Null } else { status.details.clone().into() },
            },
            "deviceDetail": {
                "deviceId": if facts.device_registered { d.device_id.clone() } else { None },
                "displayName": facts.device_display_name,
                "operatingSystem": os,
                "browser": null,
                "isCompliant": d.is_compliant.unwrap_or(false),
                "isManaged": facts.device_registered && (d.mdm_app_id.is_some() || d.trust_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("serverad"))),
                "trustType": d.trust_type,
            },
            "location": {
                "city": null,
                "state": null,
                "countryOrRegion": client.country,
                "geoCoordinates": null,
            },
            "appliedConditionalAccessPolicies": e.map_or_else(Vec::new, |e| e.applied.clone()),
            "authenticationRequirement": if e.is_some_and(|e| e.mfa_required) { "multiFactorAuthentication" } else { "singleFactorAuthentication" },
            "authenticationDetails": details,
        });
        SignInLogRow {
            id: body.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
            created_at: self.now,
            user_id: user.map(|u| u.id.clone()),
            upn: Some(upn),
            app_id,
            error_code: i64::from(status.code),
            ca_status: ca_status.to_owned(),
            body,
        }
    }
}

fn step_detail(method: &str, succeeded: bool, at: Millis, failure: &str) -> Value {
    json!({
        "authenticationStepDateTime": time::format(at),
        "authenticationMethod": method,
        "authenticationMethodDetail": null,
        "succeeded": succeeded,
        "authenticationStepResultDetail": if succeeded { "Correct credential" } else if failure.is_empty() { "Incorrect credential" } else { failure },
        "authenticationStepRequirement": if method == Method::Totp.log_name() { "Multifactor authentication" } else { "Primary authentication" },
    })
}

/// Graph `clientAppUsed` for a client app type.
fn client_app_used(client_app_type: &str) -> &'static str {
    match client_app_type {
        "browser" => "Browser",
        "mobileAppsAndDesktopClients" => "Mobile Apps and Desktop clients",
        "exchangeActiveSync" | "easSupported" => "Exchange ActiveSync",
        _ => "Other clients",
    }
}

/// The options for a passkey step of flow `flow_id`: the browser's `navigator.credentials.get`
/// input, for the flow's user's passkeys. The ceremony's state is kept for the step.
pub async fn passkey_options(
    state: &AppState,
    flow_id: &str,
    token: &str,
) -> Result<Value, StepError> {
    let now = state.now();
    let (flow, _) = load_flow(state, flow_id, token, now).await?;
    let Some(user) = flow.user_id.clone() else {
        return Err(invalid("This user has no passkey; use another method."));
    };
    match state.passkeys.start_authentication(&state.store, &flow.id, &user, now).await {
        Ok(options) => Ok(json!({"options": options})),
        Err(crate::passkey::PasskeyError::Store(e)) => Err(e.into()),
        Err(e) => Err(invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        // An untrusted peer: its header is ignored.
        assert_eq!(
            client_ip(ip("192.0.2.9"), ["198.51.100.7"].into_iter(), &trusted),
            ip("192.0.2.9")
        );
        // A trusted peer: the right-most address that is not a trusted proxy.
        assert_eq!(
            client_ip(ip("127.0.0.1"), ["198.51.100.7"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                ["203.0.113.5, 198.51.100.7, 10.1.1.1"].into_iter(),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Several headers read as one list, in order.
        assert_eq!(
            client_ip(ip("127.0.0.1"), ["203.0.113.5", "198.51.100.7:4431"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        // Garbage stops the walk at the last hop we could trust.
        assert_eq!(
            client_ip(ip("127.0.0.1"), ["198.51.100.7, nonsense"].into_iter(), &trusted),
            ip("127.0.0.1")
        );
        // No header, or only proxies: the nearest of them.
        assert_eq!(client_ip(ip("127.0.0.1"), std::iter::empty(), &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), ["10.2.2.2"].into_iter(), &trusted), ip("10.2.2.2"));
        // IPv4-mapped peers are IPv4; bracketed IPv6 with a port parses.
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), ["[2001:db8::1]:80"].into_iter(), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(ip("::ffff:192.0.2.1"), ["198.51.100.7"].into_iter(), &[]),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn begin_requests_are_read_strictly() {
        let parse = |v: Value| BeginRequest::from_json(v.as_object().unwrap());
        let ok = parse(json!({"username": " Isaiah@Contoso.example ", "target": {"userAction": "registerSecurityInformation"}}))
            .unwrap();
        assert_eq!(ok.username, "Isaiah@Contoso.example");
        assert_eq!(ok.user_action, Some(UserAction::RegisterSecurityInfo));
        assert_eq!((ok.platform, ok.client_app_type), (None, ClientAppType::Browser));
        let ok = parse(json!({"username": "a", "target": {"appId": "F1000000-0000-4000-8000-000000000001"},
                              "client": {"platform": "iOS", "clientAppType": "mobileAppsAndDesktopClients", "deviceId": "D1"}}))
            .unwrap();
        assert_eq!(ok.app_id.as_deref(), Some("f1000000-0000-4000-8000-000000000001"));
        assert_eq!(ok.platform, Some(Platform::IOS));
        assert_eq!(ok.device_id.as_deref(), Some("d1"));
        for bad in [
            json!({"target": {"appId": "x"}}),
            json!({"username": "a"}),
            json!({"username": "a", "target": {}}),
            json!({"username": "a", "target": {"appId": "x", "userAction": "registerSecurityInformation"}}),
            json!({"username": "a", "target": {"userAction": "fly"}}),
            json!({"username": "a", "target": {"appId": "x"}, "client": {"platform": "all"}}),
            json!({"username": "a", "target": {"appId": "x"}, "client": {"isCompliant": true}}),
            json!({"username": "a", "target": {"appId": "x"}, "password": "p"}),
            json!({"username": 5, "target": {"appId": "x"}}),
        ] {
            assert!(matches!(parse(bad.clone()), Err(StepError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn locks_hold_by_scope() {
        let now = 1_000_000;
        let locked_state = LockState { failures: 0, lockouts: 1, locked_until: now + 10 };
        let free = LockState::default();
        assert_eq!(locked(&(free, locked_state), Scope::Familiar, now), None);
        assert_eq!(locked(&(free, locked_state), Scope::Unfamiliar, now), Some(now + 10));
        assert_eq!(locked(&(locked_state, free), Scope::Unfamiliar, now), Some(now + 10));
        assert_eq!(locked(&(locked_state, free), Scope::Familiar, now + 10), None);
    }

    #[test]
    fn flows_name_their_target() {
        let mut flow = Flow {
            id: "f".into(),
            user_id: None,
            username: "u".into(),
            lockout_key: "k".into(),
            app_id: None,
            user_action: Some("urn:user:registersecurityinfo".into()),
            platform: None,
            client_app_type: "browser".into(),
            device_id: None,
            correlation_id: "c".into(),
            created_at: 0,
            expires_at: 1,
            steps: vec![Step { method: "temporaryAccessPass".into(), at: 0 }],
            tap: Some(TapUse { id: "t".into(), end: 5, one_time: true }),
        };
        assert_eq!(flow.target(), REGISTER_SECURITY_INFO);
        assert_eq!(flow.modes(), MethodSet::of(&[MethodMode::TemporaryAccessPassOneTime]));
        flow.app_id = Some("app".into());
        assert_eq!(flow.target(), "app");
    }
}
