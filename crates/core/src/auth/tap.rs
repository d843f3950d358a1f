//! Temporary Access Pass: the tenant policy (`authenticationMethodConfigurations/TemporaryAccessPass`),
//! who may be issued a pass, what a new pass looks like, and whether a pass works right now.
//!
//! Decisions where Entra's documents are silent:
//! - A pass is refused for a user outside the policy's targets, or while TAP is disabled,
//!   with Entra's observed message and `badRequest` (400).
//! - `startDateTime` may lie in the past (clock skew, scripts), but not more than 30 days (the
//!   longest lifetime a policy allows), and the pass must still be valid when it is issued: a
//!   pass born expired is a mistake the caller should hear about.
//! - Policy PATCH bodies may send integers and booleans as strings (`"60"`, `"true"`), as the
//!   Graph docs do; property names match case-insensitively; `@odata.*` annotations are ignored.
//! - `usability` reports `DisabledByPolicy` before anything else (the admin's switch wins), then
//!   `OneTimeUsed`, `Expired` and `NotYetValid`.

use serde_json::{Map, Value, json};

use crate::time::{MINUTE, Millis};

pub const ODATA_TYPE: &str =
    "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration";
/// The configuration's fixed id.
pub const ID: &str = "TemporaryAccessPass";
/// The pseudo-group every user belongs to.
pub const ALL_USERS: &str = "all_users";

pub const MIN_LENGTH: u32 = 8;
pub const MAX_LENGTH: u32 = 48;
/// Lifetimes any policy may set, in minutes (43200 = 30 days).
pub const MIN_LIFETIME_MINUTES: i64 = 10;
pub const MAX_LIFETIME_MINUTES: i64 = 43_200;
/// How far in the past a `startDateTime` may lie.
pub const MAX_START_IN_PAST: Millis = MAX_LIFETIME_MINUTES * MINUTE;

/// Who may use TAP (`authenticationMethodTarget`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    /// `user` or `group`, lower-case.
    pub target_type: String,
    pub is_registration_required: bool,
}

/// Who is excluded (`excludeTarget`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludeTarget {
    pub id: String,
    /// `user` or `group`, lower-case.
    pub target_type: String,
}

/// The tenant's TAP policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapPolicy {
    pub state_enabled: bool,
    pub include_targets: Vec<Target>,
    pub exclude_targets: Vec<ExcludeTarget>,
    pub default_lifetime_minutes: i64,
    pub default_length: u32,
    pub minimum_lifetime_minutes: i64,
    pub maximum_lifetime_minutes: i64,
    /// `true`: every pass is one-time. `false`: each pass chooses.
    pub is_usable_once: bool,
}

/// Entra's defaults: disabled, targeting all users, 60–480 minutes, 8 characters, multi-use
/// allowed. `DELETE` on the configuration resets to these.
impl Default for TapPolicy {
    fn default() -> TapPolicy {
        TapPolicy {
            state_enabled: false,
            include_targets: vec![Target {
                id: ALL_USERS.to_string(),
                target_type: "group".to_string(),
                is_registration_required: false,
            }],
            exclude_targets: Vec::new(),
            default_lifetime_minutes: 60,
            default_length: 8,
            minimum_lifetime_minutes: 60,
            maximum_lifetime_minutes: 480,
            is_usable_once: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("the body must be a JSON object with `@odata.type`: `{ODATA_TYPE}`")]
    MissingODataType,
    #[error("`@odata.type` is `{0}`; expected `{ODATA_TYPE}`")]
    WrongODataType(String),
    #[error("unknown properties: {}", .0.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))]
    UnknownProperties(Vec<String>),
    #[error("invalid `{property}`: {message}")]
    InvalidProperty { property: String, message: String },
    #[error("invalid lifetimes: {0}")]
    InconsistentPolicy(String),
    #[error("Invalid LifetimeInMinutes specified. The valid range between {min} and {max}.")]
    LifetimeOutOfRange { min: i64, max: i64 },
    #[error(
        "Converged UserCredentialPolicy does not allow creating or updating this authentication \
         method. AuthMethodType [TemporaryAccessPass]."
    )]
    NotAllowedByPolicy,
    #[error("the policy makes every pass one-time; `isUsableOnce` cannot be false")]
    MultiUseNotAllowed,
    #[error("`startDateTime` is more than 30 days in the past")]
    StartTooEarly,
    #[error(
        "the pass would already have expired: `startDateTime` plus `lifetimeInMinutes` is in the past"
    )]
    AlreadyExpired,
}

