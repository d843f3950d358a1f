//! Entra directory roles (by their stable template ids) and the areas each may read or change.
//!
//! Least privilege: each area names the roles Microsoft documents as sufficient for it, and no
//! others. `docs/api.md` lists the result per route; the authorization matrix test proves it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    GlobalAdministrator,
    GlobalReader,
    ConditionalAccessAdministrator,
    AuthenticationAdministrator,
    PrivilegedAuthenticationAdministrator,
    AuthenticationPolicyAdministrator,
    UserAdministrator,
    GroupsAdministrator,
    SecurityReader,
    ReportsReader,
    IdentityGovernanceAdministrator,
}

impl Role {
    pub const ALL: [Role; 11] = [
        Role::GlobalAdministrator,
        Role::GlobalReader,
        Role::ConditionalAccessAdministrator,
        Role::AuthenticationAdministrator,
        Role::PrivilegedAuthenticationAdministrator,
        Role::AuthenticationPolicyAdministrator,
        Role::UserAdministrator,
        Role::GroupsAdministrator,
        Role::SecurityReader,
        Role::ReportsReader,
        Role::IdentityGovernanceAdministrator,
    ];

    /// The role template id (also the `roleDefinitionId` of built-in role assignments).
    pub fn template_id(self) -> &'static str {
        match self {
            Role::GlobalAdministrator => "62e90394-69f5-4237-9190-012177145e10",
            Role::GlobalReader => "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
            Role::ConditionalAccessAdministrator => "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
            Role::AuthenticationAdministrator => "c4e39bd9-1100-46d3-8c65-fb160da0071f",
            Role::PrivilegedAuthenticationAdministrator => "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
            Role::AuthenticationPolicyAdministrator => "0526716b-113d-4c15-b2c8-68e3c22b9f80",
            Role::UserAdministrator => "fe930be7-5e62-47db-91af-98c3a49a38b1",
            Role::GroupsAdministrator => "fdd7a751-b60b-444a-984c-02652fe8fa1c",
            Role::SecurityReader => "5d6b6bb7-de71-4623-b4af-96380a352509",
            Role::ReportsReader => "4a5d8f65-41da-4de4-8968-e035b65339cf",
            Role::IdentityGovernanceAdministrator => "45d8d3c5-c802-45c6-b32a-1d70b5e1e86e",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Role::GlobalAdministrator => "Global Administrator",
            Role::GlobalReader => "Global Reader",
            Role::ConditionalAccessAdministrator => "Conditional Access Administrator",
            Role::AuthenticationAdministrator => "Authentication Administrator",
            Role::PrivilegedAuthenticationAdministrator => {
                "Privileged Authentication Administrator"
            }
            Role::AuthenticationPolicyAdministrator => "Authentication Policy Administrator",
            Role::UserAdministrator => "User Administrator",
            Role::GroupsAdministrator => "Groups Administrator",
            Role::SecurityReader => "Security Reader",
            Role::ReportsReader => "Reports Reader",
            Role::IdentityGovernanceAdministrator => "Identity Governance Administrator",
        }
    }

    pub fn from_template_id(id: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.template_id().eq_ignore_ascii_case(id))
    }

    /// Roles that make their holder an administrator for TAP purposes: an Authentication
    /// Administrator may act only on users who hold none of these.
    pub fn is_privileged(self) -> bool {
        !matches!(self, Role::ReportsReader)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (sign-in, health).
    Anonymous,
    /// Any valid session or API token; the handler limits what it shows to the caller's own data.
    SignedIn,
    /// A session holding at least one of these roles.
    Roles(&'static [Role]),
    /// Entitlement management: a session holding one of these roles, or holding a catalog role
    /// that grants `right` in some catalog; the handler then checks the catalog the request is
    /// about (`docs/governance.md`).
    Catalog(&'static [Role], CatalogRight),
    /// A custom extension's callback signed with its secret, or a session holding one of these
    /// roles.
    SignedOr(&'static [Role]),
}

/// What a catalog role lets its holder do in that catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CatalogRight {
    /// See the catalog, its resources, packages, policies, requests and assignments.
    Read,
    /// Change the catalog itself, its resources and custom extensions.
    ManageCatalog,
    /// Create and change access packages and their policies.
    ManagePackages,
    /// Assign access directly, and remove or reprocess assignments and requests.
    ManageAssignments,
    /// Create catalogs (tenant-wide).
    CreateCatalog,
}

/// The entitlement-management roles (`roleManagement/entitlementManagement/roleDefinitions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CatalogRole {
    Creator,
    Owner,
    Reader,
    PackageManager,
    AssignmentManager,
}

impl CatalogRole {
    pub const ALL: [CatalogRole; 5] = [
        CatalogRole::Creator,
        CatalogRole::Owner,
        CatalogRole::Reader,
        CatalogRole::PackageManager,
        CatalogRole::AssignmentManager,
    ];

    pub fn id(self) -> &'static str {
        match self {
            CatalogRole::Creator => "ba92d953-d8e0-4e39-a797-0cbedb0a89e8",
            CatalogRole::Owner => "ae79f266-94d4-4dab-b730-feca7e132178",
            CatalogRole::Reader => "44272f93-9762-48e8-af59-1b5351b1d6b3",
            CatalogRole::PackageManager => "7f480852-ebdc-47d4-87de-0d8498384a83",
            CatalogRole::AssignmentManager => "e2182095-804a-4656-ae11-64734e9b7ae5",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            CatalogRole::Creator => "Catalog creator",
            CatalogRole::Owner => "Catalog owner",
            CatalogRole::Reader => "Catalog reader",
            CatalogRole::PackageManager => "Access package manager",
            CatalogRole::AssignmentManager => "Access package assignment manager",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            CatalogRole::Creator => {
                "Create catalogs; the creator becomes the catalog's first owner."
            }
            CatalogRole::Owner => {
                "Edit and manage a catalog, its resources, access packages and assignments."
            }
            CatalogRole::Reader => "View a catalog and its access packages.",
            CatalogRole::PackageManager => "Edit and manage every access package of a catalog.",
            CatalogRole::AssignmentManager => {
                "Manage the assignments of every access package of a catalog."
            }
        }
    }

    pub fn from_id(id: &str) -> Option<CatalogRole> {
        CatalogRole::ALL.into_iter().find(|r| r.id().eq_ignore_ascii_case(id.trim()))
    }

    /// Is this role scoped to one catalog (`/AccessPackageCatalog/{id}`) rather than the tenant?
    pub fn is_catalog_scoped(self) -> bool {
        self != CatalogRole::Creator
    }

    pub fn grants(self, right: CatalogRight) -> bool {
        use CatalogRight::*;
        match self {
            CatalogRole::Creator => right == CreateCatalog,
            CatalogRole::Owner => right != CreateCatalog,
            CatalogRole::Reader => right == Read,
            CatalogRole::PackageManager => {
                matches!(right, Read | ManagePackages | ManageAssignments)
            }
            CatalogRole::AssignmentManager => matches!(right, Read | ManageAssignments),
        }
    }
}

