//! Requests, approval stages and assignments as Gatehouse keeps them, and their Graph shapes.
//!
//! A request is one record holding everything about it: what was asked, the answers, the
//! approval stages with the approvers resolved when each stage started and their decisions, the
//! custom-extension callouts, and the history of every state it passed through. The store keeps
//! it as one JSON document (plus the columns it is looked up by), so a state change rewrites one
//! row, inside the transaction that also writes what the change causes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::questions::Answer;
use crate::time::{self, Millis};

macro_rules! graph_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// Case-insensitive: documentation examples write `UserAdd` and `Delivered`.
            pub fn parse(text: &str) -> Option<$name> {
                let t = text.trim();
                $name::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(t))
            }
        }
    };
}

graph_enum!(
    /// `accessPackageRequestType`. `userExtend` does not exist in v1.0: extending is an update.
    RequestType {
        UserAdd = "userAdd",
        UserUpdate = "userUpdate",
        UserRemove = "userRemove",
        AdminAdd = "adminAdd",
        AdminUpdate = "adminUpdate",
        AdminRemove = "adminRemove",
        SystemAdd = "systemAdd",
        SystemUpdate = "systemUpdate",
        SystemRemove = "systemRemove",
    }
);

impl RequestType {
    pub fn is_add(self) -> bool {
        matches!(self, RequestType::UserAdd | RequestType::AdminAdd | RequestType::SystemAdd)
    }

    pub fn is_update(self) -> bool {
        matches!(
            self,
            RequestType::UserUpdate | RequestType::AdminUpdate | RequestType::SystemUpdate
        )
    }

    pub fn is_remove(self) -> bool {
        matches!(
            self,
            RequestType::UserRemove | RequestType::AdminRemove | RequestType::SystemRemove
        )
    }

    /// Requests by users go through approval; administrators' and the system's do not.
    pub fn by_user(self) -> bool {
        matches!(self, RequestType::UserAdd | RequestType::UserUpdate | RequestType::UserRemove)
    }
}

graph_enum!(
    /// `accessPackageRequestState`.
    RequestState {
        Submitted = "submitted",
        PendingApproval = "pendingApproval",
        Delivering = "delivering",
        Delivered = "delivered",
        DeliveryFailed = "deliveryFailed",
        Denied = "denied",
        Scheduled = "scheduled",
        Canceled = "canceled",
        PartiallyDelivered = "partiallyDelivered",
    }
);

impl RequestState {
    /// Nothing more happens to the request (short of `reprocess` for failed deliveries).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Delivered
                | RequestState::DeliveryFailed
                | RequestState::Denied
                | RequestState::Canceled
                | RequestState::PartiallyDelivered
        )
    }

    /// A request in these states blocks a second one for the same package and target.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RequestState::Submitted
                | RequestState::PendingApproval
                | RequestState::Scheduled
                | RequestState::Delivering
        )
    }
}

graph_enum!(
    /// The request's `status`: Graph's free text, fixed to this list (`docs/governance.md`).
    Status {
        Accepted = "Accepted",
        PendingApproval = "PendingApproval",
        PendingApprovalEscalated = "PendingApprovalEscalated",
        PendingNotBefore = "PendingNotBefore",
        WaitingForCallback = "WaitingForCallback",
        Delivering = "Delivering",
        Delivered = "Delivered",
        PartiallyDelivered = "PartiallyDelivered",
        DeliveryFailed = "DeliveryFailed",
        Denied = "Denied",
        Expired = "Expired",
        Canceled = "Canceled",
    }
);

graph_enum!(
    /// `accessPackageAssignmentState`.
    AssignmentState {
        Delivering = "delivering",
        PartiallyDelivered = "partiallyDelivered",
        Delivered = "delivered",
        Expired = "expired",
        DeliveryFailed = "deliveryFailed",
    }
);

graph_enum!(
    StageStatus {
        NotStarted = "NotStarted",
        InProgress = "InProgress",
        Completed = "Completed",
        Expired = "Expired",
    }
);

graph_enum!(
    ReviewResult {
        NotReviewed = "NotReviewed",
        Approved = "Approved",
        Denied = "Denied",
    }
);

