//! Evaluating a sign-in against a snapshot.
//!
//! Two steps, one evaluator for What-If and live sign-ins:
//! 1. [`Snapshot::evaluate`] decides, per policy, whether it applies (three-valued) and, if not,
//!    the first condition that failed. This is exactly what What-If reports.
//! 2. [`Evaluation::decide`] combines the applying policies with the methods already used:
//!    blocked (block wins), the requirements still unmet, or granted; merged session controls;
//!    and each policy's sign-in-log result.

use std::net::IpAddr;

use crate::model::enums::*;
use crate::model::location::LocationKind;
use crate::model::policy::*;
use crate::request::{Identity, SignInConditions, SignInRequest, Target};
use crate::snapshot::{Bits, CompiledLocations, CompiledPolicy, CompiledUsers, Snapshot, ip_in};

/// Three-valued truth: a condition the request does not supply is `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tri {
    Yes,
    No,
    Unknown,
}

impl Tri {
    fn from_bool(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }

    /// Kleene OR.
    fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::No,
        }
    }

    /// "Included and not excluded", three-valued.
    fn and_not(self, excluded: Tri) -> Tri {
        match (self, excluded) {
            (Tri::No, _) | (_, Tri::Yes) => Tri::No,
            (Tri::Yes, Tri::No) => Tri::Yes,
            _ => Tri::Unknown,
        }
    }
}

/// Graph `whatIfAnalysisReasons`: why a policy does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotSet,
    NotEnoughInformation,
    Users,
    WorkloadIdentities,
    Application,
    UserActions,
    AuthenticationContext,
    DevicePlatform,
    Devices,
    ClientApps,
    Location,
    SignInRisk,
    UserRisk,
    InsiderRisk,
    AuthenticationFlow,
    Time,
    PolicyNotEnabled,
}

impl Reason {
    pub fn graph_name(self) -> &'static str {
        match self {
            Reason::NotSet => "notSet",
            Reason::NotEnoughInformation => "notEnoughInformation",
            Reason::Users => "users",
            Reason::WorkloadIdentities => "workloadIdentities",
            Reason::Application => "application",
            Reason::UserActions => "userActions",
            Reason::AuthenticationContext => "authenticationContext",
            Reason::DevicePlatform => "devicePlatform",
            Reason::Devices => "devices",
            Reason::ClientApps => "clientApps",
            Reason::Location => "location",
            Reason::SignInRisk => "signInRisk",
            Reason::UserRisk => "userRisk",
            Reason::InsiderRisk => "insiderRisk",
            Reason::AuthenticationFlow => "authenticationFlow",
            Reason::Time => "time",
            Reason::PolicyNotEnabled => "policyNotEnabled",
        }
    }
}

/// Whether one policy applies to the sign-in, and if not, the first reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applicability {
    pub applies: Tri,
    pub reason: Reason,
    /// Which checks could not be decided, as bits indexed like [`CHECK_INPUTS`].
    pub missing: u16,
}

/// For each check, in evaluation order, the request input that decides it.
pub const CHECK_INPUTS: [&str; 12] = [
    "signInContext",
    "signInIdentity.externalTenantId",
    "signInConditions.devicePlatform",
    "signInConditions.country or ipAddress",
    "signInConditions.clientAppType",
    "signInConditions.deviceInfo",
    "signInConditions.signInRiskLevel",
    "signInConditions.userRiskLevel",
    "signInConditions.servicePrincipalRiskLevel",
    "signInConditions.insiderRiskLevel",
    "signInConditions.authenticationFlow",
    "a condition Gatehouse cannot decide (times, application filter, agent risk)",
];

impl Applicability {
    const fn no(reason: Reason) -> Self {
        Applicability { applies: Tri::No, reason, missing: 0 }
    }

    /// The inputs the request would have to supply to decide this policy.
    pub fn missing_inputs(&self) -> impl Iterator<Item = &'static str> + '_ {
        CHECK_INPUTS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.missing & (1 << i) != 0)
            .map(|(_, n)| *n)
    }
}

