//! The same tenant as Cedar policies and entities, for a like-for-like comparison.
//!
//! # Model
//! - principal `User::"<object id>"`; its parents are the groups it is a direct member of
//!   (`Group::"<id>"`, whose parents are the groups containing them: the real nested hierarchy)
//!   and the roles it holds directly (`Role::"<role template id>"`). A role assigned to a group
//!   is a parent of that group, so it reaches every nested member. Cedar computes the transitive
//!   closure when the [`Entities`] are built (once per tenant, like `Snapshot::compile`).
//!   A guest carries `guestType` (the Graph `guestOrExternalUserTypes` member).
//! - action `Action::"signIn"`;
//! - resource `App::"<app id>"` (Office 365 and admin-portal members have parent
//!   `AppSuite::"Office365"` / `AppSuite::"MicrosoftAdminPortals"`), `UserAction::"<urn>"` or
//!   `AuthContext::"c1"`;
//! - `context`: `ip` (extension type `ipaddr`), `country`, `platform`, `clientAppType`,
//!   `signInRisk`, `userRisk`, `insiderRisk`, `authFlow`, optional `servicePrincipalRisk`,
//!   optional `externalUserType` / `externalTenantId` (What-If overrides), and `device`, a record
//!   holding only the device attributes that are not null.
//!
//! Each enabled or report-only Conditional Access policy becomes one `permit` with
//! `@id("<policy id>")` (also its Cedar `PolicyId`): the set of permits that are satisfied for
//! a request (`Response::diagnostics().reason()`) is the set of policies that apply.
//! Includes are `when` clauses and excludes `unless` clauses, so exclusion beats inclusion.
//! Disabled policies are not translated.
//!
//! # Approximations (what Cedar cannot say, or says differently)
//! 1. No three-valued logic: Gatehouse answers `notEnoughInformation` when a request omits a
//!    condition a policy uses; Cedar has no "unknown", so [`request`] refuses a request that
//!    leaves out a condition (every benchmark request supplies all of them).
//!    Policies with undecidable conditions (`times`, application filters, agent risk) are
//!    refused by [`to_cedar`] for the same reason.
//! 2. No case folding: device-filter comparisons ignore ASCII case in Entra. Cedar has no
//!    `lowercase()`, so literals are lowercased when translating and device attributes when
//!    building the context (per-request work, done in [`request`]).
//! 3. Device-filter null semantics are written out: a positive operator is
//!    `(context.device has p && …)`, a negative one `(!(context.device has p) || !…)`.
//!    `-startsWith`/`-endsWith`/`-contains` on text become `like` patterns with `*` escaped.
//! 4. `ClientAppType` coverage (`exchangeActiveSync` ⇔ `easSupported`) and the Office 365 /
//!    admin-portal suites are expanded at translation time, from the same tables Gatehouse uses.
//! 5. The effective guest type (the request's `externalUserType`, else the directory's) is an
//!    `if … then … else` over `context` and `principal.guestType`, repeated in each clause that
//!    needs it (Cedar has no `let`).
//! 6. A request must name exactly one application (a Cedar request has one resource); Gatehouse
//!    accepts several.
//! 7. A policy naming a user id the directory does not hold: Gatehouse drops the reference, Cedar
//!    would match a request for that id. The generator never produces this.
//! 8. Workload-identity policies (`clientApplications` without `users`) never apply to a user
//!    sign-in in either engine and are translated as `when { false }`; service-principal
//!    requests are not modelled.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    Request, RestrictedExpression,
};
use gatehouse_policy::device_filter::DeviceAttributes;
use gatehouse_policy::model::enums::{
    CLIENT_APP_TYPES, ClientAppType, FilterMode, GUEST_TYPES, INSIDER_RISK_LEVELS, PLATFORMS,
    Platform, PolicyState, RISK_LEVELS, TRANSFER_METHODS,
};
use gatehouse_policy::model::location::{LocationKind, NamedLocation};
use gatehouse_policy::model::policy::{
    AppRef, ApplicationsCondition, DevicesCondition, ExternalTenants, GuestsOrExternalUsers,
    LocationRef, PlatformsCondition, Policy as CaPolicy, UserRef, UsersCondition,
};
use gatehouse_policy::request::{Identity, Target};
use gatehouse_policy::{SignInRequest, Tenant, suites};