/// The requested or granted window. `end: None` is no expiration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub start: Millis,
    pub end: Option<Millis>,
    /// The duration asked for, as text (`P5D`), when the end was given as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// No start was asked for: access starts when it is delivered (after approval), and a
    /// duration counts from then.
    #[serde(default)]
    pub start_on_delivery: bool,
}

impl Schedule {
    pub fn to_graph(&self) -> Value {
        let expiration = match (self.end, &self.duration) {
            (None, _) => json!({"type": "noExpiration", "endDateTime": null, "duration": null}),
            (Some(end), Some(d)) => json!({
                "type": "afterDuration", "endDateTime": time::format(end), "duration": d,
            }),
            (Some(end), None) => {
                json!({"type": "afterDateTime", "endDateTime": time::format(end), "duration": null})
            }
        };
        json!({"startDateTime": time::format(self.start), "expiration": expiration, "recurrence": null})
    }

    /// Is access in force at `now`? (Start inclusive, end exclusive.)
    pub fn covers(&self, now: Millis) -> bool {
        self.start <= now && self.end.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub status: StageStatus,
    /// Who may decide, resolved when the stage started; escalation adds to it.
    pub approvers: BTreeSet<String>,
    /// Those of `approvers` added by escalation (for the right email and `assignedToMe`).
    #[serde(default)]
    pub escalation_approvers: BTreeSet<String>,
    pub escalated: bool,
    /// The primaries resolved to nobody and the fallback approvers were asked instead.
    #[serde(default)]
    pub used_fallback: bool,
    pub started: Option<Millis>,
    pub result: ReviewResult,
    pub reviewed_by: Option<String>,
    pub justification: Option<String>,
    pub reviewed_at: Option<Millis>,
}

impl Stage {
    pub fn not_started() -> Stage {
        Stage {
            status: StageStatus::NotStarted,
            approvers: BTreeSet::new(),
            escalation_approvers: BTreeSet::new(),
            escalated: false,
            used_fallback: false,
            started: None,
            result: ReviewResult::NotReviewed,
            reviewed_by: None,
            justification: None,
            reviewed_at: None,
        }
    }
}

graph_enum!(
    CalloutStatus {
        CalloutSent = "calloutSent",
        CallbackReceived = "callbackReceived",
        CalloutFailed = "calloutFailed",
        CallbackTimedOut = "callbackTimedOut",
        WaitingForCallback = "waitingForCallback",
    }
);

/// One custom-extension call made for a request (`customExtensionCalloutInstance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callout {
    pub id: String,
    pub extension_id: String,
    pub stage: String,
    pub status: CalloutStatus,
    pub wait: bool,
    pub detail: Option<String>,
    pub external_correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Millis,
    pub state: RequestState,
    pub status: Status,
    /// Who caused the step (`None`: Gatehouse itself, e.g. a timeout).
    pub by: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub request_type: RequestType,
    pub state: RequestState,
    pub status: Status,
    pub access_package_id: String,
    pub policy_id: String,
    pub target_id: String,
    pub requestor_id: Option<String>,
    /// For add requests, the assignment created on delivery (its id is chosen at submission);
    /// for update and remove requests, the assignment they change.
    pub assignment_id: String,
    pub justification: Option<String>,
    pub answers: Vec<StoredAnswer>,
    pub schedule: Schedule,
    pub created: Millis,
    pub completed: Option<Millis>,
    pub stages: Vec<Stage>,
    pub callouts: Vec<Callout>,
    pub history: Vec<HistoryEntry>,
}

/// An answer as kept in the request document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub question_id: String,
    pub question_type: String,
    /// The question's text when it was answered (empty in requests stored before it was kept).
    #[serde(default)]
    pub question_text: String,
    pub value: String,
    pub display_value: String,
}

impl From<&Answer> for StoredAnswer {
    fn from(a: &Answer) -> StoredAnswer {
        StoredAnswer {
            question_id: a.question_id.clone(),
            question_type: a.question_type.to_owned(),
            question_text: a.question_text.clone(),
            value: a.value.clone(),
            display_value: a.display_value.clone(),
        }
    }
}