/// Something the caller should tell the person asking (the CLI prints these to stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    UnknownUser(String),
    UnknownServicePrincipal(String),
    /// An app id that is neither in the export nor a well-known Microsoft app.
    UnknownApplication(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::UnknownUser(id) => write!(
                f,
                "user `{id}` is not in the tenant export; evaluated as a member user with no groups or roles"
            ),
            Notice::UnknownApplication(id) => write!(
                f,
                "application `{id}` is not in the tenant export nor a well-known Microsoft app; only policies on All resources or on this id can match it"
            ),
            Notice::UnknownServicePrincipal(id) => write!(
                f,
                "service principal `{id}` is not in the tenant export; evaluated as a single-tenant service principal"
            ),
        }
    }
}

/// Per-policy applicability for one sign-in, in the snapshot's policy order.
#[derive(Debug, Clone)]
pub struct Evaluation<'s> {
    pub(crate) snapshot: &'s Snapshot,
    /// What `decide` needs from the request: the device's compliance and join type.
    pub(crate) device_compliant: bool,
    pub(crate) device_domain_joined: bool,
    pub(crate) applied_policies_only: bool,
    pub results: Vec<Applicability>,
    pub notices: Vec<Notice>,
}

/// The sign-in's subject, resolved once.
enum Subject<'a> {
    User {
        /// The id the request names (lowercase).
        id: &'a str,
        index: Option<u32>,
        guest: Option<GuestType>,
        tenant: Option<&'a str>,
        groups: &'a Bits,
        roles: &'a Bits,
    },
    /// The ids the service principal is known by (app id and object id).
    ServicePrincipal { ids: [String; 2] },
}

impl Snapshot {
    /// Decides, for every policy, whether it applies to this sign-in.
    pub fn evaluate(&self, request: &SignInRequest) -> Evaluation<'_> {
        let mut notices = Vec::new();
        let subject = match &request.identity {
            Identity::User { user_id, external_tenant_id, external_user_type } => {
                let index =
                    self.user_index.get(user_id).or_else(|| self.upn_index.get(user_id)).copied();
                let facts = index.and_then(|i| self.users.get(i as usize));
                if facts.is_none() {
                    notices.push(Notice::UnknownUser(user_id.clone()));
                }
                Subject::User {
                    id: user_id,
                    index,
                    guest: external_user_type.or(facts.and_then(|f| f.guest_type)),
                    tenant: external_tenant_id.as_deref(),
                    groups: facts.map_or(&self.empty_bits.0, |f| &f.groups),
                    roles: facts.map_or(&self.empty_bits.1, |f| &f.roles),
                }
            }
            Identity::ServicePrincipal { app_id } => {
                let ids = match self.service_principals.get(app_id) {
                    Some(pair) => pair.clone(),
                    None => {
                        notices.push(Notice::UnknownServicePrincipal(app_id.clone()));
                        [app_id.clone(), app_id.clone()]
                    }
                };
                Subject::ServicePrincipal { ids }
            }
        };
        if let Target::Apps(apps) = &request.target {
            for app in apps {
                if !self.service_principals.contains_key(app)
                    && crate::suites::app_name(app).is_none()
                {
                    notices.push(Notice::UnknownApplication(app.clone()));
                }
            }
        }
        let locations = LocationFacts::new(self, &request.conditions);
        // Requested apps as interned ids (`None`: no policy names the app), resolved once.
        let app_ids: Vec<Option<u32>> = match &request.target {
            Target::Apps(apps) => apps.iter().map(|a| self.app_index.get(a).copied()).collect(),
            _ => Vec::new(),
        };

