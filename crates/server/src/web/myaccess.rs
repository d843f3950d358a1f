//! `/myaccess`: what a user may request, their requests and their access; and
//! `/myaccess/approvals`: the requests waiting for their decision, and the decisions made.
//!
//! Every page reads and writes through the entitlement-management API as its viewer, so the
//! policy's rules (who may request, the questions, the justification, the dates, who approves)
//! are the API's, with its messages.

use askama::Template;
use axum::extract::{Path, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Form, Nav, Portal, error_page, read_form, render, render_status, s, urlencode, when};
use crate::state::AppState;

const EM: &str = "/v1.0/identityGovernance/entitlementManagement";

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
        .route("/myaccess", get(home))
        .route("/myaccess/packages/{id}", get(request_form).post(submit_request))
        .route("/myaccess/requests/{id}", get(request_page))
        .route("/myaccess/requests/{id}/cancel", post(cancel_request))
        .route("/myaccess/assignments/{id}/extend", get(extend_form).post(submit_extend))
        .route("/myaccess/approvals", get(approvals))
        .route("/myaccess/approvals/{id}", get(approval_page).post(decide))
}

// ----- view models -----

pub struct PackageRow {
    pub id: String,
    pub name: String,
    pub description: String,
}

pub struct RequestRow {
    pub id: String,
    pub package: String,
    pub kind: String,
    pub state: String,
    pub status: String,
    pub tone: &'static str,
    pub created: String,
}

pub struct AssignmentRow {
    pub id: String,
    pub package: String,
    pub state: String,
    pub tone: &'static str,
    pub from: String,
    pub until: String,
    pub active: bool,
    pub extendable: bool,
}

pub struct Step {
    pub when: String,
    pub status: String,
    pub by: String,
    pub detail: String,
}

pub struct AnswerRow {
    pub question: String,
    pub answer: String,
}

/// One question of a request form.
pub struct QuestionField {
    pub id: String,
    pub text: String,
    pub required: bool,
    /// `text`, `multiline`, `choice` or `multichoice`.
    pub kind: &'static str,
    pub pattern: String,
    pub choices: Vec<(String, String)>,
    /// What the user entered (kept when the form comes back with an error).
    pub value: Vec<String>,
}

impl QuestionField {
    pub fn has(&self, v: &str) -> bool {
        self.value.iter().any(|x| x == v)
    }

    pub fn first(&self) -> &str {
        self.value.first().map(String::as_str).unwrap_or_default()
    }
}

fn tone(state: &str) -> &'static str {
    match state {
        "delivered" | "Delivered" => "ok",
        "denied" | "deliveryFailed" | "canceled" | "expired" | "Denied" | "Expired" => "bad",
        "pendingApproval" | "submitted" | "scheduled" | "partiallyDelivered" | "delivering" => {
            "warn"
        }
        _ => "",
    }
}

fn state_text(state: &str) -> String {
    match state {
        "pendingApproval" => "Pending approval".into(),
        "submitted" => "Submitted".into(),
        "scheduled" => "Scheduled".into(),
        "delivered" => "Delivered".into(),
        "partiallyDelivered" => "Partially delivered".into(),
        "deliveryFailed" => "Delivery failed".into(),
        "denied" => "Denied".into(),
        "canceled" => "Canceled".into(),
        "expired" => "Expired".into(),
        "delivering" => "Delivering".into(),
        other => other.to_owned(),
    }
}

fn kind_text(kind: &str) -> String {
    match kind {
        "userAdd" | "adminAdd" | "systemAdd" => "Access".into(),
        "userUpdate" | "adminUpdate" | "systemUpdate" => "Extension".into(),
        "userRemove" | "adminRemove" | "systemRemove" => "Removal".into(),
        other => other.to_owned(),
    }
}