impl StoredAnswer {
    pub fn to_graph(&self) -> Value {
        let mut question = json!({"@odata.type": self.question_type, "id": self.question_id});
        if !self.question_text.is_empty()
            && let Some(q) = question.as_object_mut()
        {
            q.insert("text".into(), self.question_text.clone().into());
        }
        json!({
            "@odata.type": "#microsoft.graph.accessPackageAnswerString",
            "value": self.value,
            "displayValue": self.display_value,
            "answeredQuestion": question,
        })
    }
}

impl Request {
    /// The stage now waiting for a decision.
    pub fn current_stage(&self) -> Option<(usize, &Stage)> {
        self.stages.iter().enumerate().find(|(_, s)| s.status == StageStatus::InProgress)
    }

    /// Statuses from which a request can be canceled (Graph's `cancel`).
    pub fn is_cancelable(&self) -> bool {
        matches!(
            self.state,
            RequestState::Submitted | RequestState::PendingApproval | RequestState::Scheduled
        )
    }

    /// The Graph `accessPackageAssignmentRequest`.
    pub fn to_graph(&self, subject: impl Fn(&str) -> Value) -> Value {
        json!({
            "id": self.id,
            "requestType": self.request_type.as_str(),
            "state": self.state.as_str(),
            "status": self.status.as_str(),
            "justification": self.justification,
            "createdDateTime": time::format(self.created),
            "completedDateTime": self.completed.map(time::format),
            "schedule": self.schedule.to_graph(),
            "answers": self.answers.iter().map(StoredAnswer::to_graph).collect::<Vec<_>>(),
            "customExtensionCalloutInstances": self.callouts.iter().map(|c| json!({
                "id": c.id,
                "customExtensionId": c.extension_id,
                "detail": c.detail,
                "externalCorrelationId": c.external_correlation_id,
                "status": c.status.as_str(),
            })).collect::<Vec<_>>(),
            "requestor": self.requestor_id.as_deref().map(&subject),
            "accessPackage": {"id": self.access_package_id},
            "assignment": {
                "id": self.assignment_id,
                "targetId": self.target_id,
                "assignmentPolicyId": self.policy_id,
                "accessPackageId": self.access_package_id,
            },
        })
    }
}

/// What one assignment put in place: a role of a resource held by the target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    /// The resource role scope it came from.
    pub role_scope_id: String,
    pub role: GrantedRole,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum GrantedRole {
    GroupMember { group_id: String },
    GroupOwner { group_id: String },
    AppRole { service_principal_id: String, app_role_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub id: String,
    pub access_package_id: String,
    pub policy_id: String,
    pub target_id: String,
    pub state: AssignmentState,
    pub status: String,
    pub schedule: Schedule,
    pub expired_at: Option<Millis>,
    pub created: Millis,
    pub grants: Vec<Grant>,
    /// Role scopes that could not be granted on the last delivery, with the reason.
    #[serde(default)]
    pub failed: Vec<(String, String)>,
}

impl Assignment {
    /// The state as of `now`: a delivered assignment past its end is expired even before the
    /// worker has recorded it (reads check validity; `docs/governance.md`).
    pub fn state_at(&self, now: Millis) -> AssignmentState {
        match self.state {
            AssignmentState::Delivered | AssignmentState::PartiallyDelivered
                if self.schedule.end.is_some_and(|e| e <= now) =>
            {
                AssignmentState::Expired
            }
            s => s,
        }
    }

    pub fn to_graph(&self, now: Millis, target: Value) -> Value {
        let state = self.state_at(now);
        let status = if state == AssignmentState::Expired && self.state != AssignmentState::Expired
        {
            "Expired".to_owned()
        } else {
            self.status.clone()
        };
        let expired = self
            .expired_at
            .or_else(|| (state == AssignmentState::Expired).then_some(self.schedule.end).flatten());
        json!({
            "id": self.id,
            "state": state.as_str(),
            "status": status,
            "schedule": self.schedule.to_graph(),
            "expiredDateTime": expired.map(time::format),
            "customExtensionCalloutInstances": [],
            "target": target,
            "accessPackage": {"id": self.access_package_id},
            "assignmentPolicy": {"id": self.policy_id},
        })
    }
}
