//! The request and assignment state machines.
//!
//! ```text
//! submitted ─(created extension, maybe waiting for its callback)─► approval needed?
//!   yes: stage 1 … stage n (approvers resolved at each stage's start; deny, time out ─► denied)
//!   ─(approved extension, maybe waiting)─► start in the future? scheduled ─► delivered
//! delivered: assignment with its grants ─► reminders 14 days and 1 day before ─► expired
//! ```
//!
//! Each function takes the request (and assignment) as they are, the context (directory, policy,
//! package, now) and one event, and returns [`Effects`]: the new records, the grants to put or
//! revoke, the due jobs to schedule or cancel, the mails and custom-extension calls to send, and
//! the audit entries. The server writes all of them in one transaction. Nothing here reads the
//! clock, the network or the store.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::GovError;
use super::duration::{Duration, Zone};
use super::model::{
    Assignment, AssignmentState, Callout, CalloutStatus, Grant, GrantedRole, HistoryEntry, Request,
    RequestState, RequestType, ReviewResult, Schedule, Stage, StageStatus, Status, StoredAnswer,
};
use super::policy::{ApprovalFor, AssignmentPolicy, Expiration, ExtensionStage};
use super::questions::check_answers;
use super::subjects::resolve_all;
use crate::directory::Directory;
use crate::grants::GrantRow;
use crate::time::{self, Millis};

/// The longest justification kept.
pub const MAX_JUSTIFICATION: usize = 4_000;
/// Reminders before an assignment ends, in days (Entra's two).
pub const REMINDER_DAYS: [i64; 2] = [14, 1];
/// `reprocess` is allowed this long after a failed delivery completed.
pub const REPROCESS_WINDOW_DAYS: i64 = 14;

/// A resource role scope of the package: what an assignment of it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleScope {
    pub id: String,
    pub role: GrantedRole,
}

#[derive(Debug, Clone, Copy)]
pub struct PackageView<'a> {
    pub id: &'a str,
    pub display_name: &'a str,
    pub catalog_id: &'a str,
    pub role_scopes: &'a [RoleScope],
}

/// A custom extension attached to a stage of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRef {
    pub id: String,
    pub stage: ExtensionStage,
    /// Launch and wait: the request waits this long for the `resume` callback.
    pub wait: Option<Duration>,
}

pub struct Ctx<'a> {
    pub dir: &'a Directory,
    pub policy: &'a AssignmentPolicy,
    pub package: PackageView<'a>,
    pub extensions: &'a [ExtensionRef],
    pub now: Millis,
    /// Who acts (`None`: Gatehouse itself: a timeout, a schedule, an expiry).
    pub actor: Option<String>,
    /// Fresh ids (the server passes its random source).
    pub new_id: &'a mut dyn FnMut() -> String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Escalate(usize),
    AutoDeny(usize),
    /// A scheduled request's start.
    Deliver,
    /// A launch-and-wait callout's deadline.
    CalloutTimeout(String),
    Expire,
    Remind(i64),
    /// An automatic assignment whose target left the allowed targets (after the grace period).
    AutoRemove,
}

impl JobKind {
    pub fn key(&self) -> String {
        match self {
            JobKind::Escalate(i) => format!("escalate/{i}"),
            JobKind::AutoDeny(i) => format!("deny/{i}"),
            JobKind::Deliver => "deliver".into(),
            JobKind::CalloutTimeout(id) => format!("callout/{id}"),
            JobKind::Expire => "expire".into(),
            JobKind::Remind(d) => format!("remind/{d}"),
            JobKind::AutoRemove => "autoremove".into(),
        }
    }

    pub fn parse(key: &str) -> Option<JobKind> {
        let (head, rest) = key.split_once('/').unwrap_or((key, ""));
        Some(match head {
            "escalate" => JobKind::Escalate(rest.parse().ok()?),
            "deny" => JobKind::AutoDeny(rest.parse().ok()?),
            "deliver" => JobKind::Deliver,
            "callout" => JobKind::CalloutTimeout(rest.to_owned()),
            "expire" => JobKind::Expire,
            "remind" => JobKind::Remind(rest.parse().ok()?),
            "autoremove" => JobKind::AutoRemove,
            _ => return None,
        })
    }

