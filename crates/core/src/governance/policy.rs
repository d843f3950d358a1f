//! Access package assignment policies (`accessPackageAssignmentPolicy`): who may request, who
//! approves in which stages, what requestors answer, and how long access lasts.
//!
//! A policy is read from its Graph JSON once, validated against the directory (every user and
//! group it names exists; every approval stage can always reach someone), and kept typed. What is
//! stored and served is [`AssignmentPolicy::to_graph`] of the typed value, so a policy reads back
//! the way the engine understood it.

use gatehouse_policy::json::{FieldError, JsonPath, Obj, enum_value, normalize_id};
use serde_json::{Map, Value, json};

use super::GovError;
use super::duration::{Duration, Zone};
use super::questions::Question;
use super::subjects::{SubjectSet, Use, list_to_graph};
use crate::directory::Directory;
use crate::time::{self, Millis};

/// The most approval stages Entra allows.
pub const MAX_STAGES: usize = 3;
/// The default and the bounds of a stage's time to decide (the portal's default is 14 days;
/// Graph documents no bounds, so Gatehouse picks one hour to 30 days).
pub const DEFAULT_AUTO_DENY_DAYS: i64 = 14;
pub const MAX_AUTO_DENY_DAYS: i64 = 30;
/// The longest assignment a policy may grant (Entra's portal: 3,660 days).
pub const MAX_ASSIGNMENT_DAYS: i64 = 3_660;
pub const MAX_QUESTIONS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetScope {
    /// Nobody may request; the policy is for direct assignment by administrators.
    NotSpecified,
    SpecificDirectoryUsers,
    /// Members, not guests.
    AllMemberUsers,
    /// Members and guests.
    AllDirectoryUsers,
    /// Guests only (users from outside the tenant invited into this directory).
    AllExternalUsers,
}

const SCOPES: &[(&str, Option<TargetScope>)] = &[
    ("notSpecified", Some(TargetScope::NotSpecified)),
    ("specificDirectoryUsers", Some(TargetScope::SpecificDirectoryUsers)),
    ("allMemberUsers", Some(TargetScope::AllMemberUsers)),
    ("allDirectoryUsers", Some(TargetScope::AllDirectoryUsers)),
    ("allExternalUsers", Some(TargetScope::AllExternalUsers)),
    ("specificConnectedOrganizationUsers", None),
    ("allConfiguredConnectedOrganizationUsers", None),
    ("specificDirectoryServicePrincipals", None),
    ("allDirectoryServicePrincipals", None),
    ("allDirectoryAgentIdentities", None),
];

impl TargetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetScope::NotSpecified => "notSpecified",
            TargetScope::SpecificDirectoryUsers => "specificDirectoryUsers",
            TargetScope::AllMemberUsers => "allMemberUsers",
            TargetScope::AllDirectoryUsers => "allDirectoryUsers",
            TargetScope::AllExternalUsers => "allExternalUsers",
        }
    }

    /// Entra's policy precedence when several policies of one package let a user request
    /// ("Troubleshoot entitlement management", *Multiple policies*): specific users and groups
    /// (1) before connected organizations (2) before everyone (3). Only the best rank is
    /// offered; within a rank the requestor chooses. `None`: nobody may request.
    pub fn rank(self) -> Option<u8> {
        match self {
            TargetScope::NotSpecified => None,
            TargetScope::SpecificDirectoryUsers => Some(1),
            TargetScope::AllMemberUsers
            | TargetScope::AllDirectoryUsers
            | TargetScope::AllExternalUsers => Some(3),
        }
    }
}

/// When access granted through the policy ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiration {
    NoExpiration,
    /// The text as given (an instant, a local date-time or a date), read in the policy's zone.
    AfterDateTime(String),
    AfterDuration(Duration),
}