use crate::Result;
use crate::device_rule;

/// A tenant as Cedar sees it.
pub struct CedarTenant {
    pub policies: PolicySet,
    pub entities: Entities,
    /// The translated policies as Cedar source, for reading.
    pub source: String,
    /// Ids of the translated (enabled and report-only) policies.
    pub translated: Vec<String>,
}

/// Translates the policies and builds the entity store.
pub fn to_cedar(tenant: &Tenant) -> Result<CedarTenant> {
    let (policies, source, translated) = translate_policies(tenant)?;
    Ok(CedarTenant { policies, entities: build_entities(tenant)?, source, translated })
}

fn uid(kind: &str, id: &str) -> Result<EntityUid> {
    Ok(EntityUid::from_type_name_and_id(EntityTypeName::from_str(kind)?, EntityId::new(id)))
}

/// A Cedar string literal.
pub fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn entity(kind: &str, id: &str) -> String {
    format!("{kind}::{}", lit(id))
}

fn entity_set<'a>(kind: &str, ids: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = ids.into_iter().map(|id| entity(kind, id)).collect();
    format!("[{}]", items.join(", "))
}

fn string_set<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(lit).collect();
    format!("[{}]", items.join(", "))
}

/// The Graph spelling of an enum value: the first name its table gives it.
fn name_of<T: PartialEq + Copy>(table: &'static [(&'static str, T)], value: T) -> &'static str {
    table.iter().find(|(_, v)| *v == value).map_or("unknownFutureValue", |(n, _)| *n)
}

fn any_of(parts: Vec<String>) -> String {
    if parts.is_empty() {
        "false".to_owned()
    } else if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(" || "))
    }
}

/// The sign-in's guest type: the What-If override, else the directory's, else `"none"`.
const GUEST: &str = r#"(if context has externalUserType then context.externalUserType else if principal has guestType then principal.guestType else "none")"#;

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

fn translate_policies(tenant: &Tenant) -> Result<(PolicySet, String, Vec<String>)> {
    let locations: HashMap<&str, &NamedLocation> =
        tenant.named_locations.iter().map(|l| (l.id.as_str(), l)).collect();
    let trusted: Vec<&NamedLocation> =
        tenant.named_locations.iter().filter(|l| l.is_trusted()).collect();
    let mut set = PolicySet::new();
    let mut source = String::new();
    let mut translated = Vec::new();
    for p in tenant.policies.iter().filter(|p| p.state != PolicyState::Disabled) {
        let text = policy_text(p, &locations, &trusted)
            .map_err(|e| format!("policy {} ({}): {e}", p.id, p.display_name))?;
        let policy = Policy::parse(Some(PolicyId::new(&p.id)), &text)
            .map_err(|e| format!("policy {}: {e}\n{text}", p.id))?;
        set.add(policy)?;
        source.push_str(&text);
        source.push('\n');
        translated.push(p.id.clone());
    }
    Ok((set, source, translated))
}