fn values(reply: &super::ApiReply) -> Vec<Value> {
    reply.body.get("value").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn package_name(v: &Value) -> String {
    match s(v, "/accessPackage/displayName") {
        n if n.is_empty() => "(an access package)".into(),
        n => n,
    }
}

fn request_row(r: &Value) -> RequestRow {
    let state = s(r, "/state");
    RequestRow {
        id: s(r, "/id"),
        package: package_name(r),
        kind: kind_text(&s(r, "/requestType")),
        tone: tone(&state),
        state: state_text(&state),
        status: s(r, "/status"),
        created: when(&s(r, "/createdDateTime")),
    }
}

fn until_text(v: &Value) -> String {
    match s(v, "/schedule/expiration/endDateTime") {
        e if e.is_empty() => "No end".into(),
        e => when(&e),
    }
}

// ----- My Access -----

#[derive(Template)]
#[template(path = "web/myaccess.html")]
struct HomePage {
    nav: Nav,
    notice: Option<String>,
    packages: Vec<PackageRow>,
    requests: Vec<RequestRow>,
    active: Vec<AssignmentRow>,
    expired: Vec<AssignmentRow>,
}

async fn home(
    p: Portal,
    q: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = p.require("/myaccess") {
        return r;
    }
    let offered =
        p.get(&format!("{EM}/accessPackages/filterByCurrentUser(on='allowedRequestor')")).await;
    if !offered.ok() {
        return error_page(
            &p,
            offered.status,
            "The access packages could not be read",
            &offered.message(),
        );
    }
    let requests = p
        .get(&format!(
            "{EM}/assignmentRequests/filterByCurrentUser(on='target')?$expand=accessPackage"
        ))
        .await;
    let assignments = p
        .get(&format!("{EM}/assignments/filterByCurrentUser(on='target')?$expand=accessPackage"))
        .await;
    let packages = values(&offered)
        .iter()
        .map(|v| PackageRow {
            id: s(v, "/id"),
            name: s(v, "/displayName"),
            description: s(v, "/description"),
        })
        .collect::<Vec<_>>();
    let mut reqs: Vec<Value> = values(&requests);
    reqs.sort_by_key(|r| std::cmp::Reverse(s(r, "/createdDateTime")));
    let offered_ids: Vec<String> = packages.iter().map(|p| p.id.clone()).collect();
    let (mut active, mut expired) = (Vec::new(), Vec::new());
    for a in values(&assignments) {
        let state = s(&a, "/state");
        let live = matches!(state.as_str(), "delivered" | "partiallyDelivered" | "delivering");
        let row = AssignmentRow {
            id: s(&a, "/id"),
            package: package_name(&a),
            tone: tone(&state),
            state: state_text(&state),
            from: when(&s(&a, "/schedule/startDateTime")),
            until: until_text(&a),
            active: live,
            extendable: live
                && !s(&a, "/schedule/expiration/endDateTime").is_empty()
                && offered_ids.contains(&s(&a, "/accessPackage/id")),
        };
        if live || state == "scheduled" { active.push(row) } else { expired.push(row) }
    }
    let notice = q.get("done").map(|d| match d.as_str() {
        "canceled" => "Your request is canceled.".to_owned(),
        _ => "Your request is sent.".to_owned(),
    });
    render(
        &p,
        &HomePage {
            nav: Nav::of(&p, "myaccess"),
            notice,
            packages,
            requests: reqs.iter().map(request_row).collect(),
            active,
            expired,
        },
    )
}

// ----- requesting -----

#[derive(Template)]
#[template(path = "web/request_form.html")]
struct RequestForm {
    nav: Nav,
    csrf: String,
    package_id: String,
    package: String,
    description: String,
    /// The policies the user may request under (usually one): (id, name, description).
    policies: Vec<(String, String, String)>,
    policy_id: String,
    questions: Vec<QuestionField>,
    justification_required: bool,
    justification: String,
    custom_schedule: bool,
    duration_text: String,
    start: String,
    end: String,
    idempotency_key: String,
    error: Option<String>,
    /// Extending an assignment rather than asking for a new one.
    extend_assignment: String,
}

/// The question's text in the browser's language when the policy has it.
fn localized(q: &Value, lang: &str) -> String {
    let primary =
        lang.split(['-', ',', ';']).next().unwrap_or_default().trim().to_ascii_lowercase();
    if !primary.is_empty()
        && let Some(list) = q.get("localizations").and_then(Value::as_array)
        && let Some(t) = list.iter().find(|l| {
            s(l, "/languageCode")
                .split('-')
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case(&primary))
        })
    {
        return s(t, "/text");
    }
    s(q, "/text")
}

