//! Warnings about a loaded tenant: references to objects the export does not hold, policies that
//! can never apply, and the lock-out everyone fears.

use std::collections::HashSet;

use crate::diagnostic::{Code, Diagnostic};
use crate::model::enums::{BuiltInControl, PolicyState};
use crate::model::policy::{AppRef, LocationRef, Policy, UserRef};
use crate::suites;
use crate::tenant::{Origins, Tenant};

/// Entra's documented limit on policies per tenant (any state).
pub const MAX_TENANT_POLICIES: usize = 195;

pub fn lint(tenant: &Tenant, origins: &Origins) -> Vec<Diagnostic> {
    let users: HashSet<&str> = tenant.users.iter().map(|u| u.id.as_str()).collect();
    let groups: HashSet<&str> = tenant.groups.iter().map(|g| g.id.as_str()).collect();
    let locations: HashSet<&str> = tenant.named_locations.iter().map(|l| l.id.as_str()).collect();
    let strengths: HashSet<&str> = tenant.strengths.iter().map(|s| s.id.as_str()).collect();
    let roles_in_tenant: HashSet<&str> =
        tenant.role_assignments.iter().map(|r| r.role_template_id.as_str()).collect();

    let mut out = Vec::new();
    if tenant.policies.is_empty() {
        out.push(Diagnostic {
            code: Code::NeverApplies,
            file: String::new(),
            object: None,
            path: None,
            message: "the export holds no Conditional Access policies".into(),
        });
    }
    if tenant.policies.len() > MAX_TENANT_POLICIES {
        out.push(Diagnostic {
            code: Code::ServiceLimit,
            file: String::new(),
            object: None,
            path: None,
            message: format!(
                "{} policies: Entra allows at most {MAX_TENANT_POLICIES} per tenant",
                tenant.policies.len()
            ),
        });
    }
    for p in &tenant.policies {
        let mut warn = |code: Code, path: Option<&str>, message: String| {
            out.push(Diagnostic {
                code,
                file: origins.policy_file(&p.id).cloned().unwrap_or_default(),
                object: Some(format!("policy {:?}", p.display_name)),
                path: path.map(str::to_owned),
                message,
            });
        };
        let dangling = |what: &str, id: &str| {
            format!("refers to {what} `{id}`, which the export does not hold; it matches nobody")
        };
        if let Some(u) = &p.conditions.users {
            for (key, refs) in
                [("includeUsers", &u.include_users), ("excludeUsers", &u.exclude_users)]
            {
                for r in refs {
                    if let UserRef::Id(id) = r
                        && !users.contains(id.as_str())
                    {
                        warn(
                            Code::DanglingReference,
                            Some(&format!("conditions.users.{key}")),
                            dangling("user", id),
                        );
                    }
                }
            }
            for (key, ids) in
                [("includeGroups", &u.include_groups), ("excludeGroups", &u.exclude_groups)]
            {
                for id in ids {
                    if !groups.contains(id.as_str()) {
                        warn(
                            Code::DanglingReference,
                            Some(&format!("conditions.users.{key}")),
                            dangling("group", id),
                        );
                    }
                }
            }
            for (key, ids) in
                [("includeRoles", &u.include_roles), ("excludeRoles", &u.exclude_roles)]
            {
                for id in ids {
                    if suites::built_in_role(id).is_none() && !roles_in_tenant.contains(id.as_str())
                    {
                        warn(
                            Code::DanglingReference,
                            Some(&format!("conditions.users.{key}")),
                            format!(
                                "`{id}` is not a built-in directory role; Conditional Access only targets built-in roles"
                            ),
                        );
                    }
                }
            }
        }
        if let Some(l) = &p.conditions.locations {
            for (key, refs) in [("includeLocations", &l.include), ("excludeLocations", &l.exclude)]
            {
                for r in refs {
                    if let LocationRef::Id(id) = r
                        && !locations.contains(id.as_str())
                    {
                        warn(
                            Code::DanglingReference,
                            Some(&format!("conditions.locations.{key}")),
                            dangling("named location", id),
                        );
                    }
                }
            }
        }
        if let Some(g) = &p.grant {
            if let Some(s) = &g.authentication_strength
                && s.embedded.is_none()
                && !strengths.contains(s.id.as_str())
                && !crate::model::strength::built_in_strengths().iter().any(|b| b.id == s.id)
            {
                warn(
                    Code::DanglingReference,
                    Some("grantControls.authenticationStrength"),
                    format!(
                        "refers to authentication strength `{}`, which the export does not hold; it can never be satisfied",
                        s.id
                    ),
                );
            }
            if g.authentication_strength.is_some() && g.built_in.contains(&BuiltInControl::Mfa) {
                warn(
                    Code::ServiceLimit,
                    Some("grantControls"),
                    "`mfa` and an authentication strength in one policy: Entra refuses this combination".into(),
                );
            }
        }
        if let Some(reason) = never_applies(p) {
            warn(Code::NeverApplies, None, reason);
        }
        if p.grant.is_none() && p.session.is_none() && p.state != PolicyState::Disabled {
            warn(
                Code::NeverApplies,
                None,
                "has no grant or session controls; it never changes a sign-in".into(),
            );
        }
        if is_unguarded_block(p) {
            warn(
                Code::LockoutRisk,
                None,
                "blocks all users and excludes nobody: every account, including break-glass accounts, would be locked out".into(),
            );
        }
    }
    out
}

fn never_applies(p: &Policy) -> Option<String> {
    let a = &p.conditions.applications;
    let targets_nothing = a.include_applications.iter().all(|r| matches!(r, AppRef::None))
        && a.include_user_actions.is_empty()
        && a.include_auth_contexts.is_empty();
    if targets_nothing {
        return Some("targets no application, user action or authentication context".into());
    }
    if let Some(u) = &p.conditions.users {
        let includes_nobody = u.include_users.iter().all(|r| matches!(r, UserRef::None))
            && u.include_groups.is_empty()
            && u.include_roles.is_empty()
            && u.include_guests.is_none()
            && p.conditions.client_applications.is_none();
        if includes_nobody {
            return Some("includes no users, groups, roles or guests".into());
        }
        if u.include_users.contains(&UserRef::All) && u.exclude_users.contains(&UserRef::All) {
            return Some("includes and excludes all users".into());
        }
    }
    None
}

fn is_unguarded_block(p: &Policy) -> bool {
    let Some(u) = &p.conditions.users else {
        return false;
    };
    p.state == PolicyState::Enabled
        && p.grant.as_ref().is_some_and(|g| g.blocks())
        && u.include_users.contains(&UserRef::All)
        && u.exclude_users.is_empty()
        && u.exclude_groups.is_empty()
        && u.exclude_roles.is_empty()
        && u.exclude_guests.is_none()
}