fn policy_text(
    p: &CaPolicy,
    locations: &HashMap<&str, &NamedLocation>,
    trusted: &[&NamedLocation],
) -> Result<String> {
    let c = &p.conditions;
    if !c.undecidable.is_empty() {
        return Err(format!("uses conditions Cedar cannot decide: {:?}", c.undecidable).into());
    }
    let mut when: Vec<String> = Vec::new();
    let mut unless: Vec<String> = Vec::new();

    let (scope, target_when, target_unless) = target(&c.applications);
    when.extend(target_when);
    unless.extend(target_unless);

    match &c.users {
        None => when.push("false".into()),
        Some(u) => {
            when.push(users_include(u));
            if let Some(x) = users_exclude(u) {
                unless.push(x);
            }
        }
    }
    if let Some(pl) = &c.platforms {
        let (inc, exc) = platforms(pl);
        when.push(inc);
        unless.extend(exc);
    }
    if let Some(l) = &c.locations {
        let refs = |list: &[LocationRef], include: bool| {
            any_of(list.iter().filter_map(|r| location(r, include, locations, trusted)).collect())
        };
        when.push(refs(&l.include, true));
        if !l.exclude.is_empty() {
            unless.push(refs(&l.exclude, false));
        }
    }
    if !c.client_app_types.is_empty() {
        let covered: Vec<&str> = request_client_types()
            .filter(|(_, r)| c.client_app_types.iter().any(|t| t.covers(*r)))
            .map(|(n, _)| n)
            .collect();
        when.push(format!("{}.contains(context.clientAppType)", string_set(covered)));
    }
    if let Some(d) = &c.devices {
        when.push(devices(d)?);
    }
    let levels =
        |names: Vec<&str>, key: &str| format!("{}.contains(context.{key})", string_set(names));
    if !c.sign_in_risk_levels.is_empty() {
        let names = c.sign_in_risk_levels.iter().map(|l| name_of(RISK_LEVELS, *l)).collect();
        when.push(levels(names, "signInRisk"));
    }
    if !c.user_risk_levels.is_empty() {
        let names = c.user_risk_levels.iter().map(|l| name_of(RISK_LEVELS, *l)).collect();
        when.push(levels(names, "userRisk"));
    }
    if !c.service_principal_risk_levels.is_empty() {
        let names =
            c.service_principal_risk_levels.iter().map(|l| name_of(RISK_LEVELS, *l)).collect();
        when.push(format!(
            "context has servicePrincipalRisk && {}",
            levels(names, "servicePrincipalRisk")
        ));
    }
    if !c.insider_risk_levels.is_empty() {
        let names =
            c.insider_risk_levels.iter().map(|l| name_of(INSIDER_RISK_LEVELS, *l)).collect();
        when.push(levels(names, "insiderRisk"));
    }
    if !c.authentication_flows.is_empty() {
        let names = c.authentication_flows.iter().map(|t| name_of(TRANSFER_METHODS, *t)).collect();
        when.push(levels(names, "authFlow"));
    }

    let mut text = String::new();
    writeln!(text, "@id({})", lit(&p.id))?;
    writeln!(text, "permit (principal is User, action == Action::\"signIn\", {scope})")?;
    for w in when.iter().filter(|w| w.as_str() != "true") {
        writeln!(text, "when {{ {w} }}")?;
    }
    for u in unless.iter().filter(|u| u.as_str() != "false") {
        writeln!(text, "unless {{ {u} }}")?;
    }
    text.push_str(";\n");
    Ok(text)
}

/// Scope constraint on `resource`, `when` clauses and `unless` clauses for the target.
fn target(a: &ApplicationsCondition) -> (String, Vec<String>, Vec<String>) {
    let app_ref = |r: &AppRef| -> Option<String> {
        match r {
            AppRef::Id(id) => Some(entity("App", id)),
            AppRef::Office365 => Some(entity("AppSuite", "Office365")),
            AppRef::MicrosoftAdminPortals => Some(entity("AppSuite", "MicrosoftAdminPortals")),
            // `None` and agent resources match no sign-in.
            AppRef::All | AppRef::None | AppRef::AllAgentIdResources => None,
        }
    };
    let include_all = a.include_applications.contains(&AppRef::All);
    let included: Vec<String> = a.include_applications.iter().filter_map(app_ref).collect();
    let excluded: Vec<String> = a.exclude_applications.iter().filter_map(app_ref).collect();
    let has_apps = include_all || !included.is_empty();
    let app_include = if include_all {
        "true".to_owned()
    } else {
        format!("resource in [{}]", included.join(", "))
    };
    let app_exclude =
        (!excluded.is_empty()).then(|| format!("resource in [{}]", excluded.join(", ")));
    let actions = (!a.include_user_actions.is_empty()).then(|| {
        format!(
            "resource in {}",
            entity_set("UserAction", a.include_user_actions.iter().map(|x| x.urn()))
        )
    });
    let contexts = (!a.include_auth_contexts.is_empty()).then(|| {
        format!(
            "resource in {}",
            entity_set("AuthContext", a.include_auth_contexts.iter().map(String::as_str))
        )
    });
    match (has_apps, actions, contexts) {
        (false, None, None) => ("resource".into(), vec!["false".into()], Vec::new()),
        (true, None, None) => {
            ("resource is App".into(), vec![app_include], app_exclude.into_iter().collect())
        }
        (false, Some(x), None) => ("resource is UserAction".into(), vec![x], Vec::new()),
        (false, None, Some(x)) => ("resource is AuthContext".into(), vec![x], Vec::new()),
        (apps, actions, contexts) => {
            let mut parts = Vec::new();
            if apps {
                let exclude = app_exclude.map_or(String::new(), |e| format!(" && !({e})"));
                parts.push(format!("(resource is App && {app_include}{exclude})"));
            }
            parts.extend(actions);
            parts.extend(contexts);
            ("resource".into(), vec![any_of(parts)], Vec::new())
        }
    }
}