        // Start from "not this target" for everything, then evaluate only the candidates.
        let target_reason = match &request.target {
            Target::Apps(_) => Reason::Application,
            Target::UserAction(_) => Reason::UserActions,
            Target::AuthContext(_) => Reason::AuthenticationContext,
        };
        let mut results: Vec<Applicability> = self
            .policies
            .iter()
            .map(|p| match p.policy.state {
                PolicyState::Disabled => Applicability::no(Reason::PolicyNotEnabled),
                _ => Applicability::no(target_reason),
            })
            .collect();
        let mut run = |i: u16| {
            if let (Some(p), Some(slot)) =
                (self.policies.get(i as usize), results.get_mut(i as usize))
            {
                *slot = self.applicability(p, request, &subject, &locations, &app_ids);
            }
        };
        match &request.target {
            Target::Apps(apps) if apps.len() == 1 => {
                self.index.all_apps.iter().copied().for_each(&mut run);
                if let Some(list) =
                    app_ids.first().copied().flatten().and_then(|a| self.index.by_app.get(&a))
                {
                    list.iter().copied().for_each(&mut run);
                }
            }
            Target::Apps(_) => (0..self.policies.len() as u16)
                .filter(|i| {
                    self.policies
                        .get(*i as usize)
                        .is_some_and(|p| p.policy.state != PolicyState::Disabled)
                })
                .for_each(&mut run),
            Target::UserAction(a) => {
                if let Some(list) = self.index.by_action.get(a) {
                    list.iter().copied().for_each(&mut run);
                }
            }
            Target::AuthContext(c) => {
                if let Some(list) = self.index.by_context.get(c) {
                    list.iter().copied().for_each(&mut run);
                }
            }
        }
        let device = request.conditions.device.as_ref();
        Evaluation {
            snapshot: self,
            results,
            notices,
            device_compliant: device.and_then(|d| d.is_compliant).unwrap_or(false),
            device_domain_joined: device
                .and_then(|d| d.trust_type.as_deref())
                .is_some_and(|t| t.eq_ignore_ascii_case("ServerAD")),
            applied_policies_only: request.applied_policies_only,
        }
    }

    fn applicability(
        &self,
        cp: &CompiledPolicy,
        req: &SignInRequest,
        subject: &Subject<'_>,
        locations: &LocationFacts<'_>,
        apps: &[Option<u32>],
    ) -> Applicability {
        let c = &cp.policy.conditions;
        let s = &req.conditions;
        // Conditions in the order What-If reports them; the first definite "no" is the reason.
        // Straight-line and lazy: a condition after a definite "no" is never evaluated.
        let mut missing = 0u16;
        macro_rules! check {
            ($bit:expr, $reason:expr, $tri:expr) => {
                match $tri {
                    Tri::No => return Applicability::no($reason),
                    Tri::Unknown => missing |= 1 << $bit,
                    Tri::Yes => {}
                }
            };
        }
        check!(0, target_reason(&req.target), target_matches(cp, &req.target, apps));
        check!(1, identity_reason(subject), identity_matches(cp, subject));
        check!(
            2,
            Reason::DevicePlatform,
            platform_matches(c.platforms.as_ref(), s.device_platform)
        );
        if let Some(l) = &cp.locations {
            check!(3, Reason::Location, locations.matches(self, l));
        }
        check!(4, Reason::ClientApps, client_app_matches(&c.client_app_types, s.client_app_type));
        check!(5, Reason::Devices, devices_match(c.devices.as_ref(), s));
        check!(6, Reason::SignInRisk, level_matches(&c.sign_in_risk_levels, s.sign_in_risk));
        check!(7, Reason::UserRisk, level_matches(&c.user_risk_levels, s.user_risk));
        check!(
            8,
            Reason::WorkloadIdentities,
            level_matches(&c.service_principal_risk_levels, s.service_principal_risk)
        );
        check!(9, Reason::InsiderRisk, level_matches(&c.insider_risk_levels, s.insider_risk));
        check!(10, Reason::AuthenticationFlow, flow_matches(&c.authentication_flows, s));
        if !c.undecidable.is_empty() {
            missing |= 1 << 11;
        }
        if missing != 0 {
            Applicability { applies: Tri::Unknown, reason: Reason::NotEnoughInformation, missing }
        } else {
            Applicability { applies: Tri::Yes, reason: Reason::NotSet, missing }
        }
    }
}

fn target_reason(t: &Target) -> Reason {
    match t {
        Target::Apps(_) => Reason::Application,
        Target::UserAction(_) => Reason::UserActions,
        Target::AuthContext(_) => Reason::AuthenticationContext,
    }
}

fn identity_reason(s: &Subject<'_>) -> Reason {
    match s {
        Subject::User { .. } => Reason::Users,
        Subject::ServicePrincipal { .. } => Reason::WorkloadIdentities,
    }
}

/// Policies target a resource, a user action or an authentication context; `All` resources
/// covers every app but no user action (Entra keeps the two apart).
fn target_matches(cp: &CompiledPolicy, target: &Target, apps: &[Option<u32>]) -> Tri {
    let a = &cp.apps;
    let listed =
        |list: &[u32], app: Option<u32>| app.is_some_and(|i| list.binary_search(&i).is_ok());
    Tri::from_bool(match target {
        Target::Apps(_) => apps.iter().any(|app| {
            (a.include_all || listed(&a.include, *app))
                && !a.exclude_all
                && !listed(&a.exclude, *app)
        }),
        Target::UserAction(action) => a.actions.contains(action),
        Target::AuthContext(ctx) => a.contexts.contains(ctx),
    })
}

