//! The in-memory directory: what the Graph API reads and the Conditional Access snapshot is
//! compiled from.
//!
//! Objects live in a `gatehouse_policy::Tenant` (so compiling a snapshot reads them in place,
//! without a copy), with ordered indexes beside it: by id (which is also the paging order) and
//! by user principal name, plus the reverse of group membership.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use gatehouse_policy::json::{JsonPath, Obj, normalize_id};
use gatehouse_policy::model::directory::{
    Application, Group, RoleAssignment, User, parse_application, parse_group,
    parse_role_assignment, parse_user,
};
use gatehouse_policy::model::location::NamedLocation;
use gatehouse_policy::model::policy::Policy;
use gatehouse_policy::model::strength::AuthenticationStrength;
use gatehouse_policy::{SourceFile, Tenant};
use serde_json::{Map, Value};

use crate::change::Change;
use crate::governance::model::GrantedRole;
use crate::grants::{Flip, GrantRow, Grants};
use crate::roles::Role;
use crate::time::Millis;

/// Positions of a tenant vector's items by id, in id order.
#[derive(Debug, Default, Clone)]
struct Index(BTreeMap<String, usize>);

impl Index {
    fn get<'v, T>(&self, items: &'v [T], id: &str) -> Option<&'v T> {
        self.0.get(id).and_then(|i| items.get(*i))
    }

    fn put<T>(&mut self, items: &mut Vec<T>, id: String, item: T) {
        match self.0.get(&id) {
            Some(i) => {
                if let Some(slot) = items.get_mut(*i) {
                    *slot = item;
                }
            }
            None => {
                self.0.insert(id, items.len());
                items.push(item);
            }
        }
    }

    /// Removes by swapping the last item into the hole; `id_of` re-indexes the moved item.
    fn remove<T>(
        &mut self,
        items: &mut Vec<T>,
        id: &str,
        id_of: impl Fn(&T) -> String,
    ) -> Option<T> {
        let i = self.0.remove(id)?;
        if i >= items.len() {
            return None;
        }
        let removed = items.swap_remove(i);
        if let Some(moved) = items.get(i) {
            self.0.insert(id_of(moved), i);
        }
        Some(removed)
    }

    fn ordered<'v, T>(&'v self, items: &'v [T]) -> impl Iterator<Item = &'v T> + 'v {
        self.0.values().filter_map(|i| items.get(*i))
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// What applying a change means for the rest of the node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effect {
    /// The Conditional Access snapshot must be compiled again.
    pub recompile: bool,
    /// Cached sessions of these users must be dropped.
    pub revoke_sessions_of: Vec<String>,
    /// The store must be read again in full.
    pub reload: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("change refused: {0}")]
pub struct ApplyError(pub String);

/// The kinds of directory objects a member or principal id can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    User,
    Group,
    ServicePrincipal,
    Device,
}

#[derive(Debug, Default, Clone)]
pub struct Directory {
    tenant: Tenant,
    users: Index,
    upns: HashMap<String, String>,
    groups: Index,
    /// member id -> the groups it is a direct member of.
    member_of: HashMap<String, BTreeSet<String>>,
    role_assignments: Index,
    service_principals: Index,
    devices: BTreeMap<String, Map<String, Value>>,
    policies: Index,
    locations: Index,
    strengths: Index,
    auth_methods_policy: Option<Value>,
    /// Roles held through access package assignments, as of an instant (`advance`).
    grants: Grants,
    /// user id -> the users sponsoring them.
    sponsors: HashMap<String, BTreeSet<String>>,
}

fn root_obj<'a>(map: &'a Value, path: &'a JsonPath) -> Result<Obj<'a>, ApplyError> {
    Obj::new(map, path).map_err(|e| ApplyError(e.to_string()))
}