    /// Jobs about a request (the others are about an assignment).
    pub fn is_request_job(&self) -> bool {
        matches!(
            self,
            JobKind::Escalate(_)
                | JobKind::AutoDeny(_)
                | JobKind::Deliver
                | JobKind::CalloutTimeout(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub kind: JobKind,
    /// The request or assignment id.
    pub subject: String,
    pub due: Millis,
}

/// The mails of `docs/governance.md` (Entra's table in *entitlement-management-process*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    ApprovalRequested,
    ApprovalEscalated,
    ApprovalCompleted,
    ApprovalExpired,
    RequestDenied,
    RequestExpired,
    AccessGranted,
    AccessExtended,
    AccessExpiring,
    AccessRemoved,
}

impl Template {
    pub const ALL: &'static [Template] = &[
        Template::ApprovalRequested,
        Template::ApprovalEscalated,
        Template::ApprovalCompleted,
        Template::ApprovalExpired,
        Template::RequestDenied,
        Template::RequestExpired,
        Template::AccessGranted,
        Template::AccessExtended,
        Template::AccessExpiring,
        Template::AccessRemoved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Template::ApprovalRequested => "approval-requested",
            Template::ApprovalEscalated => "approval-escalated",
            Template::ApprovalCompleted => "approval-completed",
            Template::ApprovalExpired => "approval-expired",
            Template::RequestDenied => "request-denied",
            Template::RequestExpired => "request-expired",
            Template::AccessGranted => "access-granted",
            Template::AccessExtended => "access-extended",
            Template::AccessExpiring => "access-expiring",
            Template::AccessRemoved => "access-removed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub template: Template,
    /// A user id.
    pub to: String,
    pub request_id: Option<String>,
    pub assignment_id: Option<String>,
    /// 1-based stage number, for approver mails.
    pub stage: Option<usize>,
    /// "Decide by", "access ends at".
    pub deadline: Option<Millis>,
    /// Days before expiry, for reminders.
    pub days: Option<i64>,
}

/// A custom extension to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutSend {
    pub callout_id: String,
    pub extension_id: String,
    pub stage: ExtensionStage,
    pub request_id: Option<String>,
    pub assignment_id: Option<String>,
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantChange {
    Put(GrantRow),
    Revoke { role: GrantedRole, principal: String, assignment: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Entra's activity names: `Create access package assignment request`…
    pub activity: String,
    pub request_id: Option<String>,
    pub assignment_id: Option<String>,
    pub target_user: Option<String>,
    /// The state before and after, for `modifiedProperties`.
    pub before: Option<String>,
    pub after: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub request: Option<Request>,
    pub assignment: Option<Assignment>,
    pub grants: Vec<GrantChange>,
    pub jobs: Vec<Job>,
    /// (subject, job key) pairs to cancel.
    pub cancel_jobs: Vec<(String, String)>,
    pub mails: Vec<Mail>,
    pub callouts: Vec<CalloutSend>,
    pub audits: Vec<AuditEvent>,
}

// ---------------------------------------------------------------------------------------------
// Preparing a request
// ---------------------------------------------------------------------------------------------

/// What the caller asked, as the HTTP edge read it.
pub struct NewRequest<'a> {
    pub id: String,
    /// The id the assignment gets on delivery (add requests).
    pub new_assignment_id: String,
    pub request_type: RequestType,
    pub caller: &'a str,
    pub target: &'a str,
    /// For update and remove requests: the assignment they are about.
    pub existing: Option<&'a Assignment>,
    pub answers: &'a [Value],
    pub justification: Option<&'a str>,
    pub schedule: Option<&'a Map<String, Value>>,
}

/// Checks a new request against its policy and builds it, `submitted`. Who may make admin
/// requests and which policies a user is offered are the server's to check first (they need
/// catalog roles and the package's other policies).
pub fn prepare(
    input: NewRequest<'_>,
    dir: &Directory,
    policy: &AssignmentPolicy,
    now: Millis,
) -> Result<Request, GovError> {
    let t = input.request_type;
    let target_user = dir
        .user(input.target)
        .ok_or_else(|| GovError::not_found(format!("user `{}` does not exist", input.target)))?;
    if t.is_add() && !target_user.account_enabled {
        return Err(GovError::invalid(
            "assignment.targetId",
            format!("user `{}` is disabled", target_user.display_name),
        ));
    }
    let on_behalf = input.caller != input.target;
    if t.by_user() {
        let r = &policy.requestor;
        let (own, behalf, what) = match t {
            _ if t.is_add() => (r.self_add, r.on_behalf_add, "request"),
            _ if t.is_update() => (r.self_update, r.on_behalf_update, "extend"),
            _ => (r.self_remove, r.on_behalf_remove, "remove"),
        };
        if on_behalf {
            if !behalf || !policy.allows_on_behalf(dir, input.caller) {
                return Err(GovError::forbidden(format!(
                    "policy `{}` does not let you {what} access on behalf of other users",
                    policy.display_name
                ))
                .with_code("GH-EM-030"));
            }
        } else if !own {
            return Err(GovError::forbidden(format!(
                "policy `{}` does not let users {what} access themselves",
                policy.display_name
            ))
            .with_code("GH-EM-030"));
        }
        if t.is_add() && !policy.allows_target(dir, input.target) {
            return Err(GovError::forbidden(format!(
                "`{}` is not among the users policy `{}` lets request this access package",
                target_user.display_name, policy.display_name
            ))
            .with_code("GH-EM-031"));
        }
    }
    let justification =
        input.justification.map(str::trim).filter(|j| !j.is_empty()).map(str::to_owned);
    if justification.as_ref().is_some_and(|j| j.chars().count() > MAX_JUSTIFICATION) {
        return Err(GovError::invalid(
            "justification",
            format!("is longer than {MAX_JUSTIFICATION} characters"),
        ));
    }
    if t.by_user()
        && !t.is_remove()
        && policy.approval.requestor_justification_required
        && justification.is_none()
    {
        return Err(GovError::invalid(
            "justification",
            format!("policy `{}` requires a justification", policy.display_name),
        )
        .with_code("GH-EM-022"));
    }
    let answers = if t.is_remove() {
        Vec::new()
    } else {
        let checked = check_answers(&policy.questions, input.answers);
        match checked {
            // Administrators assign directly and need not answer what requestors are asked.
            Err(e) if !t.by_user() && e.code == "GH-EM-020" => {
                check_answers(&policy.questions, &[]).unwrap_or_default()
            }
            other => other?,
        }
    };
    let (schedule, assignment_id) = match t {
        _ if t.is_add() => {
            (schedule_for(input.schedule, policy, now, None, t.by_user())?, input.new_assignment_id)
        }
        _ => {
            let a = input.existing.ok_or_else(|| {
                GovError::invalid("assignment.id", "is required for update and remove requests")
            })?;
            if a.target_id != input.target {
                return Err(GovError::invalid(
                    "assignment.id",
                    "names an assignment of another user",
                ));
            }
            if !matches!(
                a.state_at(now),
                AssignmentState::Delivered | AssignmentState::PartiallyDelivered
            ) {
                return Err(GovError::conflict(format!(
                    "assignment `{}` is {}; only a delivered assignment can be changed",
                    a.id,
                    a.state_at(now).as_str()
                ))
                .with_code("GH-EM-032"));
            }
            let schedule = if t.is_update() {
                let s = schedule_for(input.schedule, policy, now, Some(a), t.by_user())?;
                if let Some(old_end) = a.schedule.end
                    && s.end.is_some_and(|e| e <= old_end)
                {
                    return Err(GovError::invalid(
                        "schedule.expiration",
                        format!(
                            "ends on {}, not later than the assignment ends now ({})",
                            policy.zone.local_text(s.end.unwrap_or_default()),
                            policy.zone.local_text(old_end)
                        ),
                    ));
                }
                if a.schedule.end.is_none() {
                    return Err(GovError::invalid(
                        "schedule",
                        "the assignment never expires, so there is nothing to extend",
                    ));
                }
                s
            } else {
                a.schedule.clone()
            };
            (schedule, a.id.clone())
        }
    };
    let mut req = Request {
        id: input.id,
        request_type: t,
        state: RequestState::Submitted,
        status: Status::Accepted,
        access_package_id: policy.access_package_id.clone(),
        policy_id: policy.id.clone(),
        target_id: input.target.to_owned(),
        requestor_id: Some(input.caller.to_owned()),
        assignment_id,
        justification,
        answers: answers.iter().map(StoredAnswer::from).collect(),
        schedule,
        created: now,
        completed: None,
        stages: Vec::new(),
        callouts: Vec::new(),
        history: Vec::new(),
    };
    req.history.push(HistoryEntry {
        at: now,
        state: req.state,
        status: req.status,
        by: Some(input.caller.to_owned()),
        detail: "Request submitted".into(),
    });
    Ok(req)
}

/// The window a request asks for, within what the policy allows. `existing`: an extension,
/// whose new end is counted from now.
fn schedule_for(
    body: Option<&Map<String, Value>>,
    policy: &AssignmentPolicy,
    now: Millis,
    existing: Option<&Assignment>,
    by_user: bool,
) -> Result<Schedule, GovError> {
    let zone: &Zone = &policy.zone;
    let mut start = now;
    let mut asked: Option<Expiration> = None;
    if let Some(b) = body {
        if let Some(text) = b.get("startDateTime").and_then(Value::as_str) {
            let at = zone.instant(text).ok_or_else(|| {
                GovError::invalid("schedule.startDateTime", format!("`{text}` is not a date-time"))
            })?;
            // A start in the past (a slow client, a copied example) means now.
            start = at.max(now);
        }
        if let Some(exp) = b.get("expiration").filter(|v| !v.is_null()) {
            let path = gatehouse_policy::json::JsonPath::root().key("schedule").key("expiration");
            let obj = gatehouse_policy::json::Obj::new(exp, &path)
                .map_err(|e| GovError::invalid(e.path.as_str(), e.message))?;
            let e = Expiration::parse(&obj, zone, "")
                .map_err(|e| GovError::invalid(e.path.as_str(), e.message))?;
            let explicit = obj
                .string("type")
                .ok()
                .flatten()
                .is_some_and(|t| !t.eq_ignore_ascii_case("notSpecified"));
            if explicit || e != Expiration::NoExpiration {
                asked = Some(e);
            }
        }
    }
    let custom = start != now || asked.is_some();
    if custom && by_user && !policy.requestor.custom_schedule {
        return Err(GovError::invalid(
            "schedule",
            format!(
                "policy `{}` does not let requestors choose when access starts or ends",
                policy.display_name
            ),
        )
        .with_code("GH-EM-023"));
    }
    if existing.is_some() {
        start = existing.map(|a| a.schedule.start).unwrap_or(now);
    }
    let base = if existing.is_some() { now } else { start };
    let allowed_end = policy.expiration.end(base, zone);
    if let (Expiration::AfterDateTime(_), Some(e)) = (&policy.expiration, allowed_end)
        && e <= now
    {
        return Err(GovError::invalid(
            "schedule",
            format!(
                "policy `{}` granted access until {}, which has passed",
                policy.display_name,
                zone.local_text(e)
            ),
        ));
    }
    let (end, duration) = match &asked {
        None => (
            allowed_end,
            match &policy.expiration {
                Expiration::AfterDuration(d) => Some(d.to_iso()),
                _ => None,
            },
        ),
        Some(Expiration::NoExpiration) => (None, None),
        Some(Expiration::AfterDuration(d)) => (d.after(base, zone), Some(d.to_iso())),
        Some(e @ Expiration::AfterDateTime(_)) => (e.end(base, zone), None),
    };
    if let Some(limit) = allowed_end {
        match end {
            Some(e) if e <= limit => {}
            _ => {
                let how = match &policy.expiration {
                    Expiration::AfterDuration(d) => format!("for at most {}", d.to_iso()),
                    _ => format!("until {} at the latest", zone.local_text(limit)),
                };
                return Err(GovError::invalid(
                    "schedule.expiration",
                    format!("policy `{}` grants access {how}", policy.display_name),
                )
                .with_code("GH-EM-024"));
            }
        }
    }
    if let Some(e) = end
        && e <= start
    {
        return Err(GovError::invalid("schedule.expiration", "ends before it starts"));
    }
    let start_on_delivery =
        existing.is_none() && start == now && !matches!(asked, Some(Expiration::AfterDateTime(_)));
    Ok(Schedule { start, end, duration, start_on_delivery })
}

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------

struct Machine<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    req: Option<Request>,
    asg: Option<Assignment>,
    fx: Effects,
}

/// What a stage extension's callback said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    Continue,
    Deny,
    Cancel,
}

