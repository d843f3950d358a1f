//! Subject sets: who may request, who approves, who is targeted (Graph `subjectSet` and its
//! subtypes, each item discriminated by `@odata.type`).
//!
//! Gatehouse serves the subject sets that name people of this directory: single users, members
//! of a group (nested groups included), the requestor's manager chain, and the target user's
//! sponsors. Connected-organization sponsors, attribute rules and service principals are refused
//! with a message that says so, rather than accepted and then matching nobody.

use std::collections::BTreeSet;

use gatehouse_policy::json::{FieldError, JsonPath, Obj, normalize_id};
use serde_json::{Map, Value, json};

use crate::directory::Directory;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSet {
    SingleUser {
        user_id: String,
    },
    /// Every user in the group, through nested groups too.
    GroupMembers {
        group_id: String,
    },
    /// The manager (level 1) or the manager's manager (level 2) of the request's target.
    RequestorManager {
        level: u8,
    },
    /// The sponsors recorded on the target user (`/users/{id}/sponsors`).
    TargetUserSponsors,
}

/// Where a list of subject sets is used: not every kind makes sense everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// `specificAllowedTargets` and `onBehalfRequestors`: fixed sets of people.
    Targets,
    /// Approvers of a stage: may depend on the request's target.
    Approvers,
}

impl SubjectSet {
    pub fn parse(map: &Map<String, Value>, path: &JsonPath, used: Use) -> Result<Self, FieldError> {
        let v = Value::Object(map.clone());
        let obj = Obj::new(&v, path)?;
        let ty = obj.string("@odata.type")?.unwrap_or_default();
        let ty = ty.trim_start_matches('#').trim_start_matches("microsoft.graph.");
        let set = match ty.to_ascii_lowercase().as_str() {
            "singleuser" => {
                SubjectSet::SingleUser { user_id: normalize_id(obj.required_string("userId")?) }
            }
            "groupmembers" => {
                SubjectSet::GroupMembers { group_id: normalize_id(obj.required_string("groupId")?) }
            }
            "requestormanager" => {
                let level = obj.integer("managerLevel")?.unwrap_or(1);
                if !(1..=2).contains(&level) {
                    return Err(FieldError::new(
                        &path.key("managerLevel"),
                        format!("`{level}` is not a manager level (1 or 2)"),
                    ));
                }
                SubjectSet::RequestorManager { level: level as u8 }
            }
            "targetusersponsors" => SubjectSet::TargetUserSponsors,
            "" => {
                return Err(FieldError::new(
                    &path.key("@odata.type"),
                    "is required (for example `#microsoft.graph.singleUser`)",
                ));
            }
            "internalsponsors" | "externalsponsors" | "connectedorganizationmembers" => {
                return Err(FieldError::new(
                    &path.key("@odata.type"),
                    format!("`{ty}` needs connected organizations, which Gatehouse does not have"),
                ));
            }
            "attributerulemembers" => {
                return Err(FieldError::new(
                    &path.key("@odata.type"),
                    "attribute rules are not supported; target the members of a group instead \
                     (`#microsoft.graph.groupMembers`)",
                ));
            }
            other => {
                return Err(FieldError::new(
                    &path.key("@odata.type"),
                    format!(
                        "`{other}` is not a subject set Gatehouse serves (singleUser, groupMembers, \
                         requestorManager, targetUserSponsors)"
                    ),
                ));
            }
        };
        if used == Use::Targets
            && matches!(set, SubjectSet::RequestorManager { .. } | SubjectSet::TargetUserSponsors)
        {
            return Err(FieldError::new(
                &path.key("@odata.type"),
                "names people relative to a request, so it can only approve, not be a fixed set of \
                 requestors",
            ));
        }
        Ok(set)
    }

    /// Reads `key` of `obj` as a list of subject sets (null or missing: empty).
    pub fn parse_list(obj: &Obj<'_>, key: &str, used: Use) -> Result<Vec<SubjectSet>, FieldError> {
        obj.objects(key)?.into_iter().map(|(m, p)| SubjectSet::parse(m, &p, used)).collect()
    }

    /// May this set, applied to some request, name nobody? (A manager or a sponsor the target
    /// does not have.) Fixed sets are checked against the directory when a policy is written.
    pub fn is_relative(&self) -> bool {
        matches!(self, SubjectSet::RequestorManager { .. } | SubjectSet::TargetUserSponsors)
    }

    /// The directory objects this set names, for validation (`None` for relative sets).
    pub fn named_object(&self) -> Option<(&'static str, &str)> {
        match self {
            SubjectSet::SingleUser { user_id } => Some(("user", user_id)),
            SubjectSet::GroupMembers { group_id } => Some(("group", group_id)),
            _ => None,
        }
    }

    /// Does this (fixed) set contain `user`?
    pub fn contains(&self, dir: &Directory, user: &str) -> bool {
        match self {
            SubjectSet::SingleUser { user_id } => user_id == user,
            SubjectSet::GroupMembers { group_id } => {
                dir.transitive_member_of(user).iter().any(|g| g == group_id)
            }
            SubjectSet::RequestorManager { .. } | SubjectSet::TargetUserSponsors => false,
        }
    }

    /// The enabled users this set names for a request whose target is `target`.
    pub fn resolve(&self, dir: &Directory, target: &str, out: &mut BTreeSet<String>) {
        let enabled = |id: &str| dir.user(id).is_some_and(|u| u.account_enabled);
        match self {
            SubjectSet::SingleUser { user_id } => {
                if enabled(user_id) {
                    out.insert(user_id.clone());
                }
            }
            SubjectSet::GroupMembers { group_id } => {
                for m in dir.transitive_members(group_id) {
                    if enabled(&m) {
                        out.insert(m);
                    }
                }
            }
            SubjectSet::RequestorManager { level } => {
                let mut who = dir.manager_of(target).map(|u| u.id.clone());
                if *level == 2 {
                    who = who.and_then(|m| dir.manager_of(&m).map(|u| u.id.clone()));
                }
                if let Some(m) = who.filter(|m| enabled(m)) {
                    out.insert(m);
                }
            }
            SubjectSet::TargetUserSponsors => {
                for s in dir.sponsors_of(target) {
                    if enabled(s) {
                        out.insert(s.clone());
                    }
                }
            }
        }
    }

    /// The Graph shape, with `description` naming the user or group.
    pub fn to_graph(&self, dir: &Directory) -> Value {
        match self {
            SubjectSet::SingleUser { user_id } => json!({
                "@odata.type": "#microsoft.graph.singleUser",
                "userId": user_id,
                "description": dir.user(user_id).map(|u| u.display_name.clone()),
            }),
            SubjectSet::GroupMembers { group_id } => json!({
                "@odata.type": "#microsoft.graph.groupMembers",
                "groupId": group_id,
                "description": dir.group(group_id).map(|g| g.display_name.clone()),
            }),
            SubjectSet::RequestorManager { level } => json!({
                "@odata.type": "#microsoft.graph.requestorManager",
                "managerLevel": level,
            }),
            SubjectSet::TargetUserSponsors => {
                json!({"@odata.type": "#microsoft.graph.targetUserSponsors"})
            }
        }
    }
}

/// Every enabled user the sets name for `target`.
pub fn resolve_all(sets: &[SubjectSet], dir: &Directory, target: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in sets {
        s.resolve(dir, target, &mut out);
    }
    out
}

pub fn list_to_graph(sets: &[SubjectSet], dir: &Directory) -> Value {
    Value::Array(sets.iter().map(|s| s.to_graph(dir)).collect())
}