/// Parses one policy-crate object (policy, named location, strength) the way an import does,
/// so the API validates exactly as the engine loads.
pub fn load_one(kind_file: &str, object: &Map<String, Value>) -> Result<Tenant, String> {
    let loaded = check_one(kind_file, object)
        .map_err(|e| e.errors.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; "))?;
    Ok(loaded.tenant)
}

/// As [`load_one`], keeping the diagnostics (each with its JSON path) and the warnings: the API
/// says where an object is wrong.
pub fn check_one(
    kind_file: &str,
    object: &Map<String, Value>,
) -> Result<gatehouse_policy::Loaded, gatehouse_policy::LoadError> {
    // Serialising a `Map` of JSON values cannot fail.
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    gatehouse_policy::load(&[SourceFile { name: kind_file.to_owned(), bytes }])
}

impl Directory {
    pub fn new() -> Self {
        Directory::default()
    }

    /// The tenant the Conditional Access snapshot compiles from.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn apply(&mut self, change: &Change) -> Result<Effect, ApplyError> {
        let ca = Effect { recompile: true, ..Effect::default() };
        let root = JsonPath::root();
        match change {
            Change::PutUser { user, manager } => {
                let value = Value::Object(user.clone());
                let mut parsed =
                    parse_user(root_obj(&value, &root)?).map_err(|e| ApplyError(e.to_string()))?;
                parsed.manager = manager.clone();
                if let Some(old) = self.users.get(&self.tenant.users, &parsed.id)
                    && let Some(upn) = &old.user_principal_name
                {
                    self.upns.remove(&upn.to_lowercase());
                }
                if let Some(upn) = &parsed.user_principal_name {
                    self.upns.insert(upn.to_lowercase(), parsed.id.clone());
                }
                let disabled = !parsed.account_enabled;
                let id = parsed.id.clone();
                self.users.put(&mut self.tenant.users, id.clone(), parsed);
                let mut effect = ca;
                if disabled {
                    effect.revoke_sessions_of.push(id);
                }
                Ok(effect)
            }
            Change::DeleteUser { id } => {
                if let Some(old) = self.users.remove(&mut self.tenant.users, id, |u| u.id.clone())
                    && let Some(upn) = &old.user_principal_name
                {
                    self.upns.remove(&upn.to_lowercase());
                }
                self.forget_member(id);
                for u in &mut self.tenant.users {
                    if u.manager.as_deref() == Some(id) {
                        u.manager = None;
                    }
                }
                self.drop_assignments_of(id);
                self.grants.forget(id);
                self.sponsors.remove(id);
                for s in self.sponsors.values_mut() {
                    s.remove(id);
                }
                Ok(Effect { recompile: true, revoke_sessions_of: vec![id.clone()], reload: false })
            }
            Change::PutGroup { group } => {
                let mut value = group.clone();
                value.remove("members");
                let value = Value::Object(value);
                let mut parsed =
                    parse_group(root_obj(&value, &root)?).map_err(|e| ApplyError(e.to_string()))?;
                if let Some(old) = self.groups.get(&self.tenant.groups, &parsed.id) {
                    parsed.members = old.members.clone();
                }
                self.groups.put(&mut self.tenant.groups, parsed.id.clone(), parsed);
                Ok(ca)
            }
            Change::DeleteGroup { id } => {
                if let Some(g) = self.groups.remove(&mut self.tenant.groups, id, |g| g.id.clone()) {
                    for m in &g.members {
                        if let Some(set) = self.member_of.get_mut(m) {
                            set.remove(id);
                        }
                    }
                }
                self.forget_member(id);
                self.drop_assignments_of(id);
                self.grants.forget(id);
                Ok(ca)
            }
            Change::AddMember { group, member } => {
                if !self.groups.0.contains_key(group) {
                    return Err(ApplyError(format!("group {group} does not exist")));
                }
                let role = GrantedRole::GroupMember { group_id: group.clone() };
                self.grants.set_direct(&role, member, true);
                self.set_member(group, member, true);
                Ok(ca)
            }
            Change::RemoveMember { group, member } => {
                let role = GrantedRole::GroupMember { group_id: group.clone() };
                // A member an access package also grants stays until the grant ends.
                let held = self.grants.set_direct(&role, member, false).unwrap_or(false);
                self.set_member(group, member, held);
                Ok(ca)
            }
            Change::Grant { grant } => {
                let flip = {
                    let tenant_groups = &self.tenant.groups;
                    let groups = &self.groups;
                    self.grants.put(grant, || match &grant.role {
                        GrantedRole::GroupMember { group_id } => groups
                            .get(tenant_groups, group_id)
                            .is_some_and(|g| g.members.contains(&grant.principal)),
                        _ => false,
                    })
                };
                Ok(self.mirror(flip.into_iter().collect()))
            }
            Change::Revoke { role, principal, assignment } => {
                let flip = self.grants.remove(role, principal, assignment);
                Ok(self.mirror(flip.into_iter().collect()))
            }
            Change::SetSponsors { user, sponsors } => {
                if sponsors.is_empty() {
                    self.sponsors.remove(user);
                } else {
                    self.sponsors.insert(user.clone(), sponsors.iter().cloned().collect());
                }
                Ok(Effect::default())
            }
            Change::PutRoleAssignment { assignment } => {
                let value = Value::Object(assignment.clone());
                let parsed = parse_role_assignment(root_obj(&value, &root)?)
                    .map_err(|e| ApplyError(e.to_string()))?;
                let id = assignment_id(&parsed);
                self.role_assignments.put(&mut self.tenant.role_assignments, id, parsed);
                Ok(ca)
            }
            Change::DeleteRoleAssignment { id } => {
                self.role_assignments.remove(&mut self.tenant.role_assignments, id, assignment_id);
                Ok(ca)
            }
            Change::PutServicePrincipal { service_principal } => {
                let value = Value::Object(service_principal.clone());
                let parsed = parse_application(root_obj(&value, &root)?)
                    .map_err(|e| ApplyError(e.to_string()))?;
                let id = sp_id(&parsed);
                self.service_principals.put(&mut self.tenant.applications, id, parsed);
                Ok(ca)
            }
            Change::DeleteServicePrincipal { id } => {
                self.service_principals.remove(&mut self.tenant.applications, id, sp_id);
                self.forget_member(id);
                self.grants.forget(id);
                Ok(ca)
            }
            Change::PutDevice { device } => {
                let id = device.get("id").and_then(Value::as_str).map(normalize_id);
                let Some(id) = id else {
                    return Err(ApplyError("a device needs an id".into()));
                };
                self.devices.insert(id, device.clone());
                Ok(Effect::default())
            }
            Change::DeleteDevice { id } => {
                self.devices.remove(id);
                self.forget_member(id);
                Ok(Effect::default())
            }
            Change::PutPolicy { policy } => {
                let t = load_one("conditionalAccessPolicy.json", policy).map_err(ApplyError)?;
                for p in t.policies {
                    self.policies.put(&mut self.tenant.policies, p.id.clone(), p);
                }
                Ok(ca)
            }
            Change::DeletePolicy { id } => {
                self.policies.remove(&mut self.tenant.policies, id, |p| p.id.clone());
                Ok(ca)
            }
            Change::PutNamedLocation { location } => {
                let t = load_one("namedLocation.json", location).map_err(ApplyError)?;
                for l in t.named_locations {
                    self.locations.put(&mut self.tenant.named_locations, l.id.clone(), l);
                }
                Ok(ca)
            }
            Change::DeleteNamedLocation { id } => {
                self.locations.remove(&mut self.tenant.named_locations, id, |l| l.id.clone());
                Ok(ca)
            }
            Change::PutStrength { strength } => {
                let t = load_one("authenticationStrength.json", strength).map_err(ApplyError)?;
                for s in t.strengths {
                    self.strengths.put(&mut self.tenant.strengths, s.id.clone(), s);
                }
                Ok(ca)
            }
            Change::DeleteStrength { id } => {
                self.strengths.remove(&mut self.tenant.strengths, id, |s| s.id.clone());
                Ok(ca)
            }
            Change::PutAuthMethodsPolicy { policy } => {
                self.auth_methods_policy = Some(policy.clone());
                Ok(Effect::default())
            }
            // Dropping all of the user's cached sessions is safe: the others reload from the store.
            Change::RevokeSessions { user_id }
            | Change::EndTapSessions { user_id, .. }
            | Change::EndSession { user_id, .. } => {
                Ok(Effect { revoke_sessions_of: vec![user_id.clone()], ..Effect::default() })
            }
            Change::Reload => Ok(Effect { recompile: true, reload: true, ..Effect::default() }),
        }
    }

    /// Applies a change that the store has already validated; failures are reported, not fatal.
    pub fn apply_all<'c>(
        &mut self,
        changes: impl IntoIterator<Item = &'c Change>,
    ) -> (Effect, Vec<ApplyError>) {
        let mut total = Effect::default();
        let mut errors = Vec::new();
        for c in changes {
            match self.apply(c) {
                Ok(e) => {
                    total.recompile |= e.recompile;
                    total.reload |= e.reload;
                    total.revoke_sessions_of.extend(e.revoke_sessions_of);
                }
                Err(e) => errors.push(e),
            }
        }
        (total, errors)
    }

    /// Makes `member` a member of `group` in the tenant the snapshot compiles from, or not.
    fn set_member(&mut self, group: &str, member: &str, present: bool) {
        let Some(i) = self.groups.0.get(group).copied() else { return };
        if let Some(g) = self.tenant.groups.get_mut(i) {
            let has = g.members.iter().any(|m| m == member);
            if present && !has {
                g.members.push(member.to_owned());
            } else if !present && has {
                g.members.retain(|m| m != member);
            }
        }
        if present {
            self.member_of.entry(member.to_owned()).or_default().insert(group.to_owned());
        } else if let Some(set) = self.member_of.get_mut(member) {
            set.remove(group);
        }
    }

    /// Mirrors grants that started or ended into group membership.
    fn mirror(&mut self, flips: Vec<Flip>) -> Effect {
        let mut effect = Effect::default();
        for f in flips {
            if let GrantedRole::GroupMember { group_id } = &f.role {
                self.set_member(group_id, &f.principal, f.held);
                effect.recompile = true;
            }
        }
        effect
    }

    /// Evaluates grants as of `now` (never backwards): grants that started or ended since the
    /// last evaluation take effect. Returns whether Conditional Access must be recompiled.
    pub fn advance(&mut self, now: Millis) -> Effect {
        let flips = self.grants.advance(now);
        self.mirror(flips)
    }

    /// When a grant next starts or ends: the snapshot is valid until then.
    pub fn next_grant_boundary(&self) -> Option<Millis> {
        self.grants.next_boundary()
    }

    /// The instant grants were last evaluated at.
    pub fn grants_as_of(&self) -> Millis {
        self.grants.as_of()
    }

    /// Installs the stored grants after a load (`replace_all`), evaluated as of `now`. Group
    /// members loaded so far are the direct ones.
    pub fn load_grants(&mut self, rows: Vec<GrantRow>, now: Millis) {
        let grants = {
            let (groups, index) = (&self.tenant.groups, &self.groups);
            Grants::load(
                rows,
                |r| match &r.role {
                    GrantedRole::GroupMember { group_id } => index
                        .get(groups, group_id)
                        .is_some_and(|g| g.members.contains(&r.principal)),
                    _ => false,
                },
                now,
            )
        };
        let held: Vec<(String, String)> = grants
            .held()
            .filter_map(|(role, p)| match role {
                GrantedRole::GroupMember { group_id } => Some((group_id.clone(), p.to_owned())),
                _ => None,
            })
            .collect();
        self.grants = grants;
        for (g, p) in held {
            self.set_member(&g, &p, true);
        }
    }

    /// Sponsors loaded from the store.
    pub fn load_sponsors(&mut self, rows: Vec<(String, String)>) {
        for (user, sponsor) in rows {
            self.sponsors.entry(user).or_default().insert(sponsor);
        }
    }

    fn forget_member(&mut self, id: &str) {
        if let Some(groups) = self.member_of.remove(id) {
            for g in groups {
                if let Some(i) = self.groups.0.get(&g).copied()
                    && let Some(group) = self.tenant.groups.get_mut(i)
                {
                    group.members.retain(|m| m != id);
                }
            }
        }
    }

    fn drop_assignments_of(&mut self, principal: &str) {
        let ids: Vec<String> = self
            .role_assignments
            .ordered(&self.tenant.role_assignments)
            .filter(|a| a.principal_id == principal)
            .map(assignment_id)
            .collect();
        for id in ids {
            self.role_assignments.remove(&mut self.tenant.role_assignments, &id, assignment_id);
        }
    }

    // ----- reads -----

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(&self.tenant.users, id)
    }

    /// A user by object id or user principal name (Graph accepts either in `/users/{id}`).
    pub fn resolve_user(&self, id_or_upn: &str) -> Option<&User> {
        self.user(&normalize_id(id_or_upn))
            .or_else(|| self.upns.get(&id_or_upn.to_lowercase()).and_then(|id| self.user(id)))
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.ordered(&self.tenant.users)
    }

    pub fn user_count(&self) -> usize {
        self.tenant.users.len()
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(&self.tenant.groups, id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.ordered(&self.tenant.groups)
    }

    pub fn group_count(&self) -> usize {
        self.tenant.groups.len()
    }

    pub fn service_principal(&self, id: &str) -> Option<&Application> {
        self.service_principals.get(&self.tenant.applications, id)
    }

    pub fn service_principals(&self) -> impl Iterator<Item = &Application> {
        self.service_principals.ordered(&self.tenant.applications)
    }

    pub fn device(&self, id: &str) -> Option<&Map<String, Value>> {
        self.devices.get(id)
    }

    pub fn devices(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.devices.values()
    }

    pub fn role_assignment(&self, id: &str) -> Option<&RoleAssignment> {
        self.role_assignments.get(&self.tenant.role_assignments, id)
    }

    pub fn role_assignments(&self) -> impl Iterator<Item = &RoleAssignment> {
        self.role_assignments.ordered(&self.tenant.role_assignments)
    }

    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.get(&self.tenant.policies, id)
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.ordered(&self.tenant.policies)
    }

    pub fn named_location(&self, id: &str) -> Option<&NamedLocation> {
        self.locations.get(&self.tenant.named_locations, id)
    }

    pub fn named_locations(&self) -> impl Iterator<Item = &NamedLocation> {
        self.locations.ordered(&self.tenant.named_locations)
    }

    pub fn strength(&self, id: &str) -> Option<&AuthenticationStrength> {
        self.strengths.get(&self.tenant.strengths, id)
    }

    pub fn strengths(&self) -> impl Iterator<Item = &AuthenticationStrength> {
        self.strengths.ordered(&self.tenant.strengths)
    }

    pub fn auth_methods_policy(&self) -> Option<&Value> {
        self.auth_methods_policy.as_ref()
    }

    /// What kind of object an id names, if any.
    pub fn kind_of(&self, id: &str) -> Option<ObjectKind> {
        if self.user(id).is_some() {
            Some(ObjectKind::User)
        } else if self.group(id).is_some() {
            Some(ObjectKind::Group)
        } else if self.service_principal(id).is_some() {
            Some(ObjectKind::ServicePrincipal)
        } else if self.devices.contains_key(id) {
            Some(ObjectKind::Device)
        } else {
            None
        }
    }

    pub fn manager_of(&self, user: &str) -> Option<&User> {
        self.user(user)?.manager.as_deref().and_then(|m| self.user(m))
    }

    pub fn direct_reports(&self, manager: &str) -> impl Iterator<Item = &User> {
        self.users().filter(move |u| u.manager.as_deref() == Some(manager))
    }

    /// A user's sponsors.
    pub fn sponsors_of(&self, user: &str) -> impl Iterator<Item = &String> {
        self.sponsors.get(user).into_iter().flatten()
    }

    /// Is `member` a direct member of `group` (not only through an access package)?
    pub fn is_direct_member(&self, group: &str, member: &str) -> bool {
        let role = GrantedRole::GroupMember { group_id: group.to_owned() };
        match self.grants.is_direct(&role, member) {
            Some(direct) => direct,
            None => self.members(group).iter().any(|m| m == member),
        }
    }

    /// The assignments through which `principal` holds `role` now.
    pub fn granting_assignments(&self, role: &GrantedRole, principal: &str) -> Vec<String> {
        self.grants.granting_assignments(role, principal)
    }

    /// Principals holding a granted role now: group owners and app roles live only here.
    pub fn granted_roles(&self) -> impl Iterator<Item = (&GrantedRole, &str)> {
        self.grants.held()
    }

    pub fn members(&self, group: &str) -> &[String] {
        self.group(group).map(|g| g.members.as_slice()).unwrap_or_default()
    }

    /// Members of a group and of every group nested in it (cycle-safe), each once, sorted.
    pub fn transitive_members(&self, group: &str) -> Vec<String> {
        let mut seen_groups = HashSet::from([group.to_owned()]);
        let mut out = BTreeSet::new();
        let mut stack = vec![group.to_owned()];
        while let Some(g) = stack.pop() {
            for m in self.members(&g) {
                if out.insert(m.clone()) && self.group(m).is_some() && seen_groups.insert(m.clone())
                {
                    stack.push(m.clone());
                }
            }
        }
        out.remove(group);
        out.into_iter().collect()
    }

    /// The groups an object is a direct member of, sorted.
    pub fn member_of(&self, id: &str) -> Vec<String> {
        self.member_of.get(id).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Every group an object is in, directly or through nesting, sorted.
    pub fn transitive_member_of(&self, id: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![id.to_owned()];
        while let Some(x) = stack.pop() {
            if let Some(groups) = self.member_of.get(&x) {
                for g in groups {
                    if out.insert(g.clone()) {
                        stack.push(g.clone());
                    }
                }
            }
        }
        out.remove(id);
        out.into_iter().collect()
    }

    /// The built-in roles a user holds tenant-wide, directly or through a group.
    pub fn roles_of(&self, user: &str) -> Vec<Role> {
        let groups: HashSet<String> = self.transitive_member_of(user).into_iter().collect();
        let mut roles: Vec<Role> = self
            .role_assignments()
            .filter(|a| a.directory_scope_id == "/" || a.directory_scope_id.is_empty())
            .filter(|a| a.principal_id == user || groups.contains(&a.principal_id))
            .filter_map(|a| Role::from_template_id(&a.role_template_id))
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Policies whose conditions name this id (a group, user, role or named location):
    /// deleting the object would change what they do.
    pub fn policies_referencing(&self, id: &str) -> Vec<&Policy> {
        self.policies()
            .filter(|p| {
                let raw = Value::Object(p.raw.clone());
                mentions(&raw, id)
            })
            .collect()
    }

    /// Replaces everything (an import or a start-up load) in one step.
    pub fn replace_all(
        &mut self,
        tenant: Tenant,
        devices: Vec<Map<String, Value>>,
        auth: Option<Value>,
    ) {
        *self = Directory::default();
        let Tenant {
            policies,
            named_locations,
            users,
            groups,
            role_assignments,
            applications,
            strengths,
        } = tenant;
        for u in users {
            if let Some(upn) = &u.user_principal_name {
                self.upns.insert(upn.to_lowercase(), u.id.clone());
            }
            self.users.put(&mut self.tenant.users, u.id.clone(), u);
        }
        for g in groups {
            for m in &g.members {
                self.member_of.entry(m.clone()).or_default().insert(g.id.clone());
            }
            self.groups.put(&mut self.tenant.groups, g.id.clone(), g);
        }
        for a in role_assignments {
            self.role_assignments.put(&mut self.tenant.role_assignments, assignment_id(&a), a);
        }
        for s in applications {
            self.service_principals.put(&mut self.tenant.applications, sp_id(&s), s);
        }
        for p in policies {
            self.policies.put(&mut self.tenant.policies, p.id.clone(), p);
        }
        for l in named_locations {
            self.locations.put(&mut self.tenant.named_locations, l.id.clone(), l);
        }
        for s in strengths {
            self.strengths.put(&mut self.tenant.strengths, s.id.clone(), s);
        }
        for d in devices {
            if let Some(id) = d.get("id").and_then(Value::as_str) {
                self.devices.insert(normalize_id(id), d);
            }
        }
        self.auth_methods_policy = auth;
    }

    #[doc(hidden)]
    pub fn clear_indexes_for_tests(&mut self) {
        self.users.clear();
    }
}

/// A role assignment's id: its own `id`, or `{role}_{principal}` for exports that lack one.
pub fn assignment_id(a: &RoleAssignment) -> String {
    match a.raw.get("id").and_then(Value::as_str) {
        Some(id) => normalize_id(id),
        None => format!("{}_{}", a.role_template_id, a.principal_id),
    }
}

/// A service principal's id: its object id, or its app id when the export has no object id.
pub fn sp_id(a: &Application) -> String {
    a.object_id.clone().unwrap_or_else(|| a.app_id.clone())
}

fn mentions(v: &Value, id: &str) -> bool {
    match v {
        Value::String(s) => s.eq_ignore_ascii_case(id),
        Value::Array(a) => a.iter().any(|x| mentions(x, id)),
        Value::Object(o) => {
            o.iter().filter(|(k, _)| k.as_str() != "id").any(|(_, x)| mentions(x, id))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn user(id: &str, upn: &str) -> Change {
        Change::PutUser {
            user: obj(json!({"id": id, "userPrincipalName": upn, "displayName": id})),
            manager: None,
        }
    }

    #[test]
    fn membership_is_kept_in_both_directions_and_nesting_is_cycle_safe() {
        let mut d = Directory::new();
        d.apply(&user("u1", "u1@x.test")).unwrap();
        for g in ["g1", "g2", "g3"] {
            d.apply(&Change::PutGroup { group: obj(json!({"id": g, "displayName": g})) }).unwrap();
        }
        let add = |g: &str, m: &str| Change::AddMember { group: g.into(), member: m.into() };
        d.apply(&add("g1", "u1")).unwrap();
        d.apply(&add("g2", "g1")).unwrap();
        d.apply(&add("g3", "g2")).unwrap();
        d.apply(&add("g1", "g3")).unwrap(); // a cycle
        assert_eq!(d.transitive_member_of("u1"), vec!["g1", "g2", "g3"]);
        assert_eq!(d.transitive_members("g3"), vec!["g1", "g2", "u1"]);
        d.apply(&Change::RemoveMember { group: "g1".into(), member: "u1".into() }).unwrap();
        assert!(d.transitive_member_of("u1").is_empty());
        d.apply(&Change::DeleteGroup { id: "g2".into() }).unwrap();
        assert_eq!(d.member_of("g1"), Vec::<String>::new());
        assert_eq!(d.members("g3"), &[] as &[String]);
    }

    #[test]
    fn removing_keeps_the_index_consistent() {
        let mut d = Directory::new();
        for i in 0..5 {
            d.apply(&user(&format!("u{i}"), &format!("u{i}@x.test"))).unwrap();
        }
        d.apply(&Change::DeleteUser { id: "u1".into() }).unwrap();
        let ids: Vec<&str> = d.users().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, vec!["u0", "u2", "u3", "u4"]);
        assert_eq!(d.resolve_user("U4@X.test").map(|u| u.id.as_str()), Some("u4"));
        assert!(d.resolve_user("u1@x.test").is_none());
    }

    #[test]
    fn roles_reach_members_of_role_assignable_groups() {
        let mut d = Directory::new();
        d.apply(&user("u1", "u1@x.test")).unwrap();
        d.apply(&Change::PutGroup { group: obj(json!({"id": "g1", "displayName": "admins"})) })
            .unwrap();
        d.apply(&Change::AddMember { group: "g1".into(), member: "u1".into() }).unwrap();
        d.apply(&Change::PutRoleAssignment {
            assignment: obj(json!({"id": "ra1", "principalId": "g1",
                "roleDefinitionId": Role::GlobalReader.template_id(), "directoryScopeId": "/"})),
        })
        .unwrap();
        assert_eq!(d.roles_of("u1"), vec![Role::GlobalReader]);
        d.apply(&Change::DeleteRoleAssignment { id: "ra1".into() }).unwrap();
        assert!(d.roles_of("u1").is_empty());
    }
}
