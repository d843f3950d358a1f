//! A change to the directory, as stored in the change log and applied to every node's memory.
//!
//! Each write transaction stores its changes beside the new state; after the commit, every node
//! (the writer included) applies the log in version order. So a node's memory is always some
//! committed version of the database, and two nodes that applied the same versions agree.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Change {
    /// A user's Graph object (without navigation properties) and their manager.
    PutUser {
        user: Map<String, Value>,
        manager: Option<String>,
    },
    DeleteUser {
        id: String,
    },
    /// A group's Graph object; members change separately.
    PutGroup {
        group: Map<String, Value>,
    },
    DeleteGroup {
        id: String,
    },
    AddMember {
        group: String,
        member: String,
    },
    RemoveMember {
        group: String,
        member: String,
    },
    /// `unifiedRoleAssignment`: `id`, `principalId`, `roleDefinitionId`, `directoryScopeId`.
    PutRoleAssignment {
        assignment: Map<String, Value>,
    },
    DeleteRoleAssignment {
        id: String,
    },
    PutServicePrincipal {
        service_principal: Map<String, Value>,
    },
    DeleteServicePrincipal {
        id: String,
    },
    PutDevice {
        device: Map<String, Value>,
    },
    DeleteDevice {
        id: String,
    },
    PutPolicy {
        policy: Map<String, Value>,
    },
    DeletePolicy {
        id: String,
    },
    PutNamedLocation {
        location: Map<String, Value>,
    },
    DeleteNamedLocation {
        id: String,
    },
    PutStrength {
        strength: Map<String, Value>,
    },
    DeleteStrength {
        id: String,
    },
    /// The authentication methods policy with its method configurations.
    PutAuthMethodsPolicy {
        policy: Value,
    },
    /// Sessions and API tokens of a user stop working (password reset, TAP replaced, disabled).
    RevokeSessions {
        user_id: String,
    },
    /// The sessions signed in with Temporary Access Pass `tap_id` of `user_id` end (the pass was
    /// replaced or deleted); the user's other sessions stay.
    EndTapSessions {
        user_id: String,
        tap_id: String,
    },
    /// An access package assignment grants a role (a group's membership or ownership, an app
    /// role) for a time; replaces that assignment's earlier grant of the same role.
    Grant {
        grant: crate::grants::GrantRow,
    },
    /// The assignment no longer grants the role.
    Revoke {
        role: crate::governance::model::GrantedRole,
        principal: String,
        assignment: String,
    },
    /// A user's sponsors (`/users/{id}/sponsors`), replaced as a whole.
    SetSponsors {
        user: String,
        sponsors: Vec<String>,
    },
    /// One session ends (its user signed out).
    EndSession {
        user_id: String,
        session_id: String,
    },
    /// Everything was rewritten (an import): reload the whole directory from the store.
    Reload,
}