fn question_fields(p: &Portal, req: &Value, form: Option<&Form>) -> Vec<QuestionField> {
    let lang = p
        .headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut qs: Vec<Value> =
        req.get("questions").and_then(Value::as_array).cloned().unwrap_or_default();
    qs.sort_by_key(|q| q.get("sequence").and_then(Value::as_i64).unwrap_or(0));
    qs.iter()
        .map(|q| {
            let id = s(q, "/id");
            let choice = s(q, "/@odata.type").ends_with("MultipleChoiceQuestion");
            let kind = match (
                choice,
                q.get("isMultipleSelectionAllowed").and_then(Value::as_bool).unwrap_or(false),
            ) {
                (true, true) => "multichoice",
                (true, false) => "choice",
                _ if q.get("isSingleLineQuestion").and_then(Value::as_bool) == Some(false) => {
                    "multiline"
                }
                _ => "text",
            };
            let choices = q
                .get("choices")
                .and_then(Value::as_array)
                .map(|cs| cs.iter().map(|c| (s(c, "/actualValue"), localized(c, lang))).collect())
                .unwrap_or_default();
            let value = form
                .map(|f| f.all(&format!("q:{id}")).iter().map(|v| (*v).to_owned()).collect())
                .unwrap_or_default();
            QuestionField {
                text: localized(q, lang),
                required: q.get("isRequired").and_then(Value::as_bool).unwrap_or(false),
                kind,
                pattern: s(q, "/regexPattern"),
                choices,
                value,
                id,
            }
        })
        .collect()
}

fn duration_text(expiration: Option<&Value>) -> String {
    let Some(e) = expiration else { return String::new() };
    match s(e, "/type").as_str() {
        "noExpiration" => "Access does not expire.".into(),
        "afterDateTime" => format!("Access ends on {}.", when(&s(e, "/endDateTime"))),
        "afterDuration" => {
            format!("Access lasts {} from approval.", human_duration(&s(e, "/duration")))
        }
        _ => String::new(),
    }
}

/// `P7D` as "7 days", `PT2H` as "2 hours" (plain ISO 8601 otherwise).
fn human_duration(d: &str) -> String {
    let unit =
        |n: &str, one: &str| if n == "1" { format!("1 {one}") } else { format!("{n} {one}s") };
    if let Some(n) = d
        .strip_prefix('P')
        .and_then(|r| r.strip_suffix('D'))
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return unit(n, "day");
    }
    if let Some(n) = d
        .strip_prefix("PT")
        .and_then(|r| r.strip_suffix('H'))
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return unit(n, "hour");
    }
    if let Some(n) = d
        .strip_prefix("PT")
        .and_then(|r| r.strip_suffix('M'))
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return unit(n, "minute");
    }
    d.to_owned()
}

async fn requirements_of(p: &Portal, package_id: &str) -> Result<Vec<Value>, Response> {
    let path =
        format!("{EM}/accessPackages/{}/getApplicablePolicyRequirements", urlencode(package_id));
    let reply = p.api(Method::POST, &path, None).await;
    if !reply.ok() {
        return Err(error_page(
            p,
            reply.status,
            "This access package cannot be requested",
            &reply.message(),
        ));
    }
    Ok(values(&reply))
}

async fn offered_package(p: &Portal, id: &str) -> Option<Value> {
    let offered =
        p.get(&format!("{EM}/accessPackages/filterByCurrentUser(on='allowedRequestor')")).await;
    values(&offered).into_iter().find(|v| s(v, "/id").eq_ignore_ascii_case(id))
}