impl TapError {
    /// A stable code for logs, docs and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            TapError::MissingODataType => "GH-TAP-001",
            TapError::WrongODataType(_) => "GH-TAP-002",
            TapError::UnknownProperties(_) => "GH-TAP-003",
            TapError::InvalidProperty { .. } => "GH-TAP-004",
            TapError::InconsistentPolicy(_) => "GH-TAP-005",
            TapError::LifetimeOutOfRange { .. } => "GH-TAP-006",
            TapError::NotAllowedByPolicy => "GH-TAP-007",
            TapError::MultiUseNotAllowed => "GH-TAP-008",
            TapError::StartTooEarly => "GH-TAP-009",
            TapError::AlreadyExpired => "GH-TAP-010",
        }
    }

    /// The Graph error code; every TAP error is a 400.
    pub fn graph_code(&self) -> &'static str {
        "badRequest"
    }
}

fn invalid(property: &str, message: impl Into<String>) -> TapError {
    TapError::InvalidProperty { property: property.to_string(), message: message.into() }
}

/// An integer, or a string holding one (the docs send `"60"`).
fn int(property: &str, value: &Value) -> Result<i64, TapError> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| invalid(property, format!("expected an integer, got {value}")))
}

/// A boolean, or `"true"`/`"false"` in any case.
fn boolean(property: &str, value: &Value) -> Result<bool, TapError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(invalid(property, format!("expected true or false, got {value}"))),
    }
}

/// `@odata.*` annotations, also on properties (`includeTargets@odata.context`).
fn is_annotation(key: &str) -> bool {
    key.contains("@odata.")
}

/// Matches `@odata.type` with or without `#`, in any case.
fn is_odata_type(value: &Value, expected: &str) -> bool {
    value.as_str().is_some_and(|t| {
        t.trim_start_matches('#').eq_ignore_ascii_case(expected.trim_start_matches('#'))
    })
}

fn target_type(property: &str, value: Option<&Value>) -> Result<String, TapError> {
    match value.and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some(t @ ("user" | "group")) => Ok(t.to_string()),
        _ => Err(invalid(property, "each target needs `targetType` `user` or `group`")),
    }
}

fn target_id(property: &str, value: Option<&Value>) -> Result<String, TapError> {
    match value.and_then(Value::as_str).map(str::trim) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(invalid(property, "each target needs a non-empty string `id`")),
    }
}