impl Expiration {
    pub fn parse(obj: &Obj<'_>, zone: &Zone, what: &str) -> Result<Expiration, FieldError> {
        let ty = obj.string("type")?.unwrap_or("notSpecified");
        let path = obj.path.key("type");
        let table: &[(&str, u8)] =
            &[("notSpecified", 0), ("noExpiration", 0), ("afterDateTime", 1), ("afterDuration", 2)];
        match enum_value(ty, table, &path, "expiration type")? {
            0 if obj.string("duration")?.is_some() => Self::duration(obj),
            0 => Ok(Expiration::NoExpiration),
            1 => {
                let end = obj.required_string("endDateTime")?;
                if zone.instant(end).is_none() {
                    return Err(FieldError::new(
                        &obj.path.key("endDateTime"),
                        format!("`{end}` is not a date-time (for example `2026-07-31` or `2026-07-31T17:00:00Z`)"),
                    ));
                }
                Ok(Expiration::AfterDateTime(end.trim().to_owned()))
            }
            _ => Self::duration(obj),
        }
        .map_err(|mut e: FieldError| {
            if !what.is_empty() {
                e.message = format!("{} ({what})", e.message);
            }
            e
        })
    }

    fn duration(obj: &Obj<'_>) -> Result<Expiration, FieldError> {
        let text = obj.required_string("duration")?;
        let path = obj.path.key("duration");
        let d = Duration::parse(text).map_err(|m| FieldError::new(&path, m))?;
        if d.min_ms() <= 0 {
            return Err(FieldError::new(&path, "must be longer than zero"));
        }
        if d.approx_days() > MAX_ASSIGNMENT_DAYS {
            return Err(FieldError::new(
                &path,
                format!("is longer than the {MAX_ASSIGNMENT_DAYS} days an assignment may last"),
            ));
        }
        Ok(Expiration::AfterDuration(d))
    }

    /// The end of access starting at `start`: `None` for no end.
    pub fn end(&self, start: Millis, zone: &Zone) -> Option<Millis> {
        match self {
            Expiration::NoExpiration => None,
            Expiration::AfterDateTime(text) => zone.instant(text),
            Expiration::AfterDuration(d) => d.after(start, zone),
        }
    }