async fn build_form(
    p: &Portal,
    package_id: &str,
    form: Option<&Form>,
    extend: &str,
) -> Result<RequestForm, Response> {
    let Some(pkg) = offered_package(p, package_id).await else {
        return Err(error_page(
            p,
            StatusCode::NOT_FOUND,
            "This access package is not offered to you",
            "It does not exist, or none of its policies lets you request it.",
        ));
    };
    let reqs = requirements_of(p, package_id).await?;
    let chosen = form.map(|f| f.text("policy")).filter(|c| !c.is_empty());
    let req = chosen
        .as_ref()
        .and_then(|c| reqs.iter().find(|r| s(r, "/policyId") == *c))
        .or_else(|| reqs.first())
        .cloned()
        .unwrap_or(Value::Null);
    Ok(RequestForm {
        nav: Nav::of(p, "myaccess"),
        csrf: p.csrf.clone(),
        package_id: s(&pkg, "/id"),
        package: s(&pkg, "/displayName"),
        description: s(&pkg, "/description"),
        policies: reqs
            .iter()
            .map(|r| (s(r, "/policyId"), s(r, "/policyDisplayName"), s(r, "/policyDescription")))
            .collect(),
        policy_id: s(&req, "/policyId"),
        questions: if extend.is_empty() { question_fields(p, &req, form) } else { Vec::new() },
        justification_required: req
            .get("isRequestorJustificationRequired")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        justification: form.map(|f| f.text("justification")).unwrap_or_default(),
        custom_schedule: req
            .get("allowCustomAssignmentSchedule")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        duration_text: duration_text(req.pointer("/schedule/expiration")),
        start: form.map(|f| f.text("start")).unwrap_or_default(),
        end: form.map(|f| f.text("end")).unwrap_or_default(),
        idempotency_key: form
            .map(|f| f.text("key"))
            .filter(|k| !k.is_empty())
            .unwrap_or_else(crate::random::guid),
        error: None,
        extend_assignment: extend.to_owned(),
    })
}

async fn request_form(p: Portal, Path(id): Path<String>) -> Response {
    if let Err(r) = p.require(&format!("/myaccess/packages/{id}")) {
        return r;
    }
    match build_form(&p, &id, None, "").await {
        Ok(f) => render(&p, &f),
        Err(r) => r,
    }
}

/// The answers of a posted request form, in the API's shape.
fn answers_of(fields: &[QuestionField]) -> Vec<Value> {
    let mut out = Vec::new();
    for q in fields {
        let qtype = if q.kind.contains("choice") {
            "#microsoft.graph.accessPackageMultipleChoiceQuestion"
        } else {
            "#microsoft.graph.accessPackageTextInputQuestion"
        };
        for v in q.value.iter().filter(|v| !v.trim().is_empty()) {
            out.push(json!({
                "@odata.type": "#microsoft.graph.accessPackageAnswerString",
                "value": v.trim(),
                "answeredQuestion": {"@odata.type": qtype, "id": q.id},
            }));
        }
    }
    out
}

fn schedule_of(start: &str, end: &str) -> Option<Value> {
    if start.is_empty() && end.is_empty() {
        return None;
    }
    let mut sched = json!({});
    if !start.is_empty() {
        super::put(&mut sched, "startDateTime", start);
    }
    if !end.is_empty() {
        super::put(&mut sched, "expiration", json!({"type": "afterDateTime", "endDateTime": end}));
    }
    Some(sched)
}

async fn submit_request(p: Portal, Path(id): Path<String>, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(v) = p.viewer.clone() else {
        return Redirect::to("/signin?return=/myaccess").into_response();
    };
    let mut page = match build_form(&p, &id, Some(&form), "").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut body = json!({
        "requestType": "userAdd",
        "assignment": {"targetId": v.user_id, "assignmentPolicyId": page.policy_id, "accessPackageId": page.package_id},
        "answers": answers_of(&page.questions),
    });
    if !page.justification.is_empty() {
        super::put(&mut body, "justification", page.justification.clone());
    }
    if let Some(sched) = schedule_of(&page.start, &page.end) {
        super::put(&mut body, "schedule", sched);
    }
    let key = page.idempotency_key.clone();
    let reply = p
        .call(
            Some(&v.token),
            Method::POST,
            &format!("{EM}/assignmentRequests"),
            Some(&body),
            &[("Idempotency-Key", &key)],
        )
        .await;
    if reply.ok() {
        return Redirect::to(&format!("/myaccess/requests/{}?sent=1", s(&reply.body, "/id")))
            .into_response();
    }
    page.error = Some(reply.message());
    render_status(&p, reply.status, &page)
}

