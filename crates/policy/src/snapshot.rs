//! Compiling a tenant into an immutable snapshot built for evaluation speed.
//!
//! - Group closure is precomputed, but only for the groups policies mention: each user carries a
//!   bit set of "referenced groups I am in, directly or nested", so a users condition is a few
//!   word-wide ANDs.
//! - Policies are indexed by target (app id, user action, auth context), so a sign-in evaluates
//!   only the policies that can apply; the rest take a precomputed "not this target" result.
//! - Ids are interned to small integers at compile time; evaluation compares integers.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use crate::model::directory::RoleAssignment;
use crate::model::enums::*;
use crate::model::location::LocationKind;
use crate::model::policy::*;
use crate::model::strength::{AuthenticationStrength, built_in_strengths};
use crate::suites;
use crate::tenant::Tenant;

/// A fixed-width bit set over referenced groups or roles.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bits(Box<[u64]>);

impl Bits {
    fn new(width: usize) -> Self {
        Bits(vec![0; width.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    pub fn contains(&self, i: u32) -> bool {
        self.0.get(i as usize / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn contains_any(&self, positions: &[u32]) -> bool {
        positions.iter().any(|i| self.contains(*i))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// What the engine knows about one directory user.
#[derive(Debug, Clone)]
pub struct UserFacts {
    pub id: String,
    pub display_name: String,
    pub guest_type: Option<GuestType>,
    pub groups: Bits,
    pub roles: Bits,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledUsers {
    pub include_all: bool,
    pub exclude_all: bool,
    pub include_any_guest: bool,
    pub exclude_any_guest: bool,
    pub include_users: Vec<u32>,
    pub exclude_users: Vec<u32>,
    /// User ids the export does not hold: they still match a sign-in by that very id.
    pub include_other_ids: Vec<String>,
    pub exclude_other_ids: Vec<String>,
    /// Referenced-group and role bit positions: policies name few, users hold many, so the
    /// policy side is a short list tested against the user's dense bit set.
    pub include_groups: Vec<u32>,
    pub exclude_groups: Vec<u32>,
    pub include_roles: Vec<u32>,
    pub exclude_roles: Vec<u32>,
    pub include_guests: Option<GuestsOrExternalUsers>,
    pub exclude_guests: Option<GuestsOrExternalUsers>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledApps {
    pub include_all: bool,
    /// `excludeApplications: ["All"]`: exclusion beats inclusion, so no app is in scope.
    pub exclude_all: bool,
    /// Interned app ids (see `Snapshot::app_index`), sorted.
    pub include: Vec<u32>,
    pub exclude: Vec<u32>,
    pub actions: Vec<UserAction>,
    pub contexts: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledLocations {
    pub include_all: bool,
    pub exclude_all: bool,
    pub include_trusted: bool,
    pub include: Vec<u32>,
    pub exclude_trusted: bool,
    pub exclude: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    pub policy: Policy,
    pub users: Option<CompiledUsers>,
    pub apps: CompiledApps,
    pub locations: Option<CompiledLocations>,
    /// The grant's controls, ready for `decide`.
    pub controls: Vec<crate::decision::Control>,
    /// The combinations of the authentication strength the grant asks for (empty: none, or
    /// a strength the export does not hold, which can never be met).
    pub strength: Vec<crate::model::enums::MethodSet>,
    /// The policy's own Graph properties as JSON text without the braces, rendered once: the
    /// What-If answer repeats them for every applying policy (`Evaluation::to_graph_text`).
    pub graph_fields: String,
}

/// `"k":v,…` of a policy's raw object, without what the What-If answer sets itself.
fn graph_fields(raw: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut out = String::new();
    for (k, v) in raw {
        if matches!(
            k.as_str(),
            "@odata.type" | "@odata.context" | "policyApplies" | "analysisReasons"
        ) {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        // Serialising JSON values to a string cannot fail.
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    out
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledLocation {
    pub kind: LocationKind,
}

/// Which policies can apply to a target; everything else gets the target's "no" reason.
#[derive(Debug, Clone, Default)]
pub(crate) struct TargetIndex {
    pub all_apps: Vec<u16>,
    pub by_app: HashMap<u32, Vec<u16>>,
    pub by_action: HashMap<UserAction, Vec<u16>>,
    pub by_context: HashMap<String, Vec<u16>>,
}

/// An immutable, compiled tenant: what a sign-in is evaluated against.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) policies: Vec<CompiledPolicy>,
    pub(crate) users: Vec<UserFacts>,
    pub(crate) user_index: HashMap<String, u32>,
    /// Users by user principal name (lowercase), for requests that name users that way.
    pub(crate) upn_index: HashMap<String, u32>,
    pub(crate) locations: Vec<CompiledLocation>,
    /// Indices of IP locations marked trusted (`AllTrusted`).
    pub(crate) trusted_locations: Vec<u32>,
    pub(crate) index: TargetIndex,
    /// Every app id a policy names (suites expanded), interned.
    pub(crate) app_index: HashMap<String, u32>,
    pub(crate) empty_bits: (Bits, Bits),
    pub(crate) strengths: HashMap<String, AuthenticationStrength>,
    /// The built-in MFA strength: what `mfa` means, looked up once.
    pub(crate) mfa_strength: AuthenticationStrength,
    /// Service principals by app id and by object id, to the pair of both (lists in policies
    /// and What-If requests use either).
    pub(crate) service_principals: HashMap<String, [String; 2]>,
}

/// The most policies Entra allows in a tenant; the index uses `u16` positions.
pub const MAX_POLICIES: usize = u16::MAX as usize;

impl Snapshot {
    pub fn compile(tenant: &Tenant) -> Snapshot {
        let mut users: Vec<UserFacts> = Vec::with_capacity(tenant.users.len());
        let mut user_index = HashMap::with_capacity(tenant.users.len());
        let mut upn_index = HashMap::new();
        for u in &tenant.users {
            if user_index.contains_key(&u.id) {
                continue;
            }
            user_index.insert(u.id.clone(), users.len() as u32);
            if let Some(upn) = &u.user_principal_name {
                upn_index.insert(upn.to_ascii_lowercase(), users.len() as u32);
            }
            let guest_type = match (u.is_guest, u.is_external) {
                (true, true) => Some(GuestType::B2bCollaborationGuest),
                (false, true) => Some(GuestType::B2bCollaborationMember),
                (true, false) => Some(GuestType::InternalGuest),
                (false, false) => None,
            };
            users.push(UserFacts {
                id: u.id.clone(),
                display_name: u.display_name.clone(),
                guest_type,
                groups: Bits::default(),
                roles: Bits::default(),
            });
        }

        // Intern the groups and roles that policies mention.
        let mut group_refs: HashMap<String, usize> = HashMap::new();
        let mut role_refs: HashMap<String, usize> = HashMap::new();
        for p in tenant.policies.iter().filter(|p| p.state != PolicyState::Disabled) {
            if let Some(u) = &p.conditions.users {
                for g in u.include_groups.iter().chain(&u.exclude_groups) {
                    let n = group_refs.len();
                    group_refs.entry(g.clone()).or_insert(n);
                }
                for r in u.include_roles.iter().chain(&u.exclude_roles) {
                    let n = role_refs.len();
                    role_refs.entry(r.clone()).or_insert(n);
                }
            }
        }
        let (gw, rw) = (group_refs.len(), role_refs.len());
        for u in &mut users {
            u.groups = Bits::new(gw);
            u.roles = Bits::new(rw);
        }

        // Membership edges: group -> members, from groups' `members` and users' `memberOf`.
        let mut members: HashMap<&str, Vec<&str>> = HashMap::new();
        for g in &tenant.groups {
            members.entry(g.id.as_str()).or_default().extend(g.members.iter().map(String::as_str));
        }
        for u in &tenant.users {
            for g in &u.member_of_groups {
                members.entry(g.as_str()).or_default().push(u.id.as_str());
            }
        }
        // For each referenced group, walk down its nested members (cycle-safe) and mark users.
        for (group, bit) in &group_refs {
            for user in transitive_users(&members, group, &user_index) {
                if let Some(u) = users.get_mut(user as usize) {
                    u.groups.set(*bit);
                }
            }
        }
        // Roles: only tenant-wide assignments count; a role held by a group reaches its members.
        let assignments = tenant.role_assignments.iter().filter(|a| is_tenant_wide(a));
        for a in assignments {
            let Some(bit) = role_refs.get(&a.role_template_id) else {
                continue;
            };
            let holders: Vec<u32> = match user_index.get(&a.principal_id) {
                Some(u) => vec![*u],
                None => transitive_users(&members, &a.principal_id, &user_index),
            };
            for h in holders {
                if let Some(u) = users.get_mut(h as usize) {
                    u.roles.set(*bit);
                }
            }
        }
        for u in &tenant.users {
            for r in &u.member_of_roles {
                if let (Some(bit), Some(idx)) = (role_refs.get(r), user_index.get(&u.id))
                    && let Some(facts) = users.get_mut(*idx as usize)
                {
                    facts.roles.set(*bit);
                }
            }
        }

        let mut locations = Vec::new();
        let mut location_index = HashMap::new();
        let mut trusted_locations = Vec::new();
        for l in &tenant.named_locations {
            let i = locations.len() as u32;
            location_index.insert(l.id.clone(), i);
            if l.is_trusted() {
                trusted_locations.push(i);
            }
            locations.push(CompiledLocation { kind: l.kind.clone() });
        }

        let mut strengths: HashMap<String, AuthenticationStrength> =
            built_in_strengths().into_iter().map(|s| (s.id.clone(), s)).collect();
        for s in &tenant.strengths {
            strengths.insert(s.id.clone(), s.clone());
        }

        let bits_of = |ids: &[String], refs: &HashMap<String, usize>| -> Vec<u32> {
            ids.iter().filter_map(|id| refs.get(id)).map(|i| *i as u32).collect()
        };
        let other_ids = |refs: &[UserRef]| -> Vec<String> {
            refs.iter()
                .filter_map(|r| match r {
                    UserRef::Id(id) if !user_index.contains_key(id) => Some(id.clone()),
                    _ => None,
                })
                .collect()
        };
        let user_ids = |refs: &[UserRef]| -> Vec<u32> {
            refs.iter()
                .filter_map(|r| match r {
                    UserRef::Id(id) => user_index.get(id).copied(),
                    _ => None,
                })
                .collect()
        };
        let loc_ids = |refs: &[LocationRef]| -> Vec<u32> {
            refs.iter()
                .filter_map(|r| match r {
                    LocationRef::Id(id) => location_index.get(id).copied(),
                    _ => None,
                })
                .collect()
        };

        let mut app_index: HashMap<String, u32> = HashMap::new();
        let mut policies = Vec::with_capacity(tenant.policies.len());
        // `load` refuses more than MAX_POLICIES, so nothing is dropped here.
        for p in tenant.policies.iter().take(MAX_POLICIES) {
            let users_c = p.conditions.users.as_ref().map(|u| CompiledUsers {
                // `All` in the exclusions excludes everyone: exclusion beats inclusion.
                include_all: u.include_users.contains(&UserRef::All)
                    && !u.exclude_users.contains(&UserRef::All),
                exclude_all: u.exclude_users.contains(&UserRef::All),
                include_any_guest: u.include_users.contains(&UserRef::GuestsOrExternalUsers),
                exclude_any_guest: u.exclude_users.contains(&UserRef::GuestsOrExternalUsers),
                include_users: user_ids(&u.include_users),
                exclude_users: user_ids(&u.exclude_users),
                include_other_ids: other_ids(&u.include_users),
                exclude_other_ids: other_ids(&u.exclude_users),
                include_groups: bits_of(&u.include_groups, &group_refs),
                exclude_groups: bits_of(&u.exclude_groups, &group_refs),
                include_roles: bits_of(&u.include_roles, &role_refs),
                exclude_roles: bits_of(&u.exclude_roles, &role_refs),
                include_guests: u.include_guests.clone(),
                exclude_guests: u.exclude_guests.clone(),
            });
            let a = &p.conditions.applications;
            let mut intern = |refs: &[AppRef]| -> Vec<u32> {
                let mut ids: Vec<u32> = expand_apps(refs)
                    .into_iter()
                    .map(|app| {
                        let n = app_index.len() as u32;
                        *app_index.entry(app).or_insert(n)
                    })
                    .collect();
                ids.sort_unstable();
                ids
            };
            let apps = CompiledApps {
                include_all: a.include_applications.contains(&AppRef::All),
                exclude_all: a.exclude_applications.contains(&AppRef::All),
                include: intern(&a.include_applications),
                exclude: intern(&a.exclude_applications),
                actions: a.include_user_actions.clone(),
                contexts: a.include_auth_contexts.clone(),
            };
            let locations_c = p.conditions.locations.as_ref().map(|l| CompiledLocations {
                include_all: l.include.contains(&LocationRef::All),
                exclude_all: l.exclude.contains(&LocationRef::All),
                include_trusted: l.include.contains(&LocationRef::AllTrusted),
                include: loc_ids(&l.include),
                exclude_trusted: l.exclude.contains(&LocationRef::AllTrusted),
                exclude: loc_ids(&l.exclude),
            });
            let strength = p
                .grant
                .as_ref()
                .and_then(|g| g.authentication_strength.as_ref())
                .and_then(|r| strengths.get(&r.id).cloned().or_else(|| r.embedded.clone()));
            let controls = crate::decision::controls_of(p, strength.as_ref());
            let strength = strength.map(|s| s.combinations).unwrap_or_default();
            policies.push(CompiledPolicy {
                graph_fields: graph_fields(&p.raw),
                policy: p.clone(),
                users: users_c,
                apps,
                locations: locations_c,
                controls,
                strength,
            });
        }

        let mut index = TargetIndex::default();
        for (i, cp) in policies.iter().enumerate() {
            if cp.policy.state == PolicyState::Disabled {
                continue;
            }
            let i = i as u16;
            if cp.apps.include_all {
                index.all_apps.push(i);
            } else {
                for app in &cp.apps.include {
                    index.by_app.entry(*app).or_default().push(i);
                }
            }
            for action in &cp.apps.actions {
                index.by_action.entry(*action).or_default().push(i);
            }
            for ctx in &cp.apps.contexts {
                index.by_context.entry(ctx.clone()).or_default().push(i);
            }
        }

        let mut service_principals = HashMap::new();
        for a in &tenant.applications {
            let pair = [a.app_id.clone(), a.object_id.clone().unwrap_or_else(|| a.app_id.clone())];
            service_principals.insert(a.app_id.clone(), pair.clone());
            if let Some(object_id) = &a.object_id {
                service_principals.insert(object_id.clone(), pair);
            }
        }
        Snapshot {
            policies,
            users,
            user_index,
            upn_index,
            locations,
            trusted_locations,
            index,
            app_index,
            empty_bits: (Bits::new(gw), Bits::new(rw)),
            mfa_strength: strengths
                .get(crate::model::strength::MFA_STRENGTH_ID)
                .cloned()
                .unwrap_or_else(|| AuthenticationStrength {
                    id: String::new(),
                    display_name: String::new(),
                    built_in: true,
                    combinations: Vec::new(),
                    combination_names: Vec::new(),
                    raw: serde_json::Map::new(),
                }),
            strengths,
            service_principals,
        }
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter().map(|p| &p.policy)
    }

    pub fn user(&self, id: &str) -> Option<&UserFacts> {
        self.user_index.get(id).and_then(|i| self.users.get(*i as usize))
    }

    pub fn strength(&self, id: &str) -> Option<&AuthenticationStrength> {
        self.strengths.get(id)
    }
}

fn is_tenant_wide(a: &RoleAssignment) -> bool {
    let s = a.directory_scope_id.trim();
    s.is_empty() || s == "/"
}

fn expand_apps(refs: &[AppRef]) -> HashSet<String> {
    let mut out = HashSet::new();
    for r in refs {
        match r {
            AppRef::Id(id) => {
                out.insert(id.clone());
            }
            AppRef::Office365 => out.extend(suites::office365().map(str::to_owned)),
            AppRef::MicrosoftAdminPortals => {
                out.extend(suites::admin_portals().map(str::to_owned));
            }
            AppRef::All | AppRef::None | AppRef::AllAgentIdResources => {}
        }
    }
    out
}

/// Every user reached from `root` through nested group membership; cycles are harmless.
fn transitive_users(
    members: &HashMap<&str, Vec<&str>>,
    root: &str,
    user_index: &HashMap<String, u32>,
) -> Vec<u32> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = vec![root];
    let mut out = Vec::new();
    while let Some(g) = stack.pop() {
        let Some(list) = members.get(g) else { continue };
        for m in list {
            if !seen.insert(m) {
                continue;
            }
            if let Some(u) = user_index.get(*m) {
                out.push(*u);
            } else {
                stack.push(m);
            }
        }
    }
    out
}

/// True when an IP location contains the address.
pub(crate) fn ip_in(ranges: &[IpNet], ip: &std::net::IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(ip))
}