fn identity_matches(cp: &CompiledPolicy, subject: &Subject<'_>) -> Tri {
    match subject {
        Subject::User { id, index, guest, tenant, groups, roles } => match &cp.users {
            None => Tri::No,
            Some(u) => users_match(u, (id, *index), *guest, *tenant, groups, roles),
        },
        Subject::ServicePrincipal { ids } => match &cp.policy.conditions.client_applications {
            None => Tri::No,
            Some(c) => {
                let listed = |list: &[String]| list.iter().any(|x| ids.contains(x));
                // Every service principal Gatehouse evaluates is registered in this tenant, so
                // `ServicePrincipalsInMyTenant` covers it like `All`.
                let everyone =
                    c.include.iter().any(|x| x == "all" || x == "serviceprincipalsinmytenant");
                Tri::from_bool((everyone || listed(&c.include)) && !listed(&c.exclude))
            }
        },
    }
}

fn users_match(
    u: &CompiledUsers,
    (id, index): (&str, Option<u32>),
    guest: Option<GuestType>,
    tenant: Option<&str>,
    groups: &Bits,
    roles: &Bits,
) -> Tri {
    let direct = |ids: &[u32], others: &[String]| match index {
        Some(i) => ids.contains(&i),
        None => others.iter().any(|o| o == id),
    };
    let include = Tri::from_bool(
        u.include_all
            || (u.include_any_guest && guest.is_some())
            || direct(&u.include_users, &u.include_other_ids)
            || groups.contains_any(&u.include_groups)
            || roles.contains_any(&u.include_roles),
    )
    .or(guests_match(u.include_guests.as_ref(), guest, tenant));
    if include == Tri::No {
        return Tri::No;
    }
    let exclude = Tri::from_bool(
        u.exclude_all
            || (u.exclude_any_guest && guest.is_some())
            || direct(&u.exclude_users, &u.exclude_other_ids)
            || groups.contains_any(&u.exclude_groups)
            || roles.contains_any(&u.exclude_roles),
    )
    .or(guests_match(u.exclude_guests.as_ref(), guest, tenant));
    include.and_not(exclude)
}

fn guests_match(
    g: Option<&GuestsOrExternalUsers>,
    guest: Option<GuestType>,
    tenant: Option<&str>,
) -> Tri {
    let (Some(g), Some(t)) = (g, guest) else {
        return Tri::No;
    };
    if !g.types.contains(t) {
        return Tri::No;
    }
    // Internal guests live in this tenant; the external-tenant filter is about the others.
    match (&g.tenants, t) {
        (ExternalTenants::All, _) | (_, GuestType::InternalGuest) => Tri::Yes,
        (ExternalTenants::Enumerated(list), _) => match tenant {
            Some(id) => Tri::from_bool(list.iter().any(|x| x == id)),
            None => Tri::Unknown,
        },
    }
}

fn platform_matches(p: Option<&PlatformsCondition>, platform: Option<Platform>) -> Tri {
    let Some(p) = p else { return Tri::Yes };
    let Some(platform) = platform else {
        return Tri::Unknown;
    };
    let included = p.include.contains(&Platform::All) || p.include.contains(&platform);
    let excluded = p.exclude.contains(&platform) || p.exclude.contains(&Platform::All);
    Tri::from_bool(included && !excluded)
}

fn client_app_matches(types: &[ClientAppType], client: Option<ClientAppType>) -> Tri {
    if types.is_empty() {
        return Tri::Yes;
    }
    match client {
        None => Tri::Unknown,
        Some(c) => Tri::from_bool(types.iter().any(|t| t.covers(c))),
    }
}