use Role::*;

/// The areas of the API, each with the roles that may use it.
pub mod area {
    use super::*;

    pub const DIRECTORY_READ: &[Role] = &[
        GlobalAdministrator,
        GlobalReader,
        UserAdministrator,
        GroupsAdministrator,
        ConditionalAccessAdministrator,
        AuthenticationAdministrator,
        PrivilegedAuthenticationAdministrator,
        AuthenticationPolicyAdministrator,
        SecurityReader,
    ];
    pub const USERS_WRITE: &[Role] = &[GlobalAdministrator, UserAdministrator];
    pub const GROUPS_WRITE: &[Role] =
        &[GlobalAdministrator, UserAdministrator, GroupsAdministrator];
    /// Role assignments, applications and devices: Global Administrator only among our roles.
    pub const TENANT_WRITE: &[Role] = &[GlobalAdministrator];
    pub const CA_READ: &[Role] =
        &[GlobalAdministrator, GlobalReader, ConditionalAccessAdministrator, SecurityReader];
    pub const CA_WRITE: &[Role] = &[GlobalAdministrator, ConditionalAccessAdministrator];
    pub const AUTH_POLICY_READ: &[Role] =
        &[GlobalAdministrator, GlobalReader, AuthenticationPolicyAdministrator, SecurityReader];
    pub const AUTH_POLICY_WRITE: &[Role] =
        &[GlobalAdministrator, AuthenticationPolicyAdministrator];
    pub const USER_METHODS_READ: &[Role] = &[
        GlobalAdministrator,
        GlobalReader,
        AuthenticationAdministrator,
        PrivilegedAuthenticationAdministrator,
    ];
    /// Whom each may act on is checked per target (`may_manage_methods_of`).
    pub const USER_METHODS_WRITE: &[Role] =
        &[GlobalAdministrator, AuthenticationAdministrator, PrivilegedAuthenticationAdministrator];
    pub const REPORTS_READ: &[Role] =
        &[GlobalAdministrator, GlobalReader, SecurityReader, ReportsReader];
    /// Entitlement management as a whole (catalog roles add per-catalog rights on top,
    /// checked per object: `docs/governance.md`).
    pub const GOVERNANCE_READ: &[Role] =
        &[GlobalAdministrator, GlobalReader, IdentityGovernanceAdministrator, SecurityReader];
    pub const GOVERNANCE_WRITE: &[Role] = &[GlobalAdministrator, IdentityGovernanceAdministrator];
}