fn guests(g: &GuestsOrExternalUsers) -> String {
    let names: Vec<&str> = GUEST_TYPES
        .iter()
        .filter(|(_, t)| t.is_some_and(|t| g.types.contains(t)))
        .map(|(n, _)| *n)
        .collect();
    let types = format!("{}.contains({GUEST})", string_set(names));
    match &g.tenants {
        ExternalTenants::All => types,
        // Internal guests live in this tenant: the tenant filter is about the others.
        ExternalTenants::Enumerated(list) => format!(
            "({types} && ({GUEST} == \"internalGuest\" || (context has externalTenantId && {}.contains(context.externalTenantId))))",
            string_set(list.iter().map(String::as_str))
        ),
    }
}

fn user_parts(
    users: &[UserRef],
    groups: &[String],
    roles: &[String],
    g: Option<&GuestsOrExternalUsers>,
) -> Vec<String> {
    let mut parts = Vec::new();
    // `All` (on the exclude side: everyone is excluded, exclusion beats inclusion).
    if users.contains(&UserRef::All) {
        parts.push("true".to_owned());
    }
    if users.contains(&UserRef::GuestsOrExternalUsers) {
        parts.push(format!("{GUEST} != \"none\""));
    }
    let ids: Vec<&str> = users
        .iter()
        .filter_map(|u| match u {
            UserRef::Id(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    if !ids.is_empty() {
        parts.push(format!("principal in {}", entity_set("User", ids)));
    }
    if !groups.is_empty() {
        parts.push(format!(
            "principal in {}",
            entity_set("Group", groups.iter().map(String::as_str))
        ));
    }
    if !roles.is_empty() {
        parts
            .push(format!("principal in {}", entity_set("Role", roles.iter().map(String::as_str))));
    }
    parts.extend(g.map(guests));
    parts
}

fn users_include(u: &UsersCondition) -> String {
    if u.include_users.contains(&UserRef::All) {
        return "true".into();
    }
    any_of(user_parts(
        &u.include_users,
        &u.include_groups,
        &u.include_roles,
        u.include_guests.as_ref(),
    ))
}

fn users_exclude(u: &UsersCondition) -> Option<String> {
    let parts = user_parts(
        &u.exclude_users,
        &u.exclude_groups,
        &u.exclude_roles,
        u.exclude_guests.as_ref(),
    );
    (!parts.is_empty()).then(|| any_of(parts))
}

fn platforms(p: &PlatformsCondition) -> (String, Option<String>) {
    let set = |list: &[Platform]| {
        format!(
            "{}.contains(context.platform)",
            string_set(
                list.iter().filter(|x| **x != Platform::All).map(|x| name_of(PLATFORMS, *x))
            )
        )
    };
    let include =
        if p.include.contains(&Platform::All) { "true".to_owned() } else { set(&p.include) };
    let exclude = if p.exclude.contains(&Platform::All) {
        Some("true".to_owned())
    } else {
        (!p.exclude.is_empty()).then(|| set(&p.exclude))
    };
    (include, exclude)
}

fn ip_location<T: std::fmt::Display>(ranges: &[T]) -> String {
    any_of(
        ranges
            .iter()
            .map(|r| format!("context.ip.isInRange(ip({}))", lit(&r.to_string())))
            .collect(),
    )
}

fn location(
    r: &LocationRef,
    include: bool,
    locations: &HashMap<&str, &NamedLocation>,
    trusted: &[&NamedLocation],
) -> Option<String> {
    match r {
        // Gatehouse honours `All` only on the include side.
        LocationRef::All => include.then(|| "true".to_owned()),
        LocationRef::AllTrusted => Some(any_of(
            trusted
                .iter()
                .filter_map(|l| match &l.kind {
                    LocationKind::Ip { ranges, .. } => Some(ip_location(ranges)),
                    _ => None,
                })
                .collect(),
        )),
        LocationRef::Id(id) => locations.get(id.as_str()).map(|l| match &l.kind {
            LocationKind::Ip { ranges, .. } => ip_location(ranges),
            // Requests always carry a country (approximation 1), so `includeUnknown…` never
            // comes into play.
            LocationKind::Country { countries, .. } => format!(
                "{}.contains(context.country)",
                string_set(countries.iter().map(String::as_str))
            ),
            // A Global Secure Access compliant network: neither engine has one.
            LocationKind::CompliantNetwork => "false".to_owned(),
        }),
    }
}

fn devices(d: &DevicesCondition) -> Result<String> {
    let mut parts = Vec::new();
    if let Some((mode, rule)) = &d.filter {
        let expr = device_rule::translate(rule.source())?;
        parts.push(if *mode == FilterMode::Include { expr } else { format!("!{expr}") });
    }
    // Deprecated device states: include `All`, exclude `Compliant` / `DomainJoined`.
    if !d.include_states.is_empty() || !d.exclude_states.is_empty() {
        let state = |name: &String| match name.to_ascii_lowercase().as_str() {
            "all" => "true".to_owned(),
            "compliant" => {
                "(context.device has isCompliant && context.device.isCompliant == true)".to_owned()
            }
            "domainjoined" => {
                "(context.device has trustType && context.device.trustType == \"serverad\")"
                    .to_owned()
            }
            _ => "false".to_owned(),
        };
        if !d.include_states.is_empty() {
            parts.push(any_of(d.include_states.iter().map(state).collect()));
        }
        if !d.exclude_states.is_empty() {
            parts.push(format!("!{}", any_of(d.exclude_states.iter().map(state).collect())));
        }
    }
    Ok(if parts.is_empty() { "true".to_owned() } else { parts.join(" && ") })
}

/// Client app types a request can carry (every type but `all`), with their Graph names.
fn request_client_types() -> impl Iterator<Item = (&'static str, ClientAppType)> {
    CLIENT_APP_TYPES
        .iter()
        .enumerate()
        .filter(|(i, (_, t))| {
            *t != ClientAppType::All && !CLIENT_APP_TYPES.iter().take(*i).any(|(_, u)| u == t)
        })
        .map(|(_, (n, t))| (*n, *t))
}

// ---------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------

/// Users, groups (the nested hierarchy), roles and app suites. Role assignments scoped to an
/// administrative unit are left out: Conditional Access ignores them.
pub fn build_entities(tenant: &Tenant) -> Result<Entities> {
    let user_ids: HashSet<&str> = tenant.users.iter().map(|u| u.id.as_str()).collect();
    let mut user_parents: HashMap<&str, HashSet<EntityUid>> = HashMap::new();
    let mut group_parents: HashMap<&str, HashSet<EntityUid>> =
        tenant.groups.iter().map(|g| (g.id.as_str(), HashSet::new())).collect();
    for g in &tenant.groups {
        let parent = uid("Group", &g.id)?;
        for m in &g.members {
            if user_ids.contains(m.as_str()) {
                user_parents.entry(m.as_str()).or_default().insert(parent.clone());
            } else {
                // Anything that is not a user is walked as a group, as Gatehouse does.
                group_parents.entry(m.as_str()).or_default().insert(parent.clone());
            }
        }
    }
    for u in &tenant.users {
        for g in &u.member_of_groups {
            user_parents.entry(u.id.as_str()).or_default().insert(uid("Group", g)?);
        }
        for r in &u.member_of_roles {
            user_parents.entry(u.id.as_str()).or_default().insert(uid("Role", r)?);
        }
    }
    for a in &tenant.role_assignments {
        let scope = a.directory_scope_id.trim();
        if !(scope.is_empty() || scope == "/") {
            continue;
        }
        let role = uid("Role", &a.role_template_id)?;
        if user_ids.contains(a.principal_id.as_str()) {
            user_parents.entry(a.principal_id.as_str()).or_default().insert(role);
        } else {
            group_parents.entry(a.principal_id.as_str()).or_default().insert(role);
        }
    }

    let mut entities = Vec::with_capacity(tenant.users.len() + group_parents.len() + 200);
    let mut seen_users = HashSet::new();
    for u in &tenant.users {
        if !seen_users.insert(u.id.as_str()) {
            continue; // Gatehouse keeps the first copy of a duplicated user.
        }
        let guest_type = match (u.is_guest, u.is_external) {
            (true, true) => Some("b2bCollaborationGuest"),
            (false, true) => Some("b2bCollaborationMember"),
            (true, false) => Some("internalGuest"),
            (false, false) => None,
        };
        let attrs: HashMap<String, RestrictedExpression> = guest_type
            .map(|t| ("guestType".to_owned(), RestrictedExpression::new_string(t.to_owned())))
            .into_iter()
            .collect();
        let parents = user_parents.remove(u.id.as_str()).unwrap_or_default();
        entities.push(Entity::new(uid("User", &u.id)?, attrs, parents)?);
    }
    let mut roles = HashSet::new();
    for (g, parents) in group_parents {
        for p in &parents {
            if p.type_name().basename() == "Role" {
                roles.insert(p.clone());
            }
        }
        entities.push(Entity::new_no_attrs(uid("Group", g)?, parents));
    }
    for r in user_parents.values().flatten() {
        if r.type_name().basename() == "Role" {
            roles.insert(r.clone());
        }
    }
    for u in &tenant.users {
        for r in &u.member_of_roles {
            roles.insert(uid("Role", r)?);
        }
    }
    for r in roles {
        entities.push(Entity::new_no_attrs(r, HashSet::new()));
    }
    let mut app_parents: HashMap<&str, HashSet<EntityUid>> = HashMap::new();
    let office = uid("AppSuite", "Office365")?;
    let portals = uid("AppSuite", "MicrosoftAdminPortals")?;
    for a in suites::office365() {
        app_parents.entry(a).or_default().insert(office.clone());
    }
    for a in suites::admin_portals() {
        app_parents.entry(a).or_default().insert(portals.clone());
    }
    for (app, parents) in app_parents {
        entities.push(Entity::new_no_attrs(uid("App", app)?, parents));
    }
    entities.push(Entity::new_no_attrs(office, HashSet::new()));
    entities.push(Entity::new_no_attrs(portals, HashSet::new()));
    Ok(Entities::from_entities(entities, None)?)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// The Cedar request for a parsed sign-in. Refuses a request that leaves out a condition
/// (approximation 1) or names several applications (approximation 6).
pub fn request(req: &SignInRequest) -> Result<Request> {
    let missing = |what: &str| format!("the request does not supply {what}");
    let mut pairs: Vec<(String, RestrictedExpression)> = Vec::new();
    let string = |pairs: &mut Vec<(String, RestrictedExpression)>, k: &str, v: &str| {
        pairs.push((k.to_owned(), RestrictedExpression::new_string(v.to_owned())));
    };
    let principal = match &req.identity {
        Identity::User { user_id, external_tenant_id, external_user_type } => {
            if let Some(t) = external_user_type {
                string(&mut pairs, "externalUserType", name_of(GUEST_TYPES, Some(*t)));
            }
            if let Some(t) = external_tenant_id {
                string(&mut pairs, "externalTenantId", t);
            }
            uid("User", user_id)?
        }
        Identity::ServicePrincipal { .. } => {
            return Err("service-principal sign-ins are not modelled".into());
        }
    };
    let resource = match &req.target {
        Target::Apps(apps) => match apps.as_slice() {
            [one] => uid("App", one)?,
            _ => return Err("a Cedar request names exactly one application".into()),
        },
        Target::UserAction(a) => uid("UserAction", a.urn())?,
        Target::AuthContext(c) => uid("AuthContext", c)?,
    };
    let s = &req.conditions;
    let ip = s.ip_address.ok_or_else(|| missing("ipAddress"))?;
    pairs.push(("ip".into(), RestrictedExpression::new_ip(ip.to_string())));
    match &s.country {
        Some(Some(c)) => string(&mut pairs, "country", c),
        _ => return Err(missing("a country").into()),
    }
    let platform = s.device_platform.ok_or_else(|| missing("devicePlatform"))?;
    string(&mut pairs, "platform", name_of(PLATFORMS, platform));
    let client = s.client_app_type.ok_or_else(|| missing("clientAppType"))?;
    string(&mut pairs, "clientAppType", name_of(CLIENT_APP_TYPES, client));
    let risk =
        |r: Option<_>, what: &str| r.map(|r| name_of(RISK_LEVELS, r)).ok_or_else(|| missing(what));
    string(&mut pairs, "signInRisk", risk(s.sign_in_risk, "signInRiskLevel")?);
    string(&mut pairs, "userRisk", risk(s.user_risk, "userRiskLevel")?);
    if let Some(r) = s.service_principal_risk {
        string(&mut pairs, "servicePrincipalRisk", name_of(RISK_LEVELS, r));
    }
    let insider = s.insider_risk.ok_or_else(|| missing("insiderRiskLevel"))?;
    string(&mut pairs, "insiderRisk", name_of(INSIDER_RISK_LEVELS, insider));
    let flow = match s.authentication_flow {
        None => return Err(missing("authenticationFlow").into()),
        Some(None) => "none",
        Some(Some(t)) => name_of(TRANSFER_METHODS, t),
    };
    string(&mut pairs, "authFlow", flow);
    let device = s.device.as_ref().ok_or_else(|| missing("deviceInfo"))?;
    pairs.push(("device".into(), device_record(device)?));
    let context = Context::from_pairs(pairs)?;
    Ok(Request::new(principal, uid("Action", "signIn")?, resource, context, None)?)
}

/// The non-null device attributes, strings ASCII-lowercased (approximation 2).
fn device_record(d: &DeviceAttributes) -> Result<RestrictedExpression> {
    let mut fields: Vec<(String, RestrictedExpression)> = Vec::new();
    let text = |fields: &mut Vec<(String, RestrictedExpression)>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            fields.push((k.to_owned(), RestrictedExpression::new_string(v.to_ascii_lowercase())));
        }
    };
    text(&mut fields, "deviceId", &d.device_id);
    text(&mut fields, "displayName", &d.display_name);
    text(&mut fields, "enrollmentProfileName", &d.enrollment_profile_name);
    text(&mut fields, "manufacturer", &d.manufacturer);
    text(&mut fields, "model", &d.model);
    text(&mut fields, "operatingSystem", &d.operating_system);
    text(&mut fields, "operatingSystemVersion", &d.operating_system_version);
    for (i, v) in d.extension_attributes.iter().enumerate() {
        text(&mut fields, &format!("extensionAttribute{}", i + 1), v);
    }
    text(&mut fields, "deviceOwnership", &d.device_ownership);
    text(&mut fields, "mdmAppId", &d.mdm_app_id);
    text(&mut fields, "profileType", &d.profile_type);
    text(&mut fields, "trustType", &d.trust_type);
    if let Some(b) = d.is_compliant {
        fields.push(("isCompliant".into(), RestrictedExpression::new_bool(b)));
    }
    for (k, list) in [("physicalIds", &d.physical_ids), ("systemLabels", &d.system_labels)] {
        if let Some(list) = list {
            fields.push((
                k.into(),
                RestrictedExpression::new_set(
                    list.iter().map(|v| RestrictedExpression::new_string(v.to_ascii_lowercase())),
                ),
            ));
        }
    }
    Ok(RestrictedExpression::new_record(fields)?)
}