// ----- one request -----

#[derive(Template)]
#[template(path = "web/request.html")]
struct RequestPage {
    nav: Nav,
    csrf: String,
    notice: Option<String>,
    row: RequestRow,
    justification: String,
    answers: Vec<AnswerRow>,
    schedule: String,
    steps: Vec<Step>,
    cancelable: bool,
}

fn answer_rows(r: &Value) -> Vec<AnswerRow> {
    r.get("answers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|ans| {
                    let question = match s(ans, "/answeredQuestion/text") {
                        t if t.is_empty() => "Answer".to_owned(),
                        t => t,
                    };
                    let shown = match s(ans, "/displayValue") {
                        d if d.is_empty() => s(ans, "/value"),
                        d => d,
                    };
                    AnswerRow { question, answer: shown }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn history_steps(r: &Value) -> Vec<Step> {
    r.get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .map(|e| Step {
                    when: when(&s(e, "/dateTime")),
                    status: s(e, "/status"),
                    by: match s(e, "/by/displayName") {
                        n if n.is_empty() && e.get("by").is_none_or(Value::is_null) => {
                            "Gatehouse".into()
                        }
                        n => n,
                    },
                    detail: s(e, "/detail"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn schedule_text(r: &Value) -> String {
    let start = s(r, "/schedule/startDateTime");
    let end = until_text(r);
    if start.is_empty() { end } else { format!("{} until {end}", when(&start)) }
}

async fn request_page(
    p: Portal,
    Path(id): Path<String>,
    q: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = p.require(&format!("/myaccess/requests/{id}")) {
        return r;
    }
    let reply =
        p.get(&format!("{EM}/assignmentRequests/{}?$expand=accessPackage", urlencode(&id))).await;
    if !reply.ok() {
        return error_page(&p, reply.status, "This request cannot be shown", &reply.message());
    }
    let r = reply.body;
    let state = s(&r, "/state");
    render(
        &p,
        &RequestPage {
            nav: Nav::of(&p, "myaccess"),
            csrf: p.csrf.clone(),
            notice: q
                .get("sent")
                .map(|_| "Your request is sent. You get an email when it is decided.".to_owned()),
            row: request_row(&r),
            justification: s(&r, "/justification"),
            answers: answer_rows(&r),
            schedule: schedule_text(&r),
            steps: history_steps(&r),
            cancelable: matches!(state.as_str(), "submitted" | "pendingApproval" | "scheduled"),
        },
    )
}

async fn cancel_request(p: Portal, Path(id): Path<String>, req: Request) -> Response {
    if let Err(r) = read_form(&p, req).await {
        return r;
    }
    if let Err(r) = p.require("/myaccess") {
        return r;
    }
    let reply = p
        .api(Method::POST, &format!("{EM}/assignmentRequests/{}/cancel", urlencode(&id)), None)
        .await;
    if reply.ok() {
        return Redirect::to("/myaccess?done=canceled").into_response();
    }
    error_page(&p, reply.status, "The request could not be canceled", &reply.message())
}

// ----- extending -----

async fn assignment_of(p: &Portal, id: &str) -> Result<Value, Response> {
    let reply = p.get(&format!("{EM}/assignments/{}?$expand=accessPackage", urlencode(id))).await;
    if !reply.ok() {
        return Err(error_page(
            p,
            reply.status,
            "This assignment cannot be shown",
            &reply.message(),
        ));
    }
    Ok(reply.body)
}

async fn extend_form(p: Portal, Path(id): Path<String>) -> Response {
    if let Err(r) = p.require("/myaccess") {
        return r;
    }
    let a = match assignment_of(&p, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match build_form(&p, &s(&a, "/accessPackage/id"), None, &id).await {
        Ok(mut f) => {
            f.duration_text =
                format!("Your access now ends {}. {}", until_text(&a), f.duration_text);
            render(&p, &f)
        }
        Err(r) => r,
    }
}

async fn submit_extend(p: Portal, Path(id): Path<String>, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(v) = p.viewer.clone() else {
        return Redirect::to("/signin?return=/myaccess").into_response();
    };
    let a = match assignment_of(&p, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut page = match build_form(&p, &s(&a, "/accessPackage/id"), Some(&form), &id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut body = json!({
        "requestType": "userUpdate",
        "assignment": {"id": id, "targetId": v.user_id, "assignmentPolicyId": s(&a, "/assignmentPolicy/id"),
                       "accessPackageId": page.package_id},
    });
    if !page.justification.is_empty() {
        super::put(&mut body, "justification", page.justification.clone());
    }
    if let Some(sched) = schedule_of(&page.start, &page.end) {
        super::put(&mut body, "schedule", sched);
    }
    let key = page.idempotency_key.clone();
    let reply = p
        .call(
            Some(&v.token),
            Method::POST,
            &format!("{EM}/assignmentRequests"),
            Some(&body),
            &[("Idempotency-Key", &key)],
        )
        .await;
    if reply.ok() {
        return Redirect::to(&format!("/myaccess/requests/{}?sent=1", s(&reply.body, "/id")))
            .into_response();
    }
    page.error = Some(reply.message());
    render_status(&p, reply.status, &page)
}

// ----- approvals -----

pub struct PendingApproval {
    pub id: String,
    pub requester: String,
    pub package: String,
    pub created: String,
    pub justification: String,
    pub answers: Vec<AnswerRow>,
}

pub struct Decision {
    pub id: String,
    pub requester: String,
    pub package: String,
    pub result: String,
    pub tone: &'static str,
    pub by: String,
    pub when: String,
    pub justification: String,
}

#[derive(Template)]
#[template(path = "web/approvals.html")]
struct ApprovalsPage {
    nav: Nav,
    notice: Option<String>,
    pending: Vec<PendingApproval>,
    decided: Vec<Decision>,
}

fn requester_of(r: &Value) -> String {
    for ptr in ["/requestor/displayName", "/assignment/target/displayName", "/requestor/email"] {
        let v = s(r, ptr);
        if !v.is_empty() {
            return v;
        }
    }
    "Someone".into()
}

/// The decisions of a request's stages (who, what, when).
fn decisions_of(r: &Value, approval: &Value) -> Vec<Decision> {
    approval
        .get("stages")
        .and_then(Value::as_array)
        .map(|stages| {
            stages
                .iter()
                .filter(|st| {
                    s(st, "/reviewResult") != "NotReviewed" || s(st, "/status") == "Expired"
                })
                .map(|st| {
                    let result = match s(st, "/reviewResult").as_str() {
                        "Approved" | "Approve" => "Approved".to_owned(),
                        "Denied" | "Deny" => "Denied".to_owned(),
                        _ => "No decision in time".to_owned(),
                    };
                    Decision {
                        id: s(r, "/id"),
                        requester: requester_of(r),
                        package: package_name(r),
                        tone: if result == "Approved" { "ok" } else { "bad" },
                        result,
                        by: s(st, "/reviewedBy/displayName"),
                        when: when(&s(st, "/reviewedDateTime")),
                        justification: s(st, "/justification"),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn approvals(
    p: Portal,
    q: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = p.require("/myaccess/approvals") {
        return r;
    }
    let pending = p
        .get(&format!(
            "{EM}/assignmentRequests/filterByCurrentUser(on='approver')?$expand=accessPackage"
        ))
        .await;
    if !pending.ok() {
        return error_page(
            &p,
            pending.status,
            "Your approvals could not be read",
            &pending.message(),
        );
    }
    let reviewed = p
        .get(&format!(
            "{EM}/assignmentRequests/filterByCurrentUser(on='reviewer')?$expand=accessPackage"
        ))
        .await;
    let mut decided = Vec::new();
    for r in values(&reviewed) {
        let approval = p
            .get(&format!("{EM}/accessPackageAssignmentApprovals/{}", urlencode(&s(&r, "/id"))))
            .await;
        decided.extend(decisions_of(&r, &approval.body));
    }
    decided.sort_by(|a, b| b.when.cmp(&a.when));
    let pending = values(&pending)
        .iter()
        .map(|r| PendingApproval {
            id: s(r, "/id"),
            requester: requester_of(r),
            package: package_name(r),
            created: when(&s(r, "/createdDateTime")),
            justification: s(r, "/justification"),
            answers: answer_rows(r),
        })
        .collect();
    let notice = q.get("decided").map(|d| format!("Your decision is recorded: {d}."));
    render(&p, &ApprovalsPage { nav: Nav::of(&p, "approvals"), notice, pending, decided })
}

#[derive(Template)]
#[template(path = "web/approval.html")]
struct ApprovalPage {
    nav: Nav,
    csrf: String,
    request: PendingApproval,
    stage_id: String,
    steps: Vec<Step>,
    error: Option<String>,
    justification: String,
}

async fn load_approval(p: &Portal, id: &str) -> Result<(Value, String), Response> {
    let r =
        p.get(&format!("{EM}/assignmentRequests/{}?$expand=accessPackage", urlencode(id))).await;
    if !r.ok() {
        return Err(error_page(p, r.status, "This request cannot be shown", &r.message()));
    }
    let a = p.get(&format!("{EM}/accessPackageAssignmentApprovals/{}", urlencode(id))).await;
    if !a.ok() {
        return Err(error_page(p, a.status, "This request has no decision for you", &a.message()));
    }
    let stage = a
        .body
        .get("stages")
        .and_then(Value::as_array)
        .and_then(|st| {
            st.iter().find(|x| x.get("assignedToMe").and_then(Value::as_bool) == Some(true))
        })
        .map(|x| s(x, "/id"))
        .unwrap_or_default();
    Ok((r.body, stage))
}

fn approval_view(p: &Portal, r: &Value, stage_id: String) -> ApprovalPage {
    ApprovalPage {
        nav: Nav::of(p, "approvals"),
        csrf: p.csrf.clone(),
        request: PendingApproval {
            id: s(r, "/id"),
            requester: requester_of(r),
            package: package_name(r),
            created: when(&s(r, "/createdDateTime")),
            justification: s(r, "/justification"),
            answers: answer_rows(r),
        },
        stage_id,
        steps: history_steps(r),
        error: None,
        justification: String::new(),
    }
}

async fn approval_page(p: Portal, Path(id): Path<String>) -> Response {
    if let Err(r) = p.require(&format!("/myaccess/approvals/{id}")) {
        return r;
    }
    match load_approval(&p, &id).await {
        Ok((r, stage)) => render(&p, &approval_view(&p, &r, stage)),
        Err(resp) => resp,
    }
}

async fn decide(p: Portal, Path(id): Path<String>, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = p.require("/myaccess/approvals") {
        return r;
    }
    let (r, stage) = match load_approval(&p, &id).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let result = match form.get("decision") {
        Some("approve") => "Approve",
        Some("deny") => "Deny",
        _ => {
            return error_page(
                &p,
                StatusCode::BAD_REQUEST,
                "Choose approve or deny",
                "Go back and press one of the two buttons.",
            );
        }
    };
    let justification = form.text("justification");
    let mut view = approval_view(&p, &r, stage.clone());
    if stage.is_empty() {
        view.error = Some(
            "This request no longer waits for your decision (someone decided it, or it timed out)."
                .into(),
        );
        return render_status(&p, StatusCode::CONFLICT, &view);
    }
    let mut body = json!({"reviewResult": result});
    if !justification.is_empty() {
        super::put(&mut body, "justification", justification.clone());
    }
    let path = format!(
        "{EM}/accessPackageAssignmentApprovals/{}/stages/{}",
        urlencode(&id),
        urlencode(&stage)
    );
    let reply = p.api(Method::PATCH, &path, Some(&body)).await;
    if reply.ok() {
        let word = if result == "Approve" { "approved" } else { "denied" };
        return Redirect::to(&format!("/myaccess/approvals?decided={word}")).into_response();
    }
    view.error = Some(reply.message());
    view.justification = justification;
    render_status(&p, reply.status, &view)
}