/// May a caller holding `caller` roles create or delete authentication methods of a user who
/// holds `target` roles? (Entra: Authentication Administrators only for non-admins.)
pub fn may_manage_methods_of(caller: &[Role], target: &[Role]) -> bool {
    if caller
        .iter()
        .any(|r| matches!(r, GlobalAdministrator | PrivilegedAuthenticationAdministrator))
    {
        return true;
    }
    caller.contains(&AuthenticationAdministrator) && !target.iter().any(|r| r.is_privileged())
}

/// May a caller holding `caller` roles change, reset the password of, or delete a user who holds
/// `target` roles? A Global Administrator may; a User Administrator only users whose roles are
/// among Entra's "limited admin" roles we know (User Administrator, Reports Reader), or none:
/// otherwise resetting a Global Administrator's password would make them one.
pub fn may_manage_user(caller: &[Role], target: &[Role]) -> bool {
    caller.contains(&GlobalAdministrator)
        || (caller.contains(&UserAdministrator)
            && target.iter().all(|r| matches!(r, UserAdministrator | ReportsReader)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_ids_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::from_template_id(r.template_id()), Some(r));
            assert_eq!(Role::from_template_id(&r.template_id().to_uppercase()), Some(r));
        }
    }

    #[test]
    fn authentication_administrators_manage_only_non_admins() {
        assert!(may_manage_methods_of(&[AuthenticationAdministrator], &[]));
        assert!(may_manage_methods_of(&[AuthenticationAdministrator], &[ReportsReader]));
        assert!(!may_manage_methods_of(&[AuthenticationAdministrator], &[UserAdministrator]));
        assert!(may_manage_methods_of(
            &[PrivilegedAuthenticationAdministrator],
            &[GlobalAdministrator]
        ));
        assert!(!may_manage_methods_of(&[GroupsAdministrator], &[]));
    }

    #[test]
    fn user_administrators_manage_only_limited_admins() {
        assert!(may_manage_user(&[UserAdministrator], &[]));
        assert!(may_manage_user(&[UserAdministrator], &[UserAdministrator, ReportsReader]));
        assert!(!may_manage_user(&[UserAdministrator], &[GlobalAdministrator]));
        assert!(!may_manage_user(&[UserAdministrator], &[ConditionalAccessAdministrator]));
        assert!(!may_manage_user(&[UserAdministrator], &[UserAdministrator, GroupsAdministrator]));
        assert!(may_manage_user(&[GlobalAdministrator], &[GlobalAdministrator]));
        assert!(!may_manage_user(&[GroupsAdministrator], &[]));
    }
}
