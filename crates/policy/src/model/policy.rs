//! The Conditional Access policy, read from its Graph JSON into a validated, typed form.
//!
//! The raw JSON object is kept beside the typed view: export returns it unchanged, so fields we
//! do not model (beta additions, annotations, actions) survive an import/export round trip.

use serde_json::{Map, Value};

use super::enums::*;
use crate::device_filter::DeviceFilterRule;
use crate::json::{FieldError, FieldResult, JsonPath, Obj, enum_value, normalize_id};

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub display_name: String,
    pub state: PolicyState,
    pub conditions: Conditions,
    pub grant: Option<GrantControls>,
    pub session: Option<SessionControls>,
    /// The policy exactly as it was read (plus `id` when one was assigned).
    pub raw: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conditions {
    pub users: Option<UsersCondition>,
    pub client_applications: Option<ClientApplicationsCondition>,
    pub applications: ApplicationsCondition,
    /// Empty = every client app type.
    pub client_app_types: Vec<ClientAppType>,
    pub platforms: Option<PlatformsCondition>,
    pub locations: Option<LocationsCondition>,
    pub devices: Option<DevicesCondition>,
    pub sign_in_risk_levels: Vec<RiskLevel>,
    pub user_risk_levels: Vec<RiskLevel>,
    pub service_principal_risk_levels: Vec<RiskLevel>,
    pub insider_risk_levels: Vec<InsiderRiskLevel>,
    pub authentication_flows: Vec<TransferMethod>,
    /// Conditions Gatehouse cannot decide from a sign-in (deprecated `times`, agent identities…):
    /// a policy that uses one gets `notEnoughInformation` rather than a guess.
    pub undecidable: Vec<Undecidable>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecidable {
    Times,
    ApplicationFilter,
    ServicePrincipalFilter,
    AgentIdRisk,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsersCondition {
    pub include_users: Vec<UserRef>,
    pub exclude_users: Vec<UserRef>,
    pub include_groups: Vec<String>,
    pub exclude_groups: Vec<String>,
    pub include_roles: Vec<String>,
    pub exclude_roles: Vec<String>,
    pub include_guests: Option<GuestsOrExternalUsers>,
    pub exclude_guests: Option<GuestsOrExternalUsers>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    All,
    None,
    /// The legacy "all guest and external users" choice: every external type, every tenant.
    GuestsOrExternalUsers,
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestsOrExternalUsers {
    pub types: GuestTypes,
    pub tenants: ExternalTenants,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalTenants {
    All,
    Enumerated(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientApplicationsCondition {
    /// Service principal app ids, or `All` / `ServicePrincipalsInMyTenant`.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplicationsCondition {
    pub include_applications: Vec<AppRef>,
    pub exclude_applications: Vec<AppRef>,
    pub include_user_actions: Vec<UserAction>,
    pub include_auth_contexts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRef {
    All,
    None,
    Office365,
    MicrosoftAdminPortals,
    /// Agent resources (preview); Gatehouse has none, so it matches no sign-in.
    AllAgentIdResources,
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformsCondition {
    pub include: Vec<Platform>,
    pub exclude: Vec<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationsCondition {
    pub include: Vec<LocationRef>,
    pub exclude: Vec<LocationRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationRef {
    All,
    AllTrusted,
    Id(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DevicesCondition {
    pub filter: Option<(FilterMode, DeviceFilterRule)>,
    /// Deprecated `includeDeviceStates`/`excludeDeviceStates` (`All`, `Compliant`, `DomainJoined`).
    pub include_states: Vec<String>,
    pub exclude_states: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantControls {
    pub operator: GrantOperator,
    pub built_in: Vec<BuiltInControl>,
    pub custom_factors: Vec<String>,
    pub terms_of_use: Vec<String>,
    pub authentication_strength: Option<StrengthRef>,
}

impl GrantControls {
    pub fn blocks(&self) -> bool {
        self.built_in.contains(&BuiltInControl::Block)
    }
}

/// A reference to an authentication strength; exports may embed the whole strength object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrengthRef {
    pub id: String,
    pub embedded: Option<super::strength::AuthenticationStrength>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionControls {
    pub application_enforced_restrictions: bool,
    pub cloud_app_security: Option<String>,
    pub sign_in_frequency: Option<SignInFrequency>,
    pub persistent_browser: Option<PersistentBrowser>,
    pub disable_resilience_defaults: bool,
    pub continuous_access_evaluation: Option<String>,
    pub secure_sign_in_session: bool,
}

impl SessionControls {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInFrequency {
    EveryTime,
    /// Re-authentication interval in hours.
    Hours(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistentBrowser {
    Always,
    Never,
}

/// A problem that does not make the policy unreadable but that an admin should see.
pub type Notes = Vec<(JsonPath, String)>;

pub fn parse_policy(obj: Obj<'_>, id: String, notes: &mut Notes) -> FieldResult<Policy> {
    let display_name = obj.string("displayName")?.unwrap_or_default().to_owned();
    let state_raw = obj.required_string("state")?;
    let state = enum_value(state_raw, POLICY_STATES, &obj.path.key("state"), "policy state")?;
    let (cond, cond_path) = obj
        .object("conditions")?
        .ok_or_else(|| FieldError::new(&obj.path.key("conditions"), "is required"))?;
    let conditions = parse_conditions(Obj { map: cond, path: &cond_path }, notes)?;
    let grant = match obj.object("grantControls")? {
        Some((m, p)) => parse_grant(Obj { map: m, path: &p }, notes)?,
        None => None,
    };
    let session = match obj.object("sessionControls")? {
        Some((m, p)) => Some(parse_session(Obj { map: m, path: &p })?).filter(|s| !s.is_empty()),
        None => None,
    };
    let mut raw = obj.map.clone();
    if !raw.contains_key("id") {
        raw.insert("id".into(), Value::String(id.clone()));
    }
    Ok(Policy { id, display_name, state, conditions, grant, session, raw })
}

fn parse_conditions(c: Obj<'_>, notes: &mut Notes) -> FieldResult<Conditions> {
    let users = match c.object("users")? {
        Some((m, p)) => Some(parse_users(Obj { map: m, path: &p })?),
        None => None,
    };
    let mut sp_filter = false;
    let client_applications = match c.object("clientApplications")? {
        Some((m, p)) => {
            let o = Obj { map: m, path: &p };
            let include = ids(o.strings("includeServicePrincipals")?);
            // Agent identities (`includeAgentIdServicePrincipals`) are not service principals
            // Gatehouse has: such a policy targets no workload identity here.
            let exclude = ids(o.strings("excludeServicePrincipals")?);
            if !o.is_absent("servicePrincipalFilter") {
                sp_filter = true;
                notes.push((
                    p.key("servicePrincipalFilter"),
                    "service principal filters are not evaluated; the condition is undecidable"
                        .into(),
                ));
            }
            Some(ClientApplicationsCondition { include, exclude })
        }
        None => None,
    };
    if users.is_none() && client_applications.is_none() {
        return Err(FieldError::new(
            &c.path.key("users"),
            "is required (or `clientApplications` for workload identities)",
        ));
    }
    let (apps, apps_path) = c
        .object("applications")?
        .ok_or_else(|| FieldError::new(&c.path.key("applications"), "is required"))?;
    let (applications, app_filter) = parse_applications(Obj { map: apps, path: &apps_path })?;

    let client_app_types = enum_list(c, "clientAppTypes", CLIENT_APP_TYPES, "client app type")?;
    let client_app_types =
        if client_app_types.contains(&ClientAppType::All) { Vec::new() } else { client_app_types };

    let platforms = match c.object("platforms")? {
        Some((m, p)) => {
            let o = Obj { map: m, path: &p };
            let mut include = enum_list(o, "includePlatforms", PLATFORMS, "device platform")?;
            let exclude = enum_list(o, "excludePlatforms", PLATFORMS, "device platform")?;
            // Only exclusions configured: the includes are all platforms (not configured = all).
            if include.is_empty() && !exclude.is_empty() {
                include.push(Platform::All);
            }
            (!include.is_empty()).then_some(PlatformsCondition { include, exclude })
        }
        None => None,
    };
    let locations = match c.object("locations")? {
        Some((m, p)) => {
            let o = Obj { map: m, path: &p };
            let mut include = location_refs(o.strings("includeLocations")?);
            let exclude = location_refs(o.strings("excludeLocations")?);
            // Only exclusions configured: the includes are any location.
            if include.is_empty() && !exclude.is_empty() {
                include.push(LocationRef::All);
            }
            (!include.is_empty()).then_some(LocationsCondition { include, exclude })
        }
        None => None,
    };
    let devices = match c.object("devices")? {
        Some((m, p)) => parse_devices(Obj { map: m, path: &p })?,
        None => None,
    };
    let devices = match (devices, c.object("deviceStates")?) {
        (d, None) => d,
        (d, Some((m, p))) => {
            let o = Obj { map: m, path: &p };
            let mut d = d.unwrap_or(DevicesCondition {
                filter: None,
                include_states: Vec::new(),
                exclude_states: Vec::new(),
            });
            d.include_states.extend(o.strings("includeStates")?.iter().map(|s| s.to_string()));
            d.exclude_states.extend(o.strings("excludeStates")?.iter().map(|s| s.to_string()));
            Some(d)
        }
    };

    let mut undecidable = Vec::new();
    if sp_filter {
        undecidable.push(Undecidable::ServicePrincipalFilter);
    }
    if app_filter {
        undecidable.push(Undecidable::ApplicationFilter);
    }
    if !c.is_absent("times") {
        notes.push((
            c.path.key("times"),
            "the deprecated `times` condition is not evaluated; the policy is undecidable".into(),
        ));
        undecidable.push(Undecidable::Times);
    }
    if !c.is_absent("agentIdRiskLevels") {
        undecidable.push(Undecidable::AgentIdRisk);
    }

    Ok(Conditions {
        users,
        client_applications,
        applications,
        client_app_types,
        platforms,
        locations,
        devices,
        sign_in_risk_levels: enum_list(c, "signInRiskLevels", RISK_LEVELS, "risk level")?,
        user_risk_levels: enum_list(c, "userRiskLevels", RISK_LEVELS, "risk level")?,
        service_principal_risk_levels: enum_list(
            c,
            "servicePrincipalRiskLevels",
            RISK_LEVELS,
            "risk level",
        )?,
        insider_risk_levels: enum_flags(
            c,
            "insiderRiskLevels",
            INSIDER_RISK_LEVELS,
            "insider risk level",
        )?,
        authentication_flows: match c.object("authenticationFlows")? {
            Some((m, p)) => {
                let o = Obj { map: m, path: &p };
                enum_flags(o, "transferMethods", TRANSFER_METHODS, "transfer method")?
                    .into_iter()
                    .filter(|t| *t != TransferMethod::None)
                    .collect()
            }
            None => Vec::new(),
        },
        undecidable,
    })
}

fn parse_users(o: Obj<'_>) -> FieldResult<UsersCondition> {
    let user_refs = |key: &str| -> FieldResult<Vec<UserRef>> {
        Ok(o.strings(key)?
            .into_iter()
            .map(|s| match s.trim() {
                x if x.eq_ignore_ascii_case("All") => UserRef::All,
                x if x.eq_ignore_ascii_case("None") => UserRef::None,
                x if x.eq_ignore_ascii_case("GuestsOrExternalUsers") => {
                    UserRef::GuestsOrExternalUsers
                }
                x => UserRef::Id(normalize_id(x)),
            })
            .collect())
    };
    Ok(UsersCondition {
        include_users: user_refs("includeUsers")?,
        exclude_users: user_refs("excludeUsers")?,
        include_groups: ids(o.strings("includeGroups")?),
        exclude_groups: ids(o.strings("excludeGroups")?),
        include_roles: ids(o.strings("includeRoles")?),
        exclude_roles: ids(o.strings("excludeRoles")?),
        include_guests: parse_guests(o, "includeGuestsOrExternalUsers")?,
        exclude_guests: parse_guests(o, "excludeGuestsOrExternalUsers")?,
    })
}

fn parse_guests(o: Obj<'_>, key: &str) -> FieldResult<Option<GuestsOrExternalUsers>> {
    let Some((m, p)) = o.object(key)? else {
        return Ok(None);
    };
    let g = Obj { map: m, path: &p };
    let mut types = GuestTypes::NONE;
    let tpath = p.key("guestOrExternalUserTypes");
    for name in g.flags("guestOrExternalUserTypes")? {
        types = types.with(enum_value(name, GUEST_TYPES, &tpath, "guest or external user type")?);
    }
    let tenants = match g.object("externalTenants")? {
        None => ExternalTenants::All,
        Some((tm, tp)) => {
            let t = Obj { map: tm, path: &tp };
            // Without `membershipKind`, the type or a `members` list says it is an enumeration:
            // reading it as "all tenants" would widen an exclusion.
            let enumerated_type =
                crate::json::odata_type(tm).is_some_and(|t| t.contains("enumerated"));
            let kind = match t.string("membershipKind")? {
                Some(k) => k,
                None if enumerated_type || !t.is_absent("members") => "enumerated",
                None => "all",
            };
            if kind.eq_ignore_ascii_case("enumerated") {
                ExternalTenants::Enumerated(ids(t.strings("members")?))
            } else if kind.eq_ignore_ascii_case("all") {
                ExternalTenants::All
            } else {
                return Err(FieldError::new(
                    &tp.key("membershipKind"),
                    format!("`{kind}` is not a valid membership kind (expected all or enumerated)"),
                ));
            }
        }
    };
    if types == GuestTypes::NONE {
        return Ok(None);
    }
    Ok(Some(GuestsOrExternalUsers { types, tenants }))
}

/// Returns the condition and whether an application filter (custom security attributes) is set.
fn parse_applications(o: Obj<'_>) -> FieldResult<(ApplicationsCondition, bool)> {
    let app_refs = |key: &str| -> FieldResult<Vec<AppRef>> {
        Ok(o.strings(key)?
            .into_iter()
            .map(|s| match s.trim() {
                x if x.eq_ignore_ascii_case("All") => AppRef::All,
                x if x.eq_ignore_ascii_case("None") => AppRef::None,
                x if x.eq_ignore_ascii_case("Office365") => AppRef::Office365,
                x if x.eq_ignore_ascii_case("MicrosoftAdminPortals") => {
                    AppRef::MicrosoftAdminPortals
                }
                x if x.eq_ignore_ascii_case("AllAgentIdResources") => AppRef::AllAgentIdResources,
                x => AppRef::Id(normalize_id(x)),
            })
            .collect())
    };
    let actions_path = o.path.key("includeUserActions");
    let include_user_actions = o
        .strings("includeUserActions")?
        .into_iter()
        .enumerate()
        .map(|(i, s)| enum_value(s, USER_ACTIONS, &actions_path.index(i), "user action"))
        .collect::<FieldResult<Vec<_>>>()?;
    let include_auth_contexts = o
        .strings("includeAuthenticationContextClassReferences")?
        .into_iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let filter = !o.is_absent("applicationFilter");
    Ok((
        ApplicationsCondition {
            include_applications: app_refs("includeApplications")?,
            exclude_applications: app_refs("excludeApplications")?,
            include_user_actions,
            include_auth_contexts,
        },
        filter,
    ))
}

fn parse_devices(o: Obj<'_>) -> FieldResult<Option<DevicesCondition>> {
    let filter = match o.object("deviceFilter")? {
        None => None,
        Some((m, p)) => {
            let f = Obj { map: m, path: &p };
            let mode = enum_value(
                f.required_string("mode")?,
                FILTER_MODES,
                &p.key("mode"),
                "filter mode",
            )?;
            let rule_text = f.required_string("rule")?;
            let rule = DeviceFilterRule::parse(rule_text).map_err(|e| {
                FieldError::new(&p.key("rule"), format!("invalid device filter: {e}"))
            })?;
            Some((mode, rule))
        }
    };
    let include_states: Vec<String> =
        o.strings("includeDeviceStates")?.iter().map(|s| s.to_string()).collect();
    let exclude_states: Vec<String> =
        o.strings("excludeDeviceStates")?.iter().map(|s| s.to_string()).collect();
    if filter.is_none() && include_states.is_empty() && exclude_states.is_empty() {
        return Ok(None);
    }
    Ok(Some(DevicesCondition { filter, include_states, exclude_states }))
}

fn parse_grant(o: Obj<'_>, notes: &mut Notes) -> FieldResult<Option<GrantControls>> {
    // Without an operator, several controls are all required (the portal's default, and the
    // safe reading); with one control the operator does not matter.
    let operator = match o.string("operator")? {
        Some(op) => enum_value(op, GRANT_OPERATORS, &o.path.key("operator"), "grant operator")?,
        None => GrantOperator::And,
    };
    let built_in = o
        .strings("builtInControls")?
        .into_iter()
        .map(|s| {
            let control = BuiltInControl::parse(s);
            if let BuiltInControl::Other(name) = &control {
                notes.push((
                    o.path.key("builtInControls"),
                    format!("`{name}` is not a control Gatehouse can satisfy; it is always unmet"),
                ));
            }
            control
        })
        .collect::<Vec<_>>();
    let authentication_strength = match o.object("authenticationStrength")? {
        None => None,
        Some((m, p)) => {
            let s = Obj { map: m, path: &p };
            let id = normalize_id(s.required_string("id")?);
            let embedded = if s.is_absent("allowedCombinations") {
                None
            } else {
                Some(super::strength::parse_strength(s, id.clone())?)
            };
            Some(StrengthRef { id, embedded })
        }
    };
    let controls = GrantControls {
        operator,
        built_in,
        custom_factors: o
            .strings("customAuthenticationFactors")?
            .iter()
            .map(|s| s.to_string())
            .collect(),
        terms_of_use: o.strings("termsOfUse")?.iter().map(|s| s.to_string()).collect(),
        authentication_strength,
    };
    let empty = controls.built_in.is_empty()
        && controls.custom_factors.is_empty()
        && controls.terms_of_use.is_empty()
        && controls.authentication_strength.is_none();
    Ok((!empty).then_some(controls))
}

fn parse_session(o: Obj<'_>) -> FieldResult<SessionControls> {
    // A session control object counts when present and not switched off with `isEnabled: false`.
    let enabled = |key: &str| -> FieldResult<bool> {
        match o.object(key)? {
            Some((m, p)) => Ok(Obj { map: m, path: &p }.bool("isEnabled")?.unwrap_or(true)),
            None => Ok(false),
        }
    };
    let sign_in_frequency = match o.object("signInFrequency")? {
        Some((m, p)) => {
            let s = Obj { map: m, path: &p };
            if s.bool("isEnabled")?.unwrap_or(true) {
                let interval = s.string("frequencyInterval")?.unwrap_or("timeBased");
                if interval.eq_ignore_ascii_case("everyTime") {
                    Some(SignInFrequency::EveryTime)
                } else {
                    let value = s.integer("value")?.unwrap_or(0);
                    if value <= 0 {
                        return Err(FieldError::new(
                            &p.key("value"),
                            format!(
                                "a time-based sign-in frequency needs a positive value, found {value}"
                            ),
                        ));
                    }
                    let hours_per = match s.string("type")? {
                        Some(t) if t.eq_ignore_ascii_case("days") => 24,
                        Some(t) if t.eq_ignore_ascii_case("hours") => 1,
                        None => 1,
                        Some(t) => {
                            return Err(FieldError::new(
                                &p.key("type"),
                                format!(
                                    "`{t}` is not a valid frequency type (expected days or hours)"
                                ),
                            ));
                        }
                    };
                    let hours =
                        u32::try_from(value.max(0)).unwrap_or(u32::MAX).saturating_mul(hours_per);
                    (hours > 0).then_some(SignInFrequency::Hours(hours))
                }
            } else {
                None
            }
        }
        None => None,
    };
    let persistent_browser = match o.object("persistentBrowser")? {
        Some((m, p)) => {
            let s = Obj { map: m, path: &p };
            if s.bool("isEnabled")?.unwrap_or(true) {
                match s.string("mode")? {
                    Some(x) if x.eq_ignore_ascii_case("always") => Some(PersistentBrowser::Always),
                    Some(x) if x.eq_ignore_ascii_case("never") => Some(PersistentBrowser::Never),
                    None => None,
                    Some(x) => {
                        return Err(FieldError::new(
                            &p.key("mode"),
                            format!(
                                "`{x}` is not a valid persistent browser mode (expected always or never)"
                            ),
                        ));
                    }
                }
            } else {
                None
            }
        }
        None => None,
    };
    let cloud_app_security = match o.object("cloudAppSecurity")? {
        Some((m, p)) => {
            let s = Obj { map: m, path: &p };
            if s.bool("isEnabled")?.unwrap_or(true) {
                Some(s.string("cloudAppSecurityType")?.unwrap_or("mcasConfigured").to_owned())
            } else {
                None
            }
        }
        None => None,
    };
    let continuous_access_evaluation = match o.object("continuousAccessEvaluation")? {
        Some((m, p)) => Obj { map: m, path: &p }.string("mode")?.map(str::to_owned),
        None => None,
    };
    Ok(SessionControls {
        application_enforced_restrictions: enabled("applicationEnforcedRestrictions")?,
        cloud_app_security,
        sign_in_frequency,
        persistent_browser,
        disable_resilience_defaults: o.bool("disableResilienceDefaults")?.unwrap_or(false),
        continuous_access_evaluation,
        secure_sign_in_session: enabled("secureSignInSession")?,
    })
}

fn ids(raw: Vec<&str>) -> Vec<String> {
    raw.into_iter().map(normalize_id).collect()
}

fn location_refs(raw: Vec<&str>) -> Vec<LocationRef> {
    raw.into_iter()
        .map(|s| match s.trim() {
            x if x.eq_ignore_ascii_case("All") => LocationRef::All,
            x if x.eq_ignore_ascii_case("AllTrusted") => LocationRef::AllTrusted,
            x => LocationRef::Id(normalize_id(x)),
        })
        .collect()
}

fn enum_list<T: Copy + PartialEq>(
    o: Obj<'_>,
    key: &str,
    table: &[(&str, T)],
    what: &str,
) -> FieldResult<Vec<T>> {
    let path = o.path.key(key);
    let mut out = Vec::new();
    for (i, raw) in o.strings(key)?.into_iter().enumerate() {
        let v = enum_value(raw, table, &path.index(i), what)?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

fn enum_flags<T: Copy + PartialEq>(
    o: Obj<'_>,
    key: &str,
    table: &[(&str, T)],
    what: &str,
) -> FieldResult<Vec<T>> {
    let path = o.path.key(key);
    let mut out = Vec::new();
    for raw in o.flags(key)? {
        let v = enum_value(raw, table, &path, what)?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}