/// The target objects of `property`; `allowed` are the keys a target may carry.
fn targets<'a>(
    property: &str,
    value: &'a Value,
    allowed: &[&str],
) -> Result<Vec<&'a Map<String, Value>>, TapError> {
    let Some(items) = value.as_array() else {
        return Err(invalid(property, "expected an array of targets"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(object) = item.as_object() else {
            return Err(invalid(property, "each target must be an object"));
        };
        let unknown: Vec<&String> = object
            .keys()
            .filter(|k| !is_annotation(k) && !allowed.iter().any(|a| a.eq_ignore_ascii_case(k)))
            .collect();
        if let Some(key) = unknown.first() {
            return Err(invalid(property, format!("unknown target property `{key}`")));
        }
        out.push(object);
    }
    Ok(out)
}

/// A key of a target, case-insensitively.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

impl TapPolicy {
    /// The Graph shape, as `GET …/authenticationMethodConfigurations/TemporaryAccessPass` returns it.
    pub fn to_graph(&self) -> Value {
        let include: Vec<Value> = self
            .include_targets
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "targetType": t.target_type,
                    "isRegistrationRequired": t.is_registration_required,
                })
            })
            .collect();
        let exclude: Vec<Value> = self
            .exclude_targets
            .iter()
            .map(|t| json!({"id": t.id, "targetType": t.target_type}))
            .collect();
        json!({
            "@odata.type": ODATA_TYPE,
            "id": ID,
            "state": if self.state_enabled { "enabled" } else { "disabled" },
            "defaultLifetimeInMinutes": self.default_lifetime_minutes,
            "defaultLength": self.default_length,
            "minimumLifetimeInMinutes": self.minimum_lifetime_minutes,
            "maximumLifetimeInMinutes": self.maximum_lifetime_minutes,
            "isUsableOnce": self.is_usable_once,
            "includeTargets": include,
            "excludeTargets": exclude,
        })
    }

    /// Reads a stored [`TapPolicy::to_graph`] value: the defaults, patched with it.
    pub fn from_graph(value: &Value) -> Result<TapPolicy, TapError> {
        TapPolicy::default().apply_patch(value)
    }

    /// Applies a `PATCH` body: properties it leaves out keep their values. The result is
    /// validated as a whole (`minimum <= default <= maximum`).
    pub fn apply_patch(&self, body: &Value) -> Result<TapPolicy, TapError> {
        let object = body.as_object().ok_or(TapError::MissingODataType)?;
        let odata_type = field(object, "@odata.type").ok_or(TapError::MissingODataType)?;
        if !is_odata_type(odata_type, ODATA_TYPE) {
            return Err(TapError::WrongODataType(match odata_type {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }));
        }
        let mut next = self.clone();
        let mut unknown = Vec::new();
        for (key, value) in object {
            if is_annotation(key) {
                continue;
            }
            match key.to_ascii_lowercase().as_str() {
                "id" => {
                    if !value.as_str().is_some_and(|id| id.eq_ignore_ascii_case(ID)) {
                        return Err(invalid("id", format!("must be `{ID}` when present")));
                    }
                }
                "state" => {
                    next.state_enabled =
                        match value.as_str().map(str::to_ascii_lowercase).as_deref() {
                            Some("enabled") => true,
                            Some("disabled") => false,
                            _ => {
                                let message =
                                    format!("expected `enabled` or `disabled`, got {value}");
                                return Err(invalid("state", message));
                            }
                        }
                }
                "defaultlifetimeinminutes" => {
                    next.default_lifetime_minutes = int("defaultLifetimeInMinutes", value)?;
                }
                "minimumlifetimeinminutes" => {
                    next.minimum_lifetime_minutes = int("minimumLifetimeInMinutes", value)?;
                }
                "maximumlifetimeinminutes" => {
                    next.maximum_lifetime_minutes = int("maximumLifetimeInMinutes", value)?;
                }
                "defaultlength" => {
                    let length = int("defaultLength", value)?;
                    next.default_length = u32::try_from(length)
                        .ok()
                        .filter(|l| (MIN_LENGTH..=MAX_LENGTH).contains(l))
                        .ok_or_else(|| {
                            let message = format!(
                                "must be from {MIN_LENGTH} to {MAX_LENGTH} characters, got {length}"
                            );
                            invalid("defaultLength", message)
                        })?;
                }
                "isusableonce" => next.is_usable_once = boolean("isUsableOnce", value)?,
                "includetargets" => {
                    let allowed = ["id", "targetType", "isRegistrationRequired"];
                    next.include_targets = targets("includeTargets", value, &allowed)?
                        .into_iter()
                        .map(|t| {
                            let required = match field(t, "isRegistrationRequired") {
                                None | Some(Value::Null) => false,
                                Some(v) => boolean("includeTargets", v)?,
                            };
                            Ok(Target {
                                id: target_id("includeTargets", field(t, "id"))?,
                                target_type: target_type("includeTargets", field(t, "targetType"))?,
                                is_registration_required: required,
                            })
                        })
                        .collect::<Result<_, TapError>>()?;
                }
                "excludetargets" => {
                    next.exclude_targets = targets("excludeTargets", value, &["id", "targetType"])?
                        .into_iter()
                        .map(|t| {
                            Ok(ExcludeTarget {
                                id: target_id("excludeTargets", field(t, "id"))?,
                                target_type: target_type("excludeTargets", field(t, "targetType"))?,
                            })
                        })
                        .collect::<Result<_, TapError>>()?;
                }
                _ => unknown.push(key.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(TapError::UnknownProperties(unknown));
        }
        next.validate()?;
        Ok(next)
    }

    fn validate(&self) -> Result<(), TapError> {
        let range = MIN_LIFETIME_MINUTES..=MAX_LIFETIME_MINUTES;
        for (name, value) in [
            ("minimumLifetimeInMinutes", self.minimum_lifetime_minutes),
            ("defaultLifetimeInMinutes", self.default_lifetime_minutes),
            ("maximumLifetimeInMinutes", self.maximum_lifetime_minutes),
        ] {
            if !range.contains(&value) {
                let message = format!(
                    "must be from {MIN_LIFETIME_MINUTES} to {MAX_LIFETIME_MINUTES} minutes, got {value}"
                );
                return Err(invalid(name, message));
            }
        }
        let (min, default, max) = (
            self.minimum_lifetime_minutes,
            self.default_lifetime_minutes,
            self.maximum_lifetime_minutes,
        );
        if min > max {
            return Err(TapError::InconsistentPolicy(format!(
                "minimumLifetimeInMinutes ({min}) is greater than maximumLifetimeInMinutes ({max})"
            )));
        }
        if !(min..=max).contains(&default) {
            return Err(TapError::InconsistentPolicy(format!(
                "defaultLifetimeInMinutes ({default}) must lie between minimumLifetimeInMinutes \
                 ({min}) and maximumLifetimeInMinutes ({max})"
            )));
        }
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&self.default_length) {
            return Err(invalid("defaultLength", "must be from 8 to 48 characters"));
        }
        Ok(())
    }
}

/// Is the user a target of the policy? `all_users`, the user's id or one of their groups
/// (transitive) includes them; an exclusion by id or group always wins. Ids compare
/// case-insensitively (GUIDs arrive in either case). The policy's state is not considered.
pub fn in_scope(policy: &TapPolicy, user_id: &str, user_groups_transitive: &[String]) -> bool {
    let hits = |id: &str| {
        id.eq_ignore_ascii_case(user_id)
            || user_groups_transitive.iter().any(|g| g.eq_ignore_ascii_case(id))
    };
    let included =
        policy.include_targets.iter().any(|t| t.id.eq_ignore_ascii_case(ALL_USERS) || hits(&t.id));
    let excluded =
        policy.exclude_targets.iter().any(|t| t.id.eq_ignore_ascii_case(ALL_USERS) || hits(&t.id));
    included && !excluded
}