impl<'c, 'a> Machine<'c, 'a> {
    fn new(ctx: &'c mut Ctx<'a>, req: Option<Request>, asg: Option<Assignment>) -> Self {
        Machine { ctx, req, asg, fx: Effects::default() }
    }

    fn finish(mut self) -> Effects {
        self.fx.request = self.req;
        self.fx.assignment = self.asg;
        self.fx
    }

    fn now(&self) -> Millis {
        self.ctx.now
    }

    fn notify(&self) -> bool {
        !self.ctx.policy.notifications_disabled
    }

    fn set(&mut self, state: RequestState, status: Status, detail: impl Into<String>) {
        let (now, by) = (self.ctx.now, self.ctx.actor.clone());
        let Some(r) = self.req.as_mut() else { return };
        let before = format!("{}/{}", r.state.as_str(), r.status.as_str());
        r.state = state;
        r.status = status;
        if state.is_final() {
            r.completed = Some(now);
        }
        let detail = detail.into();
        r.history.push(HistoryEntry { at: now, state, status, by, detail: detail.clone() });
        let after = format!("{}/{}", state.as_str(), status.as_str());
        let (rid, target) = (r.id.clone(), r.target_id.clone());
        self.audit(
            &activity_for(state, status),
            Some(rid),
            None,
            Some(target),
            Some(before),
            Some(after),
            detail,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn audit(
        &mut self,
        activity: &str,
        request_id: Option<String>,
        assignment_id: Option<String>,
        target_user: Option<String>,
        before: Option<String>,
        after: Option<String>,
        detail: String,
    ) {
        self.fx.audits.push(AuditEvent {
            activity: activity.to_owned(),
            request_id,
            assignment_id,
            target_user,
            before,
            after,
            detail,
        });
    }

    fn job(&mut self, kind: JobKind, subject: &str, due: Millis) {
        self.fx.jobs.push(Job { kind, subject: subject.to_owned(), due });
    }

    fn cancel(&mut self, subject: &str, kind: &JobKind) {
        self.fx.cancel_jobs.push((subject.to_owned(), kind.key()));
    }

    fn mail(
        &mut self,
        template: Template,
        to: &str,
        stage: Option<usize>,
        deadline: Option<Millis>,
    ) {
        let (rid, aid) = match &self.req {
            Some(r) => (Some(r.id.clone()), Some(r.assignment_id.clone())),
            None => (None, self.asg.as_ref().map(|a| a.id.clone())),
        };
        self.fx.mails.push(Mail {
            template,
            to: to.to_owned(),
            request_id: rid,
            assignment_id: aid,
            stage,
            deadline,
            days: None,
        });
    }

    fn requestor_mail(&mut self, template: Template, deadline: Option<Millis>) {
        let Some(r) = &self.req else { return };
        if !self.notify() || !r.request_type.by_user() {
            return; // Admin direct assignments send no completion or denial mail (Entra).
        }
        let mut to = vec![r.target_id.clone()];
        if let Some(q) = &r.requestor_id
            && q != &r.target_id
        {
            to.push(q.clone());
        }
        for u in to {
            self.mail(template, &u, None, deadline);
        }
    }

    /// Calls the custom extension of `stage`, if any. Returns true when the request now waits
    /// for its callback.
    fn extension(&mut self, stage: ExtensionStage) -> bool {
        let Some(ext) = self.ctx.extensions.iter().find(|e| e.stage == stage).cloned() else {
            return false;
        };
        let id = (self.ctx.new_id)();
        // Only the created and approved stages may hold the request (the others happen after
        // the fact: there is nothing left to hold).
        let wait = ext.wait.filter(|_| {
            matches!(stage, ExtensionStage::RequestCreated | ExtensionStage::RequestApproved)
        });
        let (rid, aid) = match &self.req {
            Some(r) => (Some(r.id.clone()), Some(r.assignment_id.clone())),
            None => (None, self.asg.as_ref().map(|a| a.id.clone())),
        };
        if let Some(r) = self.req.as_mut() {
            r.callouts.push(Callout {
                id: id.clone(),
                extension_id: ext.id.clone(),
                stage: stage.as_str().to_owned(),
                status: if wait.is_some() {
                    CalloutStatus::WaitingForCallback
                } else {
                    CalloutStatus::CalloutSent
                },
                wait: wait.is_some(),
                detail: None,
                external_correlation_id: None,
            });
        }
        self.fx.callouts.push(CalloutSend {
            callout_id: id.clone(),
            extension_id: ext.id,
            stage,
            request_id: rid.clone(),
            assignment_id: aid,
            wait: wait.is_some(),
        });
        match (wait, rid) {
            (Some(timeout), Some(rid)) => {
                let due = timeout.after(self.now(), &self.ctx.policy.zone).unwrap_or(self.now());
                self.job(JobKind::CalloutTimeout(id), &rid, due);
                let state = self.req.as_ref().map(|r| r.state).unwrap_or(RequestState::Submitted);
                self.set(
                    state,
                    Status::WaitingForCallback,
                    format!("Waiting for custom extension at {}", stage.as_str()),
                );
                true
            }
            _ => false,
        }
    }

    fn after_created(&mut self) {
        let Some(r) = &self.req else { return };
        let kind = if r.request_type.is_update() { ApprovalFor::Update } else { ApprovalFor::Add };
        let needs = r.request_type.by_user()
            && !r.request_type.is_remove()
            && self.ctx.policy.approval_needed(kind);
        if needs {
            if let Some(r) = self.req.as_mut() {
                r.stages =
                    self.ctx.policy.approval.stages.iter().map(|_| Stage::not_started()).collect();
            }
            self.start_stage(0);
        } else {
            self.approved();
        }
    }

    /// The approvers of `sets`, without the requestor and the target: nobody approves their
    /// own access.
    fn resolve(&self, sets: &[super::subjects::SubjectSet]) -> BTreeSet<String> {
        let Some(r) = &self.req else { return BTreeSet::new() };
        let mut who = resolve_all(sets, self.ctx.dir, &r.target_id);
        who.remove(&r.target_id);
        if let Some(q) = &r.requestor_id {
            who.remove(q);
        }
        who
    }

    fn start_stage(&mut self, i: usize) {
        let Some(def) = self.ctx.policy.approval.stages.get(i).cloned() else {
            self.approved();
            return;
        };
        let mut approvers = self.resolve(&def.primary);
        let mut used_fallback = false;
        if approvers.is_empty() {
            approvers = self.resolve(&def.fallback_primary);
            used_fallback = true;
        }
        if approvers.is_empty() {
            self.set(
                RequestState::Denied,
                Status::Denied,
                format!(
                    "Nobody can approve stage {}: no approver or fallback approver could be found",
                    i + 1
                ),
            );
            self.requestor_mail(Template::RequestDenied, None);
            return;
        }
        let now = self.now();
        let zone = self.ctx.policy.zone.clone();
        let deadline = def.auto_deny_after.after(now, &zone).unwrap_or(now);
        let Some(rid) = self.req.as_ref().map(|r| r.id.clone()) else { return };
        if let Some(stage) = self.req.as_mut().and_then(|r| r.stages.get_mut(i)) {
            stage.status = StageStatus::InProgress;
            stage.started = Some(now);
            stage.approvers = approvers.clone();
            stage.used_fallback = used_fallback;
        }
        self.job(JobKind::AutoDeny(i), &rid, deadline);
        if let Some(esc) = def.escalate_after {
            let at = esc.after(now, &zone).unwrap_or(now);
            self.job(JobKind::Escalate(i), &rid, at);
        }
        let detail = if used_fallback {
            format!(
                "Stage {} started; the primary approvers could not be found, so the fallback approvers decide",
                i + 1
            )
        } else {
            format!("Stage {} started", i + 1)
        };
        self.set(RequestState::PendingApproval, Status::PendingApproval, detail);
        let deadline_for_mail =
            def.escalate_after.and_then(|e| e.after(now, &zone)).unwrap_or(deadline);
        for a in &approvers {
            self.mail(Template::ApprovalRequested, a, Some(i + 1), Some(deadline_for_mail));
        }
    }

    fn approved(&mut self) {
        if self.extension(ExtensionStage::RequestApproved) {
            return;
        }
        self.schedule_or_deliver();
    }

    fn schedule_or_deliver(&mut self) {
        let Some(r) = self.req.clone() else { return };
        if r.request_type.is_add() && r.schedule.start > self.now() {
            // The grants are put in place now, starting at the start: access begins at that
            // instant even if the worker recording the delivery runs late.
            let grants = self.grants_for(&r.assignment_id, &r.target_id, &r.schedule);
            self.fx.grants.extend(grants.into_iter().map(GrantChange::Put));
            self.job(JobKind::Deliver, &r.id, r.schedule.start);
            self.set(
                RequestState::Scheduled,
                Status::PendingNotBefore,
                format!(
                    "Scheduled to start on {}",
                    self.ctx.policy.zone.local_text(r.schedule.start)
                ),
            );
            return;
        }
        self.deliver();
    }

    fn grants_for(&self, assignment: &str, target: &str, s: &Schedule) -> Vec<GrantRow> {
        self.ctx
            .package
            .role_scopes
            .iter()
            .map(|rs| GrantRow {
                role: rs.role.clone(),
                principal: target.to_owned(),
                assignment: assignment.to_owned(),
                from: s.start,
                until: s.end,
            })
            .collect()
    }

    /// Can this role be granted now? (Its group or service principal still exists.)
    fn grantable(&self, role: &GrantedRole) -> Result<(), String> {
        match role {
            GrantedRole::GroupMember { group_id } | GrantedRole::GroupOwner { group_id } => {
                if self.ctx.dir.group(group_id).is_some() {
                    Ok(())
                } else {
                    Err(format!("group `{group_id}` no longer exists"))
                }
            }
            GrantedRole::AppRole { service_principal_id, .. } => {
                if self.ctx.dir.service_principal(service_principal_id).is_some() {
                    Ok(())
                } else {
                    Err(format!("service principal `{service_principal_id}` no longer exists"))
                }
            }
        }
    }

    fn deliver(&mut self) {
        let Some(r) = self.req.clone() else { return };
        let now = self.now();
        if r.request_type.is_remove() {
            self.end_assignment("Removed", "Access removed at request");
            self.set(RequestState::Delivered, Status::Delivered, "Access removed");
            return;
        }
        // Add (a new assignment, or a repeat delivery after a failure) or update (a new end).
        let mut a = match (self.asg.take(), r.request_type.is_add()) {
            (Some(a), _) => a,
            (None, _) => Assignment {
                id: r.assignment_id.clone(),
                access_package_id: r.access_package_id.clone(),
                policy_id: r.policy_id.clone(),
                target_id: r.target_id.clone(),
                state: AssignmentState::Delivering,
                status: "Delivering".into(),
                schedule: r.schedule.clone(),
                expired_at: None,
                created: now,
                grants: Vec::new(),
                failed: Vec::new(),
            },
        };
        let old_end = a.schedule.end;
        if r.request_type.is_update() {
            a.schedule.end = r.schedule.end;
            a.schedule.duration = r.schedule.duration.clone();
        } else if a.schedule.start_on_delivery && a.grants.is_empty() {
            // Access starts now, not when it was asked for; a duration counts from now.
            let zone = self.ctx.policy.zone.clone();
            a.schedule.start = now;
            if let Some(d) = a.schedule.duration.as_deref().and_then(|d| Duration::parse(d).ok()) {
                a.schedule.end = d.after(now, &zone);
            }
            a.schedule.start_on_delivery = false;
        }
        if a.schedule.end.is_some_and(|e| e <= now) {
            let detail = "The access the request asked for ended before it could be delivered";
            self.asg = None;
            self.set(RequestState::DeliveryFailed, Status::DeliveryFailed, detail);
            return;
        }
        let mut granted = Vec::new();
        let mut failed = Vec::new();
        for rs in self.ctx.package.role_scopes {
            match self.grantable(&rs.role) {
                Ok(()) => {
                    self.fx.grants.push(GrantChange::Put(GrantRow {
                        role: rs.role.clone(),
                        principal: a.target_id.clone(),
                        assignment: a.id.clone(),
                        from: a.schedule.start,
                        until: a.schedule.end,
                    }));
                    granted.push(Grant { role_scope_id: rs.id.clone(), role: rs.role.clone() });
                }
                Err(why) => failed.push((rs.id.clone(), why)),
            }
        }
        let (astate, rstate, rstatus) = match (granted.is_empty(), failed.is_empty()) {
            (_, true) => (AssignmentState::Delivered, RequestState::Delivered, Status::Delivered),
            (false, false) => (
                AssignmentState::PartiallyDelivered,
                RequestState::PartiallyDelivered,
                Status::PartiallyDelivered,
            ),
            (true, false) => (
                AssignmentState::DeliveryFailed,
                RequestState::DeliveryFailed,
                Status::DeliveryFailed,
            ),
        };
        a.state = astate;
        a.status = rstatus.as_str().to_owned();
        a.grants = granted;
        a.failed = failed.clone();
        // Expiry and the reminders before it; an update moves them.
        let zone = self.ctx.policy.zone.clone();
        if old_end != a.schedule.end || r.request_type.is_add() {
            for d in REMINDER_DAYS {
                self.cancel(&a.id, &JobKind::Remind(d));
            }
            self.cancel(&a.id, &JobKind::Expire);
        }
        if let Some(end) = a.schedule.end {
            self.job(JobKind::Expire, &a.id, end);
            for d in REMINDER_DAYS {
                if let Some(at) = Duration::days(d).before(end, &zone)
                    && at > now
                {
                    self.job(JobKind::Remind(d), &a.id, at);
                }
            }
        }
        let activity = if r.request_type.is_update() {
            "Extend access package assignment"
        } else {
            "Create access package assignment"
        };
        let detail = match a.schedule.end {
            Some(e) => format!("Access until {}", zone.local_text(e)),
            None => "Access with no expiration".into(),
        };
        let aid = a.id.clone();
        let target = a.target_id.clone();
        let end = a.schedule.end;
        self.asg = Some(a);
        self.audit(
            activity,
            Some(r.id.clone()),
            Some(aid),
            Some(target),
            Some(format!("{:?}", old_end.map(time::format))),
            end.map(time::format),
            detail.clone(),
        );
        let detail = if failed.is_empty() {
            detail
        } else {
            format!(
                "{detail}; not delivered: {}",
                failed.iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>().join("; ")
            )
        };
        self.set(rstate, rstatus, detail);
        if rstate != RequestState::DeliveryFailed {
            let t = if r.request_type.is_update() {
                Template::AccessExtended
            } else {
                Template::AccessGranted
            };
            self.requestor_mail(t, end);
            self.extension(ExtensionStage::RequestGranted);
        }
    }

    /// Ends the assignment now: its grants are revoked and its jobs canceled.
    fn end_assignment(&mut self, status: &str, detail: &str) {
        let Some(mut a) = self.asg.take() else { return };
        if a.state == AssignmentState::Expired {
            self.asg = Some(a);
            return;
        }
        let now = self.now();
        let before = a.state.as_str().to_owned();
        for g in &a.grants {
            self.fx.grants.push(GrantChange::Revoke {
                role: g.role.clone(),
                principal: a.target_id.clone(),
                assignment: a.id.clone(),
            });
        }
        for rs in self.ctx.package.role_scopes {
            if !a.grants.iter().any(|g| g.role == rs.role) {
                // A grant put in place for a schedule that never delivered.
                self.fx.grants.push(GrantChange::Revoke {
                    role: rs.role.clone(),
                    principal: a.target_id.clone(),
                    assignment: a.id.clone(),
                });
            }
        }
        for k in [JobKind::Expire, JobKind::Remind(14), JobKind::Remind(1), JobKind::AutoRemove] {
            self.cancel(&a.id, &k);
        }
        a.state = AssignmentState::Expired;
        a.status = status.to_owned();
        // An assignment that ran to its end expired at its end, whenever the worker ran.
        a.expired_at = Some(match a.schedule.end {
            Some(e) if e <= now => e,
            _ => now,
        });
        let (aid, target) = (a.id.clone(), a.target_id.clone());
        let activity = if status == "Expired" {
            "Access package assignment expired"
        } else {
            "Remove access package assignment"
        };
        self.asg = Some(a);
        self.audit(
            activity,
            self.req.as_ref().map(|r| r.id.clone()),
            Some(aid.clone()),
            Some(target.clone()),
            Some(before),
            Some("expired".into()),
            detail.to_owned(),
        );
        if self.notify() {
            self.fx.mails.push(Mail {
                template: Template::AccessRemoved,
                to: target,
                request_id: None,
                assignment_id: Some(aid),
                stage: None,
                deadline: None,
                days: None,
            });
        }
        self.extension(ExtensionStage::RequestRemoved);
    }
}

fn activity_for(state: RequestState, status: Status) -> String {
    match (state, status) {
        (RequestState::Submitted, Status::Accepted) => "Create access package assignment request",
        (_, Status::WaitingForCallback) => "Custom extension called, waiting for its callback",
        (RequestState::PendingApproval, Status::PendingApprovalEscalated) => {
            "Escalate access package assignment request"
        }
        (RequestState::PendingApproval, _) => "Access package assignment request awaits approval",
        (RequestState::Scheduled, _) => "Schedule access package assignment request",
        (RequestState::Denied, Status::Expired) => "Access package assignment request timed out",
        (RequestState::Denied, _) => "Deny access package assignment request",
        (RequestState::Canceled, _) => "Cancel access package assignment request",
        (RequestState::Delivered, _) => "Fulfill access package assignment request",
        (RequestState::PartiallyDelivered, _) => {
            "Partially fulfill access package assignment request"
        }
        (RequestState::DeliveryFailed, _) => "Access package assignment request delivery failed",
        (RequestState::Delivering, _) => "Deliver access package assignment request",
        (RequestState::Submitted, _) => "Update access package assignment request",
    }
    .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// A prepared request is taken in: its created extension is called, then approval starts or
/// access is delivered. `existing`: the assignment an update or remove request is about.
pub fn submit(ctx: &mut Ctx<'_>, req: Request, existing: Option<Assignment>) -> Effects {
    let mut m = Machine::new(ctx, Some(req.clone()), existing);
    m.audit(
        "Create access package assignment request",
        Some(req.id.clone()),
        None,
        Some(req.target_id.clone()),
        None,
        Some("submitted/Accepted".into()),
        format!("{} request", req.request_type.as_str()),
    );
    if !m.extension(ExtensionStage::RequestCreated) {
        m.after_created();
    }
    m.finish()
}

/// An approver decides the stage now in progress.
pub fn decide(
    ctx: &mut Ctx<'_>,
    req: Request,
    stage_index: usize,
    approve: bool,
    by: &str,
    justification: Option<&str>,
) -> Result<Effects, GovError> {
    let Some(stage) = req.stages.get(stage_index) else {
        return Err(GovError::not_found(format!(
            "request `{}` has no stage {}",
            req.id,
            stage_index + 1
        )));
    };
    if by == req.target_id || req.requestor_id.as_deref() == Some(by) {
        return Err(
            GovError::forbidden("you cannot approve your own request").with_code("GH-EM-040")
        );
    }
    if !stage.approvers.contains(by) {
        return Err(
            GovError::forbidden("you are not an approver of this stage").with_code("GH-EM-041")
        );
    }
    if stage.status != StageStatus::InProgress || req.state != RequestState::PendingApproval {
        let who = stage
            .reviewed_by
            .as_deref()
            .and_then(|u| ctx.dir.user(u))
            .map(|u| u.display_name.clone());
        let what = match (stage.result, who) {
            (ReviewResult::NotReviewed, _) => {
                format!("stage {} is {}", stage_index + 1, stage.status.as_str())
            }
            (r, Some(w)) => format!(
                "stage {} was already {} by {w}",
                stage_index + 1,
                r.as_str().to_lowercase()
            ),
            (r, None) => {
                format!("stage {} was already {}", stage_index + 1, r.as_str().to_lowercase())
            }
        };
        return Err(GovError::conflict(format!("{what}; the request is {}", req.state.as_str()))
            .with_code("GH-EM-042"));
    }
    let def = ctx.policy.approval.stages.get(stage_index).cloned();
    // Past its deadline the stage has timed out, whether or not the worker has recorded it yet.
    let deadline = def
        .as_ref()
        .and_then(|d| stage.started.and_then(|st| d.auto_deny_after.after(st, &ctx.policy.zone)));
    if deadline.is_some_and(|d| ctx.now >= d) {
        return Err(GovError::conflict(format!(
            "stage {} timed out at {}; the request is denied",
            stage_index + 1,
            ctx.policy.zone.local_text(deadline.unwrap_or_default())
        ))
        .with_code("GH-EM-042"));
    }
    let justification = justification.map(str::trim).filter(|j| !j.is_empty()).map(str::to_owned);
    if def.as_ref().is_some_and(|d| d.approver_justification_required) && justification.is_none() {
        return Err(GovError::invalid(
            "justification",
            "this stage requires the approver's justification",
        )
        .with_code("GH-EM-043"));
    }
    if justification.as_ref().is_some_and(|j| j.chars().count() > MAX_JUSTIFICATION) {
        return Err(GovError::invalid(
            "justification",
            format!("is longer than {MAX_JUSTIFICATION} characters"),
        ));
    }
    let now = ctx.now;
    let mut m = Machine::new(ctx, Some(req), None);
    let rid = m.req.as_ref().map(|r| r.id.clone()).unwrap_or_default();
    let others: Vec<String>;
    {
        let Some(s) = m.req.as_mut().and_then(|r| r.stages.get_mut(stage_index)) else {
            return Ok(m.finish());
        };
        s.status = StageStatus::Completed;
        s.result = if approve { ReviewResult::Approved } else { ReviewResult::Denied };
        s.reviewed_by = Some(by.to_owned());
        s.justification = justification.clone();
        s.reviewed_at = Some(now);
        others = s.approvers.iter().filter(|a| a.as_str() != by).cloned().collect();
    }
    m.cancel(&rid, &JobKind::AutoDeny(stage_index));
    m.cancel(&rid, &JobKind::Escalate(stage_index));
    for o in &others {
        m.mail(Template::ApprovalCompleted, o, Some(stage_index + 1), None);
    }
    let verdict = if approve { "approved" } else { "denied" };
    let name = m.ctx.dir.user(by).map(|u| u.display_name.clone()).unwrap_or_else(|| by.to_owned());
    let detail = match &justification {
        Some(j) => format!("Stage {} {verdict} by {name}: {j}", stage_index + 1),
        None => format!("Stage {} {verdict} by {name}", stage_index + 1),
    };
    if approve {
        m.audit(
            "Approve access package assignment request",
            Some(rid.clone()),
            None,
            None,
            None,
            None,
            detail,
        );
        if stage_index + 1 < m.ctx.policy.approval.stages.len() {
            m.start_stage(stage_index + 1);
        } else {
            m.approved();
        }
    } else {
        m.set(RequestState::Denied, Status::Denied, detail);
        m.requestor_mail(Template::RequestDenied, None);
    }
    Ok(m.finish())
}

/// Escalation time of a stage came: the escalation approvers may decide too.
pub fn escalate(ctx: &mut Ctx<'_>, req: Request, stage_index: usize) -> Effects {
    let mut m = Machine::new(ctx, Some(req), None);
    let in_progress = m
        .req
        .as_ref()
        .and_then(|r| r.stages.get(stage_index))
        .is_some_and(|s| s.status == StageStatus::InProgress && !s.escalated);
    let Some(def) = m.ctx.policy.approval.stages.get(stage_index).cloned() else {
        return m.finish();
    };
    if !in_progress || m.req.as_ref().is_none_or(|r| r.state != RequestState::PendingApproval) {
        return m.finish();
    }
    let mut extra = m.resolve(&def.escalation);
    if extra.is_empty() {
        extra = m.resolve(&def.fallback_escalation);
    }
    let deadline = m
        .req
        .as_ref()
        .and_then(|r| r.stages.get(stage_index))
        .and_then(|s| s.started)
        .and_then(|st| def.auto_deny_after.after(st, &m.ctx.policy.zone));
    let new: Vec<String>;
    {
        let Some(s) = m.req.as_mut().and_then(|r| r.stages.get_mut(stage_index)) else {
            return m.finish();
        };
        s.escalated = true;
        new = extra.iter().filter(|a| !s.approvers.contains(*a)).cloned().collect();
        for a in &extra {
            s.approvers.insert(a.clone());
            s.escalation_approvers.insert(a.clone());
        }
    }
    m.set(
        RequestState::PendingApproval,
        Status::PendingApprovalEscalated,
        format!("Stage {} escalated to {} approver(s)", stage_index + 1, new.len()),
    );
    for a in &new {
        m.mail(Template::ApprovalEscalated, a, Some(stage_index + 1), deadline);
    }
    m.finish()
}

/// Nobody decided a stage in time: the request is denied with status `Expired`.
pub fn time_out(ctx: &mut Ctx<'_>, req: Request, stage_index: usize) -> Effects {
    let mut m = Machine::new(ctx, Some(req), None);
    let pending = m.req.as_ref().is_some_and(|r| r.state == RequestState::PendingApproval)
        && m.req
            .as_ref()
            .and_then(|r| r.stages.get(stage_index))
            .is_some_and(|s| s.status == StageStatus::InProgress);
    if !pending {
        return m.finish();
    }
    let rid = m.req.as_ref().map(|r| r.id.clone()).unwrap_or_default();
    let approvers: Vec<String> = m
        .req
        .as_mut()
        .and_then(|r| r.stages.get_mut(stage_index))
        .map(|s| {
            s.status = StageStatus::Expired;
            s.approvers.iter().cloned().collect()
        })
        .unwrap_or_default();
    m.cancel(&rid, &JobKind::Escalate(stage_index));
    m.set(
        RequestState::Denied,
        Status::Expired,
        format!("No decision at stage {} in time", stage_index + 1),
    );
    for a in &approvers {
        m.mail(Template::ApprovalExpired, a, Some(stage_index + 1), None);
    }
    if m.notify() {
        let targets: Vec<String> = m
            .req
            .as_ref()
            .map(|r| {
                let mut v = vec![r.target_id.clone()];
                if let Some(q) = &r.requestor_id
                    && q != &r.target_id
                {
                    v.push(q.clone())
                }
                v
            })
            .unwrap_or_default();
        for t in targets {
            m.mail(Template::RequestExpired, &t, None, None);
        }
    }
    m.finish()
}

/// A scheduled request's start came.
pub fn start_reached(ctx: &mut Ctx<'_>, req: Request) -> Effects {
    let mut m = Machine::new(ctx, Some(req), None);
    if m.req.as_ref().is_some_and(|r| r.state == RequestState::Scheduled) {
        m.deliver();
    }
    m.finish()
}

/// The requestor or an administrator cancels the request.
pub fn cancel(ctx: &mut Ctx<'_>, req: Request) -> Result<Effects, GovError> {
    if !req.is_cancelable() {
        return Err(GovError::conflict(format!(
            "request `{}` is {} and can no longer be canceled",
            req.id,
            req.state.as_str()
        ))
        .with_code("GH-EM-044"));
    }
    let mut m = Machine::new(ctx, Some(req.clone()), None);
    for (i, _) in req.stages.iter().enumerate() {
        m.cancel(&req.id, &JobKind::AutoDeny(i));
        m.cancel(&req.id, &JobKind::Escalate(i));
    }
    m.cancel(&req.id, &JobKind::Deliver);
    for c in &req.callouts {
        m.cancel(&req.id, &JobKind::CalloutTimeout(c.id.clone()));
    }
    if req.state == RequestState::Scheduled {
        // The grants put in place for the start are taken back.
        for rs in m.ctx.package.role_scopes {
            m.fx.grants.push(GrantChange::Revoke {
                role: rs.role.clone(),
                principal: req.target_id.clone(),
                assignment: req.assignment_id.clone(),
            });
        }
    }
    if let Some(s) = m
        .req
        .as_mut()
        .and_then(|r| r.stages.iter_mut().find(|s| s.status == StageStatus::InProgress))
    {
        s.status = StageStatus::Completed;
    }
    m.set(RequestState::Canceled, Status::Canceled, "Request canceled");
    Ok(m.finish())
}

/// A launch-and-wait extension called back (`resume`).
pub fn callback(
    ctx: &mut Ctx<'_>,
    req: Request,
    stage: ExtensionStage,
    instance_id: Option<&str>,
    outcome: CallbackOutcome,
    detail: Option<&str>,
) -> Result<Effects, GovError> {
    let waiting = req.callouts.iter().position(|c| {
        c.status == CalloutStatus::WaitingForCallback
            && c.stage.eq_ignore_ascii_case(stage.as_str())
            && instance_id.is_none_or(|i| i.eq_ignore_ascii_case(&c.id))
    });
    let Some(i) = waiting.filter(|_| req.status == Status::WaitingForCallback) else {
        return Err(GovError::conflict(format!(
            "request `{}` is not waiting for a callback at stage {}",
            req.id,
            stage.as_str()
        ))
        .with_code("GH-EM-050"));
    };
    let mut m = Machine::new(ctx, Some(req), None);
    let cid = {
        let Some(c) = m.req.as_mut().and_then(|r| r.callouts.get_mut(i)) else {
            return Ok(m.finish());
        };
        c.status = CalloutStatus::CallbackReceived;
        c.detail = detail.map(|d| d.chars().take(MAX_JUSTIFICATION).collect());
        c.id.clone()
    };
    let rid = m.req.as_ref().map(|r| r.id.clone()).unwrap_or_default();
    m.cancel(&rid, &JobKind::CalloutTimeout(cid));
    let said = detail.map(|d| format!(": {d}")).unwrap_or_default();
    match outcome {
        CallbackOutcome::Deny => {
            m.set(
                RequestState::Denied,
                Status::Denied,
                format!("Denied by the custom extension at {}{said}", stage.as_str()),
            );
            m.requestor_mail(Template::RequestDenied, None);
        }
        CallbackOutcome::Cancel => {
            m.set(
                RequestState::Canceled,
                Status::Canceled,
                format!("Canceled by the custom extension at {}{said}", stage.as_str()),
            );
        }
        CallbackOutcome::Continue => {
            let state = m.req.as_ref().map(|r| r.state).unwrap_or(RequestState::Submitted);
            m.set(
                state,
                Status::Accepted,
                format!("Custom extension at {} called back{said}", stage.as_str()),
            );
            match stage {
                ExtensionStage::RequestCreated => m.after_created(),
                _ => m.schedule_or_deliver(),
            }
        }
    }
    Ok(m.finish())
}

/// A launch-and-wait extension did not call back in time: the request fails (denied).
pub fn callout_timed_out(ctx: &mut Ctx<'_>, req: Request, callout_id: &str) -> Effects {
    let mut m = Machine::new(ctx, Some(req), None);
    let waiting = m.req.as_mut().and_then(|r| {
        r.callouts
            .iter_mut()
            .find(|c| c.id == callout_id && c.status == CalloutStatus::WaitingForCallback)
    });
    let Some(c) = waiting else { return m.finish() };
    c.status = CalloutStatus::CallbackTimedOut;
    let stage = c.stage.clone();
    m.set(
        RequestState::Denied,
        Status::Denied,
        format!("The custom extension at {stage} did not call back in time"),
    );
    m.requestor_mail(Template::RequestDenied, None);
    m.finish()
}

/// Redelivers a request whose delivery failed in part or in full (within 14 days).
pub fn reprocess(
    ctx: &mut Ctx<'_>,
    req: Request,
    existing: Option<Assignment>,
) -> Result<Effects, GovError> {
    if !matches!(req.state, RequestState::DeliveryFailed | RequestState::PartiallyDelivered) {
        return Err(GovError::conflict(format!(
            "request `{}` is {}; only a request whose delivery failed can be reprocessed",
            req.id,
            req.state.as_str()
        ))
        .with_code("GH-EM-045"));
    }
    let window = Duration::days(REPROCESS_WINDOW_DAYS).nominal_ms();
    if req.completed.is_some_and(|c| ctx.now - c > window) {
        return Err(GovError::conflict(format!(
            "request `{}` completed more than {REPROCESS_WINDOW_DAYS} days ago and can no longer be reprocessed",
            req.id
        ))
        .with_code("GH-EM-045"));
    }
    let mut m = Machine::new(ctx, Some(req), existing);
    m.set(RequestState::Delivering, Status::Delivering, "Reprocessing the delivery");
    m.deliver();
    Ok(m.finish())
}

/// An assignment's end came (or an automatic assignment's target left its scope).
pub fn expire(ctx: &mut Ctx<'_>, a: Assignment, auto_removed: bool) -> Effects {
    let now = ctx.now;
    let mut m = Machine::new(ctx, None, Some(a));
    let live = m.asg.as_ref().is_some_and(|a| {
        matches!(
            a.state,
            AssignmentState::Delivered
                | AssignmentState::PartiallyDelivered
                | AssignmentState::DeliveryFailed
        )
    });
    let due = m.asg.as_ref().is_some_and(|a| a.schedule.end.is_some_and(|e| e <= now));
    if live && (due || auto_removed) {
        if auto_removed {
            m.end_assignment("Removed", "The target left the users the automatic policy assigns");
        } else {
            m.end_assignment("Expired", "The assignment reached its end");
        }
    }
    m.finish()
}

/// N days before an assignment ends: the target is told (and the expiry extension called).
pub fn remind(ctx: &mut Ctx<'_>, a: Assignment, days: i64) -> Effects {
    let now = ctx.now;
    let mut m = Machine::new(ctx, None, Some(a));
    let Some(asg) = m.asg.clone() else { return m.finish() };
    let live =
        matches!(asg.state, AssignmentState::Delivered | AssignmentState::PartiallyDelivered);
    if !live || asg.schedule.end.is_none_or(|e| e <= now) {
        return m.finish();
    }
    if m.notify() {
        m.fx.mails.push(Mail {
            template: Template::AccessExpiring,
            to: asg.target_id.clone(),
            request_id: None,
            assignment_id: Some(asg.id.clone()),
            stage: None,
            deadline: asg.schedule.end,
            days: Some(days),
        });
    }
    if let Some(a) = m.asg.as_mut() {
        a.status =
            format!("NearExpiry{days}Day{}NotificationTriggered", if days == 1 { "" } else { "s" });
    }
    let stage = if days >= 14 {
        ExtensionStage::FourteenDaysBeforeExpiration
    } else {
        ExtensionStage::OneDayBeforeExpiration
    };
    m.extension(stage);
    m.finish()
}

/// A resource role was added to or removed from the package: every live assignment gains or
/// loses it.
pub fn role_scope_changed(
    ctx: &mut Ctx<'_>,
    a: Assignment,
    scope: &RoleScope,
    added: bool,
) -> Effects {
    let now = ctx.now;
    let mut m = Machine::new(ctx, None, Some(a));
    let Some(mut asg) = m.asg.take() else { return m.finish() };
    let live = matches!(
        asg.state_at(now),
        AssignmentState::Delivered | AssignmentState::PartiallyDelivered
    );
    if live {
        if added && !asg.grants.iter().any(|g| g.role_scope_id == scope.id) {
            m.fx.grants.push(GrantChange::Put(GrantRow {
                role: scope.role.clone(),
                principal: asg.target_id.clone(),
                assignment: asg.id.clone(),
                from: asg.schedule.start,
                until: asg.schedule.end,
            }));
            asg.grants.push(Grant { role_scope_id: scope.id.clone(), role: scope.role.clone() });
        } else if !added && asg.grants.iter().any(|g| g.role_scope_id == scope.id) {
            m.fx.grants.push(GrantChange::Revoke {
                role: scope.role.clone(),
                principal: asg.target_id.clone(),
                assignment: asg.id.clone(),
            });
            asg.grants.retain(|g| g.role_scope_id != scope.id);
        }
    }
    m.asg = Some(asg);
    m.finish()
}

/// What an automatic-assignment policy (`automaticRequestSettings`) wants now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoPlan {
    /// Users in scope without an assignment: each gets a `systemAdd` request.
    pub add: Vec<String>,
    /// Assignments whose target left the scope: removed at the instant given (after the grace
    /// period), unless the target comes back first.
    pub remove_at: Vec<(String, Millis)>,
    /// Assignments whose target came back: their pending removal is canceled.
    pub keep: Vec<String>,
}

/// Compares who an automatic policy should assign with who it has assigned. `live`: the
/// policy's live assignments; `leaving`: those already scheduled for removal.
pub fn plan_automatic(
    policy: &AssignmentPolicy,
    dir: &Directory,
    live: &[Assignment],
    leaving: &BTreeSet<String>,
    now: Millis,
) -> AutoPlan {
    let Some(auto) = &policy.automatic else { return AutoPlan::default() };
    let in_scope: BTreeSet<String> = match policy.scope {
        super::policy::TargetScope::SpecificDirectoryUsers => {
            let mut out = BTreeSet::new();
            for s in &policy.specific_targets {
                match s {
                    super::subjects::SubjectSet::SingleUser { user_id } => {
                        out.insert(user_id.clone());
                    }
                    super::subjects::SubjectSet::GroupMembers { group_id } => {
                        out.extend(dir.transitive_members(group_id));
                    }
                    _ => {}
                }
            }
            out.into_iter().filter(|u| policy.allows_target(dir, u)).collect()
        }
        _ => {
            dir.users().filter(|u| policy.allows_target(dir, &u.id)).map(|u| u.id.clone()).collect()
        }
    };
    let mut plan = AutoPlan::default();
    let assigned: BTreeSet<&str> = live.iter().map(|a| a.target_id.as_str()).collect();
    for u in &in_scope {
        if !assigned.contains(u.as_str()) {
            plan.add.push(u.clone());
        }
    }
    for a in live {
        let inside = in_scope.contains(&a.target_id);
        if !inside && auto.remove_when_targets_leave && !leaving.contains(&a.id) {
            let at = auto.grace_period.after(now, &policy.zone).unwrap_or(now);
            plan.remove_at.push((a.id.clone(), at));
        } else if inside && leaving.contains(&a.id) {
            plan.keep.push(a.id.clone());
        }
    }
    plan
}