fn devices_match(d: Option<&DevicesCondition>, s: &SignInConditions) -> Tri {
    let Some(d) = d else { return Tri::Yes };
    let Some(device) = &s.device else {
        return Tri::Unknown;
    };
    if let Some((mode, rule)) = &d.filter {
        let hit = rule.matches(device);
        let applies = match mode {
            FilterMode::Include => hit,
            FilterMode::Exclude => !hit,
        };
        if !applies {
            return Tri::No;
        }
    }
    // Deprecated device states: include `All`, exclude `Compliant` / `DomainJoined`.
    if !d.include_states.is_empty() || !d.exclude_states.is_empty() {
        let state = |name: &str| match name.to_ascii_lowercase().as_str() {
            "all" => true,
            "compliant" => device.is_compliant == Some(true),
            "domainjoined" => {
                device.trust_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("ServerAD"))
            }
            _ => false,
        };
        let included = d.include_states.is_empty() || d.include_states.iter().any(|n| state(n));
        let excluded = d.exclude_states.iter().any(|n| state(n));
        if !included || excluded {
            return Tri::No;
        }
    }
    Tri::Yes
}

fn level_matches<T: PartialEq + Copy>(levels: &[T], level: Option<T>) -> Tri {
    if levels.is_empty() {
        return Tri::Yes;
    }
    match level {
        None => Tri::Unknown,
        Some(l) => Tri::from_bool(levels.contains(&l)),
    }
}

fn flow_matches(flows: &[TransferMethod], s: &SignInConditions) -> Tri {
    if flows.is_empty() {
        return Tri::Yes;
    }
    match s.authentication_flow {
        None => Tri::Unknown,
        Some(None) => Tri::No,
        Some(Some(t)) => Tri::from_bool(flows.contains(&t)),
    }
}

/// The sign-in's network facts; whether it is at a trusted location is worked out once.
struct LocationFacts<'r> {
    ip: Option<IpAddr>,
    country: Option<Option<&'r str>>,
    trusted: Tri,
}

impl<'r> LocationFacts<'r> {
    fn new(snapshot: &Snapshot, s: &'r SignInConditions) -> Self {
        let mut facts = LocationFacts {
            ip: s.ip_address,
            country: s.country.as_ref().map(|c| c.as_deref()),
            trusted: Tri::No,
        };
        facts.trusted = snapshot
            .trusted_locations
            .iter()
            .fold(Tri::No, |acc, i| acc.or(facts.in_location(snapshot, *i)));
        facts
    }

    fn in_location(&self, snapshot: &Snapshot, i: u32) -> Tri {
        let Some(loc) = snapshot.locations.get(i as usize) else {
            return Tri::No;
        };
        match &loc.kind {
            LocationKind::Ip { ranges, .. } => match &self.ip {
                Some(ip) => Tri::from_bool(ip_in(ranges, ip)),
                None => Tri::Unknown,
            },
            LocationKind::Country { countries, include_unknown } => match &self.country {
                Some(Some(c)) => Tri::from_bool(countries.iter().any(|x| x == c)),
                Some(None) => Tri::from_bool(*include_unknown),
                None => Tri::Unknown,
            },
            LocationKind::CompliantNetwork => Tri::No,
        }
    }

    fn matches(&self, snapshot: &Snapshot, l: &CompiledLocations) -> Tri {
        let mut include = Tri::from_bool(l.include_all);
        if l.include_trusted {
            include = include.or(self.trusted);
        }
        for i in &l.include {
            include = include.or(self.in_location(snapshot, *i));
        }
        if include == Tri::No {
            return Tri::No;
        }
        let mut exclude = Tri::from_bool(l.exclude_all);
        if l.exclude_trusted {
            exclude = exclude.or(self.trusted);
        }
        for i in &l.exclude {
            exclude = exclude.or(self.in_location(snapshot, *i));
        }
        include.and_not(exclude)
    }
}

impl<'s> Evaluation<'s> {
    pub fn snapshot(&self) -> &'s Snapshot {
        self.snapshot
    }

    /// Policies with their applicability, in tenant order.
    pub fn policies(&self) -> impl Iterator<Item = (&'s Policy, Applicability)> + '_ {
        self.snapshot.policies.iter().map(|p| &p.policy).zip(self.results.iter().copied())
    }

    pub(crate) fn compiled(
        &self,
    ) -> impl Iterator<Item = (&'s CompiledPolicy, Applicability)> + '_ {
        self.snapshot.policies.iter().zip(self.results.iter().copied())
    }

    /// Ids of policies whose `policyApplies` is true (enabled and report-only).
    pub fn applying_ids(&self) -> Vec<&'s str> {
        self.policies().filter(|(_, a)| a.applies == Tri::Yes).map(|(p, _)| p.id.as_str()).collect()
    }
}