/// The body of `POST …/authentication/temporaryAccessPassMethods`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// `startDateTime`, or `now` when absent or null.
    pub start: Millis,
    pub lifetime_minutes: Option<i64>,
    pub is_usable_once: Option<bool>,
}

impl IssueRequest {
    /// Reads the body. All fields are optional; the pass itself is generated here, so a
    /// `temporaryAccessPass` value is refused, as are read-only and unknown properties.
    pub fn from_json(body: &Value, now: Millis) -> Result<IssueRequest, TapError> {
        let object = match body {
            Value::Object(o) => o,
            Value::Null => {
                return Ok(IssueRequest {
                    start: now,
                    lifetime_minutes: None,
                    is_usable_once: None,
                });
            }
            _ => return Err(invalid("body", "expected a JSON object")),
        };
        let mut request = IssueRequest { start: now, lifetime_minutes: None, is_usable_once: None };
        let mut unknown = Vec::new();
        for (key, value) in object {
            if is_annotation(key) {
                continue;
            }
            match key.to_ascii_lowercase().as_str() {
                "startdatetime" => {
                    request.start = match value {
                        Value::Null => now,
                        Value::String(s) => crate::time::parse(s).ok_or_else(|| {
                            invalid("startDateTime", format!("`{s}` is not a DateTimeOffset"))
                        })?,
                        _ => {
                            return Err(invalid(
                                "startDateTime",
                                "expected a DateTimeOffset string",
                            ));
                        }
                    }
                }
                "lifetimeinminutes" => {
                    if !value.is_null() {
                        request.lifetime_minutes = Some(int("lifetimeInMinutes", value)?);
                    }
                }
                "isusableonce" => {
                    if !value.is_null() {
                        request.is_usable_once = Some(boolean("isUsableOnce", value)?);
                    }
                }
                "temporaryaccesspass" => {
                    if !value.is_null() {
                        return Err(invalid(
                            "temporaryAccessPass",
                            "the pass is generated by the server; leave it out",
                        ));
                    }
                }
                _ => unknown.push(key.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(TapError::UnknownProperties(unknown));
        }
        Ok(request)
    }
}

/// What to create for an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issue {
    pub start: Millis,
    pub lifetime_minutes: i64,
    pub usable_once: bool,
    /// Characters in the pass: the policy's `defaultLength`.
    pub length: u32,
}

/// Checks a request against the policy and fills in the defaults. The checks run in this
/// order: policy state and scope, one-time use, lifetime, start.
pub fn plan_issue(
    policy: &TapPolicy,
    user_id: &str,
    user_groups_transitive: &[String],
    request: &IssueRequest,
    now: Millis,
) -> Result<Issue, TapError> {
    if !policy.state_enabled || !in_scope(policy, user_id, user_groups_transitive) {
        return Err(TapError::NotAllowedByPolicy);
    }
    let usable_once = match request.is_usable_once {
        Some(false) if policy.is_usable_once => return Err(TapError::MultiUseNotAllowed),
        Some(once) => once,
        None => policy.is_usable_once,
    };
    let lifetime_minutes = request.lifetime_minutes.unwrap_or(policy.default_lifetime_minutes);
    let (min, max) = (policy.minimum_lifetime_minutes, policy.maximum_lifetime_minutes);
    if !(min..=max).contains(&lifetime_minutes) {
        return Err(TapError::LifetimeOutOfRange { min, max });
    }
    if request.start < now.saturating_sub(MAX_START_IN_PAST) {
        return Err(TapError::StartTooEarly);
    }
    if end_of(request.start, lifetime_minutes) <= now {
        return Err(TapError::AlreadyExpired);
    }
    Ok(Issue { start: request.start, lifetime_minutes, usable_once, length: policy.default_length })
}

/// The alphabet passes are drawn from: no `0 O o 1 l I` look-alikes, and only symbols that
/// sit on every common keyboard layout without a dead key and need no escaping in a form.
pub const ALPHABET: &str = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789#%+=@";
const LETTERS: &str = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz";
const DIGITS: &str = "23456789";

/// A pass of `len` characters (clamped to 8..=48) drawn uniformly from [`ALPHABET`], with at
/// least one letter and one digit. `random(n)` must return a uniform value below `n` (from a
/// CSPRNG); an out-of-range value is reduced modulo `n` rather than trusted.
pub fn generate(len: u32, random: &mut impl FnMut(u32) -> u32) -> String {
    let len = len.clamp(MIN_LENGTH, MAX_LENGTH);
    let mut pass: Vec<char> = (0..len).map(|_| pick(ALPHABET, random)).collect();
    // Force one letter and one digit at two distinct random positions, instead of retrying
    // until both appear: it always terminates, whatever `random` returns.
    let letter_at = below(len, random);
    let digit_at = (letter_at + 1 + below(len - 1, random)) % pass.len().max(1);
    if let Some(c) = pass.get_mut(letter_at) {
        *c = pick(LETTERS, random);
    }
    if let Some(c) = pass.get_mut(digit_at) {
        *c = pick(DIGITS, random);
    }
    pass.into_iter().collect()
}

/// A value below `n` (> 0) from the caller's source.
fn below(n: u32, random: &mut impl FnMut(u32) -> u32) -> usize {
    usize::try_from(random(n) % n.max(1)).unwrap_or(0)
}

fn pick(set: &str, random: &mut impl FnMut(u32) -> u32) -> char {
    let n = u32::try_from(set.chars().count()).unwrap_or(1);
    set.chars().nth(below(n, random)).unwrap_or('A')
}

/// When a pass stops working. Sessions signed in with a pass must end by then too.
pub fn end_of(start: Millis, lifetime_minutes: i64) -> Millis {
    start.saturating_add(lifetime_minutes.saturating_mul(MINUTE))
}

/// `isUsable` and `methodUsabilityReason` of a pass at `now`. It is usable from `start`
/// (inclusive) until `end_of(start, lifetime)` (exclusive).
pub fn usability(
    start: Millis,
    lifetime_minutes: i64,
    usable_once: bool,
    used_at: Option<Millis>,
    policy_enabled_and_in_scope: bool,
    now: Millis,
) -> (bool, &'static str) {
    if !policy_enabled_and_in_scope {
        (false, "DisabledByPolicy")
    } else if usable_once && used_at.is_some() {
        (false, "OneTimeUsed")
    } else if now >= end_of(start, lifetime_minutes) {
        (false, "Expired")
    } else if now < start {
        (false, "NotYetValid")
    } else {
        (true, "EnabledByPolicy")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_740_762_723_000; // 2025-02-28T17:12:03Z

    fn patch(body: Value) -> Result<TapPolicy, TapError> {
        TapPolicy::default().apply_patch(&body)
    }

    fn enabled() -> TapPolicy {
        TapPolicy { state_enabled: true, ..TapPolicy::default() }
    }

    fn groups(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_are_entras() {
        let p = TapPolicy::default();
        assert!(!p.state_enabled);
        assert_eq!(p.include_targets.len(), 1);
        assert_eq!(p.include_targets.first().map(|t| t.id.as_str()), Some("all_users"));
        assert_eq!(
            (p.minimum_lifetime_minutes, p.maximum_lifetime_minutes, p.default_lifetime_minutes),
            (60, 480, 60)
        );
        assert_eq!((p.default_length, p.is_usable_once), (8, false));
    }

    #[test]
    fn to_graph_has_the_graph_shape_and_round_trips() {
        let g = TapPolicy::default().to_graph();
        assert_eq!(
            g,
            json!({
                "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration",
                "id": "TemporaryAccessPass",
                "state": "disabled",
                "defaultLifetimeInMinutes": 60,
                "defaultLength": 8,
                "minimumLifetimeInMinutes": 60,
                "maximumLifetimeInMinutes": 480,
                "isUsableOnce": false,
                "includeTargets": [{"id": "all_users", "targetType": "group", "isRegistrationRequired": false}],
                "excludeTargets": []
            })
        );
        let custom = patch(json!({
            "@odata.type": ODATA_TYPE,
            "state": "enabled",
            "includeTargets": [{"id": "g1", "targetType": "group", "isRegistrationRequired": true}],
            "excludeTargets": [{"id": "g2", "targetType": "group"}],
            "minimumLifetimeInMinutes": 30, "defaultLifetimeInMinutes": 120,
            "maximumLifetimeInMinutes": 1440, "defaultLength": 10, "isUsableOnce": true
        }))
        .unwrap();
        assert_eq!(TapPolicy::from_graph(&custom.to_graph()).unwrap(), custom);
    }

    #[test]
    fn patch_keeps_missing_properties_and_is_lenient_on_types() {
        let p = patch(json!({
            "@odata.type": "Microsoft.Graph.TemporaryAccessPassAuthenticationMethodConfiguration",
            "@odata.context": "https://x/$metadata#…",
            "includeTargets@odata.context": "https://x/…",
            "State": "ENABLED",
            "maximumLifetimeInMinutes": "1440",
            "isUsableOnce": "True",
            "id": "temporaryAccessPass"
        }))
        .unwrap();
        assert!(p.state_enabled && p.is_usable_once);
        assert_eq!(p.maximum_lifetime_minutes, 1440);
        assert_eq!(p.minimum_lifetime_minutes, 60);
        assert_eq!(p.include_targets, TapPolicy::default().include_targets);
        // Patching the result again changes only what is sent.
        let q = p.apply_patch(&json!({"@odata.type": ODATA_TYPE, "state": "disabled"})).unwrap();
        assert_eq!(q, TapPolicy { state_enabled: false, ..p });
    }

    #[test]
    fn patch_requires_the_odata_type() {
        assert_eq!(patch(json!({"state": "enabled"})), Err(TapError::MissingODataType));
        assert_eq!(patch(json!([])), Err(TapError::MissingODataType));
        let e = patch(
            json!({"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration"}),
        )
        .unwrap_err();
        assert_eq!(e.code(), "GH-TAP-002");
        assert!(e.to_string().contains("fido2"));
        assert!(patch(json!({"@odata.type": ODATA_TYPE})).is_ok());
    }

    #[test]
    fn patch_names_unknown_properties() {
        let e =
            patch(json!({"@odata.type": ODATA_TYPE, "colour": 1, "state": "enabled", "size": 2}))
                .unwrap_err();
        assert_eq!(e, TapError::UnknownProperties(vec!["colour".into(), "size".into()]));
        assert_eq!(e.to_string(), "unknown properties: `colour`, `size`");
        let e = patch(json!({"@odata.type": ODATA_TYPE, "includeTargets": [{"id": "g", "targetType": "group", "x": 1}]}))
            .unwrap_err();
        assert!(e.to_string().contains("unknown target property `x`"), "{e}");
    }

    #[test]
    fn patch_validates_values() {
        let bad = [
            json!({"defaultLength": 7}),
            json!({"defaultLength": 49}),
            json!({"defaultLength": "ten"}),
            json!({"minimumLifetimeInMinutes": 9}),
            json!({"maximumLifetimeInMinutes": 43_201}),
            json!({"defaultLifetimeInMinutes": 61.5}),
            json!({"state": "on"}),
            json!({"state": true}),
            json!({"isUsableOnce": "yes"}),
            json!({"id": "Fido2"}),
            json!({"includeTargets": {"id": "g"}}),
            json!({"includeTargets": ["g"]}),
            json!({"includeTargets": [{"id": "", "targetType": "group"}]}),
            json!({"includeTargets": [{"id": "g", "targetType": "device"}]}),
            json!({"includeTargets": [{"id": "g", "targetType": "group", "isRegistrationRequired": 3}]}),
            json!({"excludeTargets": [{"id": "g"}]}),
        ];
        for mut body in bad {
            if let Some(o) = body.as_object_mut() {
                o.insert("@odata.type".into(), json!(ODATA_TYPE));
            }
            let e = patch(body.clone()).unwrap_err();
            assert_eq!(e.code(), "GH-TAP-004", "{body}: {e}");
        }
        // Bounds are inclusive.
        let p = patch(json!({"@odata.type": ODATA_TYPE, "defaultLength": 48,
            "minimumLifetimeInMinutes": 10, "defaultLifetimeInMinutes": 10, "maximumLifetimeInMinutes": 43200}))
        .unwrap();
        assert_eq!(
            (p.default_length, p.minimum_lifetime_minutes, p.maximum_lifetime_minutes),
            (48, 10, 43_200)
        );
        assert!(patch(json!({"@odata.type": ODATA_TYPE, "defaultLength": "8"})).is_ok());
    }

    #[test]
    fn patch_checks_min_default_max_together() {
        let e =
            patch(json!({"@odata.type": ODATA_TYPE, "minimumLifetimeInMinutes": 500})).unwrap_err();
        assert_eq!(e.code(), "GH-TAP-005");
        assert!(
            e.to_string().contains("(500) is greater than maximumLifetimeInMinutes (480)"),
            "{e}"
        );
        let e =
            patch(json!({"@odata.type": ODATA_TYPE, "defaultLifetimeInMinutes": 30})).unwrap_err();
        assert!(e.to_string().contains("defaultLifetimeInMinutes (30) must lie between"), "{e}");
        // Moving all three at once is fine, whatever the order of keys.
        assert!(
            patch(json!({"@odata.type": ODATA_TYPE, "defaultLifetimeInMinutes": 20,
            "maximumLifetimeInMinutes": 30, "minimumLifetimeInMinutes": 15}))
            .is_ok()
        );
    }

    #[test]
    fn scope_includes_and_excludes() {
        let mut p = enabled();
        assert!(in_scope(&p, "u1", &[]));
        p.include_targets = vec![Target {
            id: "G1".into(),
            target_type: "group".into(),
            is_registration_required: false,
        }];
        assert!(!in_scope(&p, "u1", &groups(&["g2"])));
        assert!(in_scope(&p, "u1", &groups(&["g2", "g1"])));
        p.include_targets.push(Target {
            id: "u2".into(),
            target_type: "user".into(),
            is_registration_required: false,
        });
        assert!(in_scope(&p, "U2", &[]));
        p.exclude_targets = vec![ExcludeTarget { id: "x".into(), target_type: "group".into() }];
        assert!(!in_scope(&p, "u1", &groups(&["g1", "x"])));
        p.exclude_targets.push(ExcludeTarget { id: "u2".into(), target_type: "user".into() });
        assert!(!in_scope(&p, "u2", &[]));
        // The state is not part of scope.
        assert!(in_scope(&TapPolicy::default(), "anyone", &[]));
    }

    #[test]
    fn reads_issue_requests() {
        let r = IssueRequest::from_json(&json!({}), NOW).unwrap();
        assert_eq!(r, IssueRequest { start: NOW, lifetime_minutes: None, is_usable_once: None });
        assert_eq!(IssueRequest::from_json(&Value::Null, NOW).unwrap(), r);
        let r = IssueRequest::from_json(
            &json!({
                "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
                "startDateTime": "2025-03-01T08:00:00+00:00",
                "lifetimeInMinutes": "240",
                "isUsableOnce": true,
                "temporaryAccessPass": null
            }),
            NOW,
        )
        .unwrap();
        assert_eq!(r.start, crate::time::parse("2025-03-01T08:00:00Z").unwrap());
        assert_eq!((r.lifetime_minutes, r.is_usable_once), (Some(240), Some(true)));
        let r = IssueRequest::from_json(
            &json!({"startDateTime": null, "lifetimeInMinutes": null}),
            NOW,
        )
        .unwrap();
        assert_eq!((r.start, r.lifetime_minutes), (NOW, None));
    }

    #[test]
    fn refuses_bad_issue_requests() {
        let read = |v: Value| IssueRequest::from_json(&v, NOW).unwrap_err();
        assert!(
            read(json!({"temporaryAccessPass": "mine"}))
                .to_string()
                .contains("generated by the server")
        );
        assert_eq!(
            read(json!({"isUsable": true, "id": "x"})),
            TapError::UnknownProperties(vec!["isUsable".into(), "id".into()])
        );
        assert!(read(json!({"startDateTime": "tomorrow"})).to_string().contains("`tomorrow`"));
        assert!(read(json!({"startDateTime": 5})).to_string().contains("startDateTime"));
        assert!(read(json!({"lifetimeInMinutes": "1h"})).to_string().contains("lifetimeInMinutes"));
        assert!(read(json!({"isUsableOnce": 1})).to_string().contains("isUsableOnce"));
        assert_eq!(read(json!("x")).code(), "GH-TAP-004");
    }

    fn plan(policy: &TapPolicy, body: Value) -> Result<Issue, TapError> {
        let request = IssueRequest::from_json(&body, NOW)?;
        plan_issue(policy, "u1", &groups(&["g1"]), &request, NOW)
    }

    #[test]
    fn plans_with_policy_defaults() {
        let issue = plan(&enabled(), json!({})).unwrap();
        assert_eq!(
            issue,
            Issue { start: NOW, lifetime_minutes: 60, usable_once: false, length: 8 }
        );
        let once = TapPolicy { is_usable_once: true, default_length: 12, ..enabled() };
        let issue = plan(&once, json!({"lifetimeInMinutes": 480})).unwrap();
        assert_eq!(
            issue,
            Issue { start: NOW, lifetime_minutes: 480, usable_once: true, length: 12 }
        );
        assert!(plan(&enabled(), json!({"isUsableOnce": true})).unwrap().usable_once);
    }

    #[test]
    fn refuses_outside_the_policy_with_entras_messages() {
        let e = plan(&TapPolicy::default(), json!({})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Converged UserCredentialPolicy does not allow creating or updating this authentication method. AuthMethodType [TemporaryAccessPass]."
        );
        assert_eq!(e.graph_code(), "badRequest");
        let mut scoped = enabled();
        scoped.exclude_targets =
            vec![ExcludeTarget { id: "g1".into(), target_type: "group".into() }];
        assert_eq!(plan(&scoped, json!({})), Err(TapError::NotAllowedByPolicy));

        for lifetime in [59, 481] {
            let e = plan(&enabled(), json!({"lifetimeInMinutes": lifetime})).unwrap_err();
            assert_eq!(
                e.to_string(),
                "Invalid LifetimeInMinutes specified. The valid range between 60 and 480."
            );
        }
        assert!(plan(&enabled(), json!({"lifetimeInMinutes": 60})).is_ok());
        assert!(plan(&enabled(), json!({"lifetimeInMinutes": 480})).is_ok());

        let once = TapPolicy { is_usable_once: true, ..enabled() };
        assert_eq!(plan(&once, json!({"isUsableOnce": false})), Err(TapError::MultiUseNotAllowed));
    }

    #[test]
    fn start_may_be_in_the_past_within_limits() {
        let at = |ms: Millis| json!({"startDateTime": crate::time::format(ms), "lifetimeInMinutes": 480});
        assert!(plan(&enabled(), at(NOW - 479 * MINUTE)).is_ok());
        assert_eq!(plan(&enabled(), at(NOW - 480 * MINUTE)), Err(TapError::AlreadyExpired));
        let long = TapPolicy { maximum_lifetime_minutes: 43_200, ..enabled() };
        let at = |ms: Millis| json!({"startDateTime": crate::time::format(ms), "lifetimeInMinutes": 43_200});
        assert_eq!(plan(&long, at(NOW - MAX_START_IN_PAST - 1)), Err(TapError::StartTooEarly));
        assert_eq!(plan(&long, at(NOW - MAX_START_IN_PAST)), Err(TapError::AlreadyExpired));
        assert!(plan(&long, at(NOW - MAX_START_IN_PAST + 1)).is_ok());
        // Any future start is fine.
        assert!(plan(&enabled(), json!({"startDateTime": "2030-01-01T00:00:00Z"})).is_ok());
    }

    /// A deterministic stand-in for a CSPRNG.
    fn lcg(seed: u64) -> impl FnMut(u32) -> u32 {
        let mut state = seed;
        move |n| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % u64::from(n)) as u32
        }
    }

    #[test]
    fn generated_passes_use_the_alphabet_and_hold_a_letter_and_a_digit() {
        for seed in 0..300 {
            let mut random = lcg(seed);
            let len = 8 + (seed as u32 % 41);
            let pass = generate(len, &mut random);
            assert_eq!(pass.chars().count(), len as usize);
            assert!(pass.chars().all(|c| ALPHABET.contains(c)), "{pass}");
            assert!(pass.chars().any(|c| c.is_ascii_alphabetic()), "{pass}");
            assert!(pass.chars().any(|c| c.is_ascii_digit()), "{pass}");
        }
        for look_alike in ['0', 'O', 'o', '1', 'l', 'I'] {
            assert!(!ALPHABET.contains(look_alike));
        }
    }

    #[test]
    fn generate_survives_a_broken_random_source_and_clamps_length() {
        // Always 0: the pass is still valid.
        let pass = generate(8, &mut |_| 0);
        assert_eq!(pass.len(), 8);
        assert!(
            pass.chars().any(|c| c.is_ascii_digit())
                && pass.chars().any(|c| c.is_ascii_alphabetic())
        );
        // Out of range values are reduced, not trusted.
        let pass = generate(10, &mut |_| u32::MAX);
        assert!(pass.chars().all(|c| ALPHABET.contains(c)));
        assert!(
            pass.chars().any(|c| c.is_ascii_digit())
                && pass.chars().any(|c| c.is_ascii_alphabetic())
        );
        assert_eq!(generate(1, &mut lcg(1)).len(), 8);
        assert_eq!(generate(1000, &mut lcg(1)).len(), 48);
    }

    #[test]
    fn generated_passes_spread_over_the_alphabet() {
        let mut random = lcg(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.extend(generate(16, &mut random).chars());
        }
        assert_eq!(seen.len(), ALPHABET.chars().count());
    }

    #[test]
    fn usability_reasons_and_boundaries() {
        let start = NOW;
        let end = end_of(start, 60);
        assert_eq!(end, start + 3_600_000);
        assert_eq!(usability(start, 60, false, None, true, start - 1), (false, "NotYetValid"));
        assert_eq!(usability(start, 60, false, None, true, start), (true, "EnabledByPolicy"));
        assert_eq!(usability(start, 60, false, None, true, end - 1), (true, "EnabledByPolicy"));
        assert_eq!(usability(start, 60, false, None, true, end), (false, "Expired"));
        assert_eq!(
            usability(start, 60, true, Some(start), true, start + 1),
            (false, "OneTimeUsed")
        );
        // A multi-use pass stays usable after use.
        assert_eq!(
            usability(start, 60, false, Some(start), true, start + 1),
            (true, "EnabledByPolicy")
        );
        assert_eq!(usability(start, 60, false, None, false, start), (false, "DisabledByPolicy"));
    }

    #[test]
    fn usability_precedence() {
        let (start, end) = (NOW, end_of(NOW, 60));
        // Policy first, then one-time use, then expiry, then not-yet-valid.
        assert_eq!(
            usability(start, 60, true, Some(start), false, end),
            (false, "DisabledByPolicy")
        );
        assert_eq!(usability(start, 60, true, Some(start), true, end), (false, "OneTimeUsed"));
        assert_eq!(usability(start, 60, false, None, true, end + 1), (false, "Expired"));
        assert_eq!(end_of(i64::MAX - 1, 60), i64::MAX);
    }
}