    pub fn to_graph(&self, zone: &Zone) -> Value {
        match self {
            Expiration::NoExpiration => {
                json!({"type": "noExpiration", "endDateTime": null, "duration": null})
            }
            Expiration::AfterDateTime(text) => json!({
                "type": "afterDateTime",
                "endDateTime": zone.instant(text).map(time::format),
                "duration": null,
            }),
            Expiration::AfterDuration(d) => {
                json!({"type": "afterDuration", "endDateTime": null, "duration": d.to_iso()})
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestorSettings {
    pub self_add: bool,
    pub self_update: bool,
    pub self_remove: bool,
    pub custom_schedule: bool,
    pub on_behalf_add: bool,
    pub on_behalf_update: bool,
    pub on_behalf_remove: bool,
    pub on_behalf_requestors: Vec<SubjectSet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalStage {
    pub auto_deny_after: Duration,
    pub approver_justification_required: bool,
    /// When the stage is offered to the escalation approvers, if escalation is on.
    pub escalate_after: Option<Duration>,
    pub primary: Vec<SubjectSet>,
    pub fallback_primary: Vec<SubjectSet>,
    pub escalation: Vec<SubjectSet>,
    pub fallback_escalation: Vec<SubjectSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalSettings {
    pub required_for_add: bool,
    pub required_for_update: bool,
    pub requestor_justification_required: bool,
    pub stages: Vec<ApprovalStage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomaticRequests {
    pub request_for_allowed_targets: bool,
    pub remove_when_targets_leave: bool,
    pub grace_period: Duration,
}

/// The custom-extension stages of Graph's `accessPackageCustomExtensionStage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtensionStage {
    RequestCreated,
    RequestApproved,
    RequestGranted,
    RequestRemoved,
    FourteenDaysBeforeExpiration,
    OneDayBeforeExpiration,
}

pub const EXTENSION_STAGES: &[(&str, ExtensionStage)] = &[
    ("assignmentRequestCreated", ExtensionStage::RequestCreated),
    ("assignmentRequestApproved", ExtensionStage::RequestApproved),
    ("assignmentRequestGranted", ExtensionStage::RequestGranted),
    ("assignmentRequestRemoved", ExtensionStage::RequestRemoved),
    ("assignmentFourteenDaysBeforeExpiration", ExtensionStage::FourteenDaysBeforeExpiration),
    ("assignmentOneDayBeforeExpiration", ExtensionStage::OneDayBeforeExpiration),
];

impl ExtensionStage {
    pub fn as_str(self) -> &'static str {
        EXTENSION_STAGES.iter().find(|(_, s)| *s == self).map(|(n, _)| *n).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<ExtensionStage> {
        EXTENSION_STAGES.iter().find(|(n, _)| n.eq_ignore_ascii_case(text.trim())).map(|(_, s)| *s)
    }

    /// Request stages are served by request workflow extensions (which may wait for a
    /// callback); the expiry reminders by assignment workflow extensions.
    pub fn is_request_stage(self) -> bool {
        matches!(
            self,
            ExtensionStage::RequestCreated
                | ExtensionStage::RequestApproved
                | ExtensionStage::RequestGranted
                | ExtensionStage::RequestRemoved
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentPolicy {
    pub id: String,
    pub access_package_id: String,
    pub display_name: String,
    pub description: String,
    pub scope: TargetScope,
    pub specific_targets: Vec<SubjectSet>,
    pub automatic: Option<AutomaticRequests>,
    pub expiration: Expiration,
    pub requestor: RequestorSettings,
    pub approval: ApprovalSettings,
    pub questions: Vec<Question>,
    pub extensions: Vec<(ExtensionStage, String)>,
    pub notifications_disabled: bool,
    /// Gatehouse's `timeZone`: the zone dates and day counts of this policy are read in.
    pub zone: Zone,
    pub created: Millis,
    pub modified: Millis,
}

fn flag(obj: &Obj<'_>, key: &str) -> Result<bool, FieldError> {
    Ok(obj.bool(key)?.unwrap_or(false))
}

fn field(e: FieldError) -> GovError {
    GovError::invalid(e.path.as_str(), e.message)
}

impl AssignmentPolicy {
    /// Reads a policy from its Graph JSON (a POST or PUT body). `default_zone` applies when the
    /// body names none. Directory references are checked by [`AssignmentPolicy::validate`].
    pub fn parse(
        id: &str,
        body: &Map<String, Value>,
        default_zone: &Zone,
        now: Millis,
    ) -> Result<AssignmentPolicy, GovError> {
        let v = Value::Object(body.clone());
        let root = JsonPath::root();
        let obj = Obj::new(&v, &root).map_err(field)?;
        Self::read(id, &obj, default_zone, now).map_err(field)
    }

    fn read(
        id: &str,
        obj: &Obj<'_>,
        default_zone: &Zone,
        now: Millis,
    ) -> Result<AssignmentPolicy, FieldError> {
        let display_name = obj.required_string("displayName")?.trim().to_owned();
        if display_name.is_empty() || display_name.chars().count() > 256 {
            return Err(FieldError::new(
                &obj.path.key("displayName"),
                "must be 1 to 256 characters",
            ));
        }
        let description = obj.string("description")?.unwrap_or_default().to_owned();
        let zone = match obj.string("timeZone")? {
            Some(name) => {
                Zone::named(name).map_err(|m| FieldError::new(&obj.path.key("timeZone"), m))?
            }
            None => default_zone.clone(),
        };
        let access_package_id = match obj.object("accessPackage")? {
            Some((m, p)) => {
                let v = Value::Object(m.clone());
                let o = Obj::new(&v, &p)?;
                normalize_id(o.required_string("id")?)
            }
            None => match obj.string("accessPackageId")? {
                Some(id) => normalize_id(id),
                None => {
                    return Err(FieldError::new(
                        &obj.path.key("accessPackage"),
                        "is required: `{\"accessPackage\": {\"id\": \"…\"}}`",
                    ));
                }
            },
        };
        let scope_text = obj.string("allowedTargetScope")?.unwrap_or("notSpecified");
        let scope = enum_value(
            scope_text,
            SCOPES,
            &obj.path.key("allowedTargetScope"),
            "allowedTargetScope",
        )?
        .ok_or_else(|| {
            FieldError::new(
                &obj.path.key("allowedTargetScope"),
                format!(
                    "`{scope_text}` needs connected organizations or service principals, which \
                     Gatehouse does not serve as requestors"
                ),
            )
        })?;
        let specific_targets = SubjectSet::parse_list(obj, "specificAllowedTargets", Use::Targets)?;
        if scope == TargetScope::SpecificDirectoryUsers && specific_targets.is_empty() {
            return Err(FieldError::new(
                &obj.path.key("specificAllowedTargets"),
                "must name at least one user or group when allowedTargetScope is \
                 specificDirectoryUsers",
            ));
        }
        if scope != TargetScope::SpecificDirectoryUsers && !specific_targets.is_empty() {
            return Err(FieldError::new(
                &obj.path.key("specificAllowedTargets"),
                format!(
                    "is used only with allowedTargetScope specificDirectoryUsers, not {}",
                    scope.as_str()
                ),
            ));
        }
        let automatic = match obj.object("automaticRequestSettings")? {
            None => None,
            Some((m, p)) => {
                let v = Value::Object(m.clone());
                let o = Obj::new(&v, &p)?;
                let grace = match o.string("gracePeriodBeforeAccessRemoval")? {
                    Some(t) => Duration::parse(t).map_err(|e| {
                        FieldError::new(&p.key("gracePeriodBeforeAccessRemoval"), e)
                    })?,
                    None => Duration::ZERO,
                };
                let a = AutomaticRequests {
                    request_for_allowed_targets: flag(&o, "requestAccessForAllowedTargets")?,
                    remove_when_targets_leave: flag(
                        &o,
                        "removeAccessWhenTargetLeavesAllowedTargets",
                    )?,
                    grace_period: grace,
                };
                if a.request_for_allowed_targets && scope == TargetScope::NotSpecified {
                    return Err(FieldError::new(
                        &p,
                        "automatic assignment needs an allowedTargetScope naming whom to assign",
                    ));
                }
                a.request_for_allowed_targets.then_some(a)
            }
        };
        let expiration = match obj.object("expiration")? {
            Some((m, p)) => {
                let v = Value::Object(m.clone());
                Expiration::parse(&Obj::new(&v, &p)?, &zone, "")?
            }
            None => Expiration::NoExpiration,
        };
        let requestor = match obj.object("requestorSettings")? {
            None => RequestorSettings::default(),
            Some((m, p)) => {
                let v = Value::Object(m.clone());
                let o = Obj::new(&v, &p)?;
                RequestorSettings {
                    self_add: flag(&o, "enableTargetsToSelfAddAccess")?,
                    self_update: flag(&o, "enableTargetsToSelfUpdateAccess")?,
                    self_remove: flag(&o, "enableTargetsToSelfRemoveAccess")?,
                    custom_schedule: flag(&o, "allowCustomAssignmentSchedule")?,
                    on_behalf_add: flag(&o, "enableOnBehalfRequestorsToAddAccess")?,
                    on_behalf_update: flag(&o, "enableOnBehalfRequestorsToUpdateAccess")?,
                    on_behalf_remove: flag(&o, "enableOnBehalfRequestorsToRemoveAccess")?,
                    on_behalf_requestors: SubjectSet::parse_list(
                        &o,
                        "onBehalfRequestors",
                        Use::Targets,
                    )?,
                }
            }
        };
        if scope == TargetScope::NotSpecified && (requestor.self_add || requestor.on_behalf_add) {
            return Err(FieldError::new(
                &obj.path.key("requestorSettings"),
                "lets users request, but allowedTargetScope notSpecified names nobody who may",
            ));
        }
        let approval = match obj.object("requestApprovalSettings")? {
            None => ApprovalSettings::default(),
            Some((m, p)) => {
                let v = Value::Object(m.clone());
                read_approval(&Obj::new(&v, &p)?)?
            }
        };
        let questions = obj
            .objects("questions")?
            .into_iter()
            .enumerate()
            .map(|(i, (m, p))| Question::parse(m, &p, &format!("{id}/question/{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        if questions.len() > MAX_QUESTIONS {
            return Err(FieldError::new(
                &obj.path.key("questions"),
                format!("holds {} questions; at most {MAX_QUESTIONS} are allowed", questions.len()),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, q) in questions.iter().enumerate() {
            if !seen.insert(q.id.clone()) {
                return Err(FieldError::new(
                    &obj.path.key("questions").index(i).key("id"),
                    format!("`{}` is the id of an earlier question too", q.id),
                ));
            }
        }
        let mut extensions = Vec::new();
        for (m, p) in obj.objects("customExtensionStageSettings")? {
            let v = Value::Object(m.clone());
            let o = Obj::new(&v, &p)?;
            let stage_text = o.required_string("stage")?;
            let stage = ExtensionStage::parse(stage_text).ok_or_else(|| {
                FieldError::new(
                    &p.key("stage"),
                    format!(
                        "`{stage_text}` is not a custom extension stage (expected one of: {})",
                        EXTENSION_STAGES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            let ext = match o.object("customExtension")? {
                Some((em, ep)) => {
                    let ev = Value::Object(em.clone());
                    normalize_id(Obj::new(&ev, &ep)?.required_string("id")?)
                }
                None => {
                    return Err(FieldError::new(
                        &p.key("customExtension"),
                        "is required: `{\"customExtension\": {\"id\": \"…\"}}`",
                    ));
                }
            };
            if extensions.iter().any(|(s, _)| *s == stage) {
                return Err(FieldError::new(
                    &p.key("stage"),
                    format!("`{}` has a custom extension already", stage.as_str()),
                ));
            }
            extensions.push((stage, ext));
        }
        let notifications_disabled = match obj.object("notificationSettings")? {
            Some((m, p)) => {
                let v = Value::Object(m.clone());
                flag(&Obj::new(&v, &p)?, "isAssignmentNotificationDisabled")?
            }
            None => false,
        };
        Ok(AssignmentPolicy {
            id: id.to_owned(),
            access_package_id,
            display_name,
            description,
            scope,
            specific_targets,
            automatic,
            expiration,
            requestor,
            approval,
            questions,
            extensions,
            notifications_disabled,
            zone,
            created: now,
            modified: now,
        })
    }

    /// Checks what the policy names against the directory: every user and group exists, and no
    /// approval stage can resolve to nobody (a manager or sponsor the requestor lacks, with no
    /// fallback approver to take over).
    pub fn validate(&self, dir: &Directory) -> Result<(), GovError> {
        let exists = |s: &SubjectSet, path: String| -> Result<(), GovError> {
            match s.named_object() {
                Some(("user", id)) if dir.user(id).is_none() => {
                    Err(GovError::invalid(&path, format!("user `{id}` does not exist")))
                }
                Some(("group", id)) if dir.group(id).is_none() => {
                    Err(GovError::invalid(&path, format!("group `{id}` does not exist")))
                }
                _ => Ok(()),
            }
        };
        for (i, s) in self.specific_targets.iter().enumerate() {
            exists(s, format!("specificAllowedTargets[{i}]"))?;
        }
        for (i, s) in self.requestor.on_behalf_requestors.iter().enumerate() {
            exists(s, format!("requestorSettings.onBehalfRequestors[{i}]"))?;
        }
        for (n, stage) in self.approval.stages.iter().enumerate() {
            let at =
                |key: &str, i: usize| format!("requestApprovalSettings.stages[{n}].{key}[{i}]");
            for (key, sets) in [
                ("primaryApprovers", &stage.primary),
                ("fallbackPrimaryApprovers", &stage.fallback_primary),
                ("escalationApprovers", &stage.escalation),
                ("fallbackEscalationApprovers", &stage.fallback_escalation),
            ] {
                for (i, s) in sets.iter().enumerate() {
                    exists(s, at(key, i))?;
                }
            }
            let stage_path = format!("requestApprovalSettings.stages[{n}]");
            if stage.primary.iter().all(SubjectSet::is_relative)
                && stage.fallback_primary.is_empty()
            {
                return Err(GovError::invalid(&format!("{stage_path}.fallbackPrimaryApprovers"), format!(
                    "stage {} is approved only by the requestor's manager or sponsors, who may not \
                     exist: name at least one fallback approver (a user or a group)",
                    n + 1
                ))
                .with_code("GH-EM-012"));
            }
            if stage.escalate_after.is_some()
                && stage.escalation.iter().all(SubjectSet::is_relative)
                && stage.fallback_escalation.is_empty()
            {
                return Err(GovError::invalid(
                    &format!("{stage_path}.escalationApprovers"),
                    format!(
                        "stage {} escalates to approvers who may not exist: name at least one \
                     escalation approver or fallback escalation approver (a user or a group)",
                        n + 1
                    ),
                )
                .with_code("GH-EM-012"));
            }
        }
        Ok(())
    }

    /// Whether approval is needed for a request of this kind.
    pub fn approval_needed(&self, kind: ApprovalFor) -> bool {
        let needed = match kind {
            ApprovalFor::Add => self.approval.required_for_add,
            ApprovalFor::Update => self.approval.required_for_update,
        };
        needed && !self.approval.stages.is_empty()
    }

    /// Is `user` (in the directory) among the users this policy lets request for themselves?
    pub fn allows_target(&self, dir: &Directory, user: &str) -> bool {
        let Some(u) = dir.user(user) else { return false };
        if !u.account_enabled {
            return false;
        }
        match self.scope {
            TargetScope::NotSpecified => false,
            TargetScope::SpecificDirectoryUsers => {
                self.specific_targets.iter().any(|s| s.contains(dir, user))
            }
            TargetScope::AllMemberUsers => !u.is_guest,
            TargetScope::AllDirectoryUsers => true,
            TargetScope::AllExternalUsers => u.is_guest,
        }
    }

    /// May `requestor` ask for access on behalf of others through this policy?
    pub fn allows_on_behalf(&self, dir: &Directory, requestor: &str) -> bool {
        self.requestor.on_behalf_requestors.iter().any(|s| s.contains(dir, requestor))
    }

    pub fn to_graph(&self, dir: &Directory, catalog_id: &str) -> Value {
        let r = &self.requestor;
        let a = &self.approval;
        json!({
            "id": self.id,
            "displayName": self.display_name,
            "description": self.description,
            "allowedTargetScope": self.scope.as_str(),
            "specificAllowedTargets": list_to_graph(&self.specific_targets, dir),
            "automaticRequestSettings": self.automatic.as_ref().map(|x| json!({
                "requestAccessForAllowedTargets": x.request_for_allowed_targets,
                "removeAccessWhenTargetLeavesAllowedTargets": x.remove_when_targets_leave,
                "gracePeriodBeforeAccessRemoval": x.grace_period.to_iso(),
            })),
            "expiration": self.expiration.to_graph(&self.zone),
            "requestorSettings": {
                "enableTargetsToSelfAddAccess": r.self_add,
                "enableTargetsToSelfUpdateAccess": r.self_update,
                "enableTargetsToSelfRemoveAccess": r.self_remove,
                "allowCustomAssignmentSchedule": r.custom_schedule,
                "enableOnBehalfRequestorsToAddAccess": r.on_behalf_add,
                "enableOnBehalfRequestorsToUpdateAccess": r.on_behalf_update,
                "enableOnBehalfRequestorsToRemoveAccess": r.on_behalf_remove,
                "onBehalfRequestors": list_to_graph(&r.on_behalf_requestors, dir),
            },
            "requestApprovalSettings": {
                "isApprovalRequiredForAdd": a.required_for_add,
                "isApprovalRequiredForUpdate": a.required_for_update,
                "isRequestorJustificationRequired": a.requestor_justification_required,
                "stages": a.stages.iter().map(|s| json!({
                    "durationBeforeAutomaticDenial": s.auto_deny_after.to_iso(),
                    "isApproverJustificationRequired": s.approver_justification_required,
                    "isEscalationEnabled": s.escalate_after.is_some(),
                    "durationBeforeEscalation": s.escalate_after.unwrap_or(Duration::ZERO).to_iso(),
                    "primaryApprovers": list_to_graph(&s.primary, dir),
                    "fallbackPrimaryApprovers": list_to_graph(&s.fallback_primary, dir),
                    "escalationApprovers": list_to_graph(&s.escalation, dir),
                    "fallbackEscalationApprovers": list_to_graph(&s.fallback_escalation, dir),
                })).collect::<Vec<_>>(),
            },
            "reviewSettings": null,
            "questions": self.questions.iter().map(Question::to_graph).collect::<Vec<_>>(),
            "customExtensionStageSettings": self.extensions.iter().map(|(stage, ext)| json!({
                "id": format!("{}_{}", self.id, stage.as_str()),
                "stage": stage.as_str(),
                "customExtension": {"id": ext},
            })).collect::<Vec<_>>(),
            "notificationSettings": {"isAssignmentNotificationDisabled": self.notifications_disabled},
            "timeZone": self.zone.name(),
            "createdDateTime": time::format(self.created),
            "modifiedDateTime": time::format(self.modified),
            "accessPackage": {"id": self.access_package_id},
            "catalog": {"id": catalog_id},
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalFor {
    Add,
    Update,
}

fn read_approval(obj: &Obj<'_>) -> Result<ApprovalSettings, FieldError> {
    let stages_raw = obj.objects("stages")?;
    if stages_raw.len() > MAX_STAGES {
        return Err(FieldError::new(
            &obj.path.key("stages"),
            format!("holds {} stages; at most {MAX_STAGES} are allowed", stages_raw.len()),
        ));
    }
    let mut stages = Vec::new();
    for (m, p) in stages_raw {
        let v = Value::Object(m.clone());
        let o = Obj::new(&v, &p)?;
        let auto_deny_after = match o.string("durationBeforeAutomaticDenial")? {
            Some(t) => {
                let d = Duration::parse(t)
                    .map_err(|e| FieldError::new(&p.key("durationBeforeAutomaticDenial"), e))?;
                if d.is_zero() { Duration::days(DEFAULT_AUTO_DENY_DAYS) } else { d }
            }
            None => Duration::days(DEFAULT_AUTO_DENY_DAYS),
        };
        if auto_deny_after.min_ms() < 3_600_000
            || auto_deny_after.approx_days() > MAX_AUTO_DENY_DAYS
        {
            return Err(FieldError::new(
                &p.key("durationBeforeAutomaticDenial"),
                format!(
                    "`{}` is outside one hour to {MAX_AUTO_DENY_DAYS} days",
                    auto_deny_after.to_iso()
                ),
            ));
        }
        let escalate_after = if flag(&o, "isEscalationEnabled")? {
            let t = o.string("durationBeforeEscalation")?.unwrap_or("PT0S");
            let d = Duration::parse(t)
                .map_err(|e| FieldError::new(&p.key("durationBeforeEscalation"), e))?;
            if d.min_ms() <= 0 || d.nominal_ms() >= auto_deny_after.nominal_ms() {
                return Err(FieldError::new(
                    &p.key("durationBeforeEscalation"),
                    format!(
                        "`{}` must be longer than zero and shorter than durationBeforeAutomaticDenial ({})",
                        d.to_iso(),
                        auto_deny_after.to_iso()
                    ),
                ));
            }
            Some(d)
        } else {
            None
        };
        let stage = ApprovalStage {
            auto_deny_after,
            approver_justification_required: flag(&o, "isApproverJustificationRequired")?,
            escalate_after,
            primary: SubjectSet::parse_list(&o, "primaryApprovers", Use::Approvers)?,
            fallback_primary: SubjectSet::parse_list(
                &o,
                "fallbackPrimaryApprovers",
                Use::Approvers,
            )?,
            escalation: SubjectSet::parse_list(&o, "escalationApprovers", Use::Approvers)?,
            fallback_escalation: SubjectSet::parse_list(
                &o,
                "fallbackEscalationApprovers",
                Use::Approvers,
            )?,
        };
        if stage.primary.is_empty() {
            return Err(FieldError::new(
                &p.key("primaryApprovers"),
                "must name at least one approver",
            ));
        }
        if stage.escalate_after.is_some()
            && stage.escalation.is_empty()
            && stage.fallback_escalation.is_empty()
        {
            return Err(FieldError::new(
                &p.key("escalationApprovers"),
                "must name at least one approver when isEscalationEnabled is true",
            ));
        }
        stages.push(stage);
    }
    let settings = ApprovalSettings {
        required_for_add: flag(obj, "isApprovalRequiredForAdd")?,
        required_for_update: flag(obj, "isApprovalRequiredForUpdate")?,
        requestor_justification_required: flag(obj, "isRequestorJustificationRequired")?,
        stages,
    };
    if (settings.required_for_add || settings.required_for_update) && settings.stages.is_empty() {
        return Err(FieldError::new(
            &obj.path.key("stages"),
            "must hold at least one stage when approval is required",
        ));
    }
    Ok(settings)
}

/// Of the policies of one package that let `user` request for themselves, those Entra would
/// offer: the best-ranked ones (see [`TargetScope::rank`]).
pub fn offered_to<'p>(
    policies: &'p [AssignmentPolicy],
    dir: &Directory,
    user: &str,
) -> Vec<&'p AssignmentPolicy> {
    let eligible: Vec<&AssignmentPolicy> =
        policies.iter().filter(|p| p.requestor.self_add && p.allows_target(dir, user)).collect();
    let best = eligible.iter().filter_map(|p| p.scope.rank()).min();
    eligible.into_iter().filter(|p| p.scope.rank() == best).collect()
}
