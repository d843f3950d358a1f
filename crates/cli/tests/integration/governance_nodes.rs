//! Two nodes on one PostgreSQL database do due work exactly once: 200 assignments end at the
//! same instant and 20 requests' approval times out at it; both nodes' clocks pass it, both
//! drain their workers at once (their background workers running too), and every expiry, every
//! timeout and every mail happens once, and both nodes say the users are out of the group.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gatehouse_core::Change;
use gatehouse_server::clock::ManualClock;
use gatehouse_server::demo::{TRAVEL_GROUP, TRAVEL_PACKAGE};
use gatehouse_server::session::{Session, SessionKind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;

use crate::governance::{DAY, governance_config};
use crate::governance_support::{EM, MailLog, SmtpSink, get, outbox_drained, run_workers};
use crate::server_support::{T0, TestDb, TestServer};

const ASSIGNMENTS: usize = 200;
const REQUESTS: usize = 20;
const PACKAGE: &str = "Internals Travelling";

struct Person {
    id: String,
    upn: String,
    name: String,
    token: String,
}

fn person(role: &str, i: usize) -> Person {
    Person {
        id: gatehouse_server::random::guid(),
        upn: format!("nodes-{role}{i}@contoso.example"),
        name: format!("Nodes {role} {i}"),
        token: gatehouse_server::random::token("gh_"),
    }
}

/// Writes the users (and the requesters' and approver's API tokens) through node `a`, and
/// brings both nodes' memory up to date.
async fn add_people(a: &TestServer, b: &TestServer, approver: &Person, people: &[&Person]) {
    let put = |p: &Person, manager: Option<&Person>| Change::PutUser {
        user: json!({"id": p.id, "userPrincipalName": p.upn, "displayName": p.name,
                     "accountEnabled": true, "userType": "Member"})
        .as_object()
        .unwrap()
        .clone(),
        manager: manager.map(|m| m.id.clone()),
    };
    let mut changes = vec![put(approver, None)];
    changes.extend(people.iter().map(|p| put(p, Some(approver))));
    let state = &a.running.state;
    let mut w = state.store.begin().await.unwrap();
    for p in std::iter::once(approver).chain(people.iter().copied()) {
        let session = Session {
            id: gatehouse_server::random::guid(),
            user_id: p.id.clone(),
            kind: SessionKind::ApiToken,
            created_at: T0,
            expires_at: None,
            methods: vec![],
            tap_id: None,
            target: None,
        };
        w.insert_session(&gatehouse_core::auth::secret::hash(&p.token), &session).await.unwrap();
    }
    w.commit(T0, &changes, &[]).await.unwrap();
    state.sync().await.unwrap();
    b.running.state.sync().await.unwrap();
}

/// A second policy on the demo's travel package: a day of access, no questions, the manager
/// approves within a day or the request times out; no escalation.
fn day_policy() -> Value {
    let mut p = gatehouse_server::demo::travel_policy(TRAVEL_PACKAGE);
    p["displayName"] = json!("A day, manager approval within a day");
    p["expiration"] = json!({"type": "afterDuration", "duration": "P1D"});
    p["questions"] = json!([]);
    p["requestApprovalSettings"]["isRequestorJustificationRequired"] = json!(false);
    let stage = &mut p["requestApprovalSettings"]["stages"][0];
    stage["durationBeforeAutomaticDenial"] = json!("P1D");
    stage["isEscalationEnabled"] = json!(false);
    stage["escalationApprovers"] = json!([]);
    p
}

fn subject_of(template: &str, target: &str) -> String {
    match template {
        "approval-requested" => {
            format!("Action required: approve or deny {target}'s request for {PACKAGE}")
        }
        "approval-expired" => format!("{target}'s request for {PACKAGE} has expired"),
        "request-expired" => format!("Your request for {PACKAGE} has expired"),
        "access-removed" => format!("Your access to {PACKAGE} has ended"),
        other => panic!("no subject for {other}"),
    }
}

/// POSTs an assignment request to `base` as `token`; asserts 201 and returns the request.
async fn post_request(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> Value {
    let resp = http
        .post(format!("{base}{EM}/assignmentRequests"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

async fn members(server: &TestServer) -> HashSet<String> {
    let body = get(
        server,
        &server.admin_token,
        &format!("/v1.0/groups/{TRAVEL_GROUP}/members?$select=id&$top=999"),
    )
    .await;
    assert!(body["@odata.nextLink"].is_null(), "more members than one page");
    body["value"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

/// Reads mail until every (recipient, subject) of `expected` has arrived as often as it says;
/// fails at a repeated Message-ID or a mail nobody should have had.
async fn wait_for(
    mail: &mut MailLog,
    expected: &HashMap<(String, String), usize>,
    seen: &mut HashMap<String, usize>,
) {
    let mut left = expected.clone();
    while left.values().any(|n| *n > 0) {
        let m = mail.next().await;
        let n = seen.entry(m.message_id.clone()).or_default();
        *n += 1;
        assert_eq!(*n, 1, "{} arrived twice: {:?} to {}", m.message_id, m.subject, m.to);
        let key = left
            .iter()
            .find(|((to, subject), n)| {
                **n > 0 && m.to.contains(&format!("<{to}>")) && m.subject == *subject
            })
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| panic!("a mail nobody should have had: {} {:?}", m.to, m.subject));
        *left.get_mut(&key).unwrap() -= 1;
    }
}

/// How many audit records of `activity` each first target has.
async fn audited(pool: &sqlx::AnyPool, activity: &str) -> HashMap<String, usize> {
    let rows = sqlx::query("SELECT target_id FROM audit_logs WHERE activity = $1")
        .bind(activity.to_owned())
        .fetch_all(pool)
        .await
        .unwrap();
    let mut n: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *n.entry(r.get("target_id")).or_default() += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_do_due_work_exactly_once() {
    let test = "two_nodes_do_due_work_exactly_once";
    // PostgreSQL only (SQLite has one writer process); `postgres` says why it skips.
    let Some(db) = TestDb::postgres(test).await else { return };
    let Some(sink) = SmtpSink::start(test).await else { return };
    let mut mail = sink.collect();
    let mut config = governance_config(None);
    config.mail.smtp_url = Some(mail.url());
    let a = TestServer::start_with(&db, config.clone(), ManualClock::at(T0)).await;
    let b = TestServer::start_with(&db, config, ManualClock::at(T0)).await;

    let approver = person("approver", 0);
    let targets: Vec<Person> = (0..ASSIGNMENTS).map(|i| person("target", i)).collect();
    let requesters: Vec<Person> = (0..REQUESTS).map(|i| person("requester", i)).collect();
    let everyone: Vec<&Person> = targets.iter().chain(requesters.iter()).collect();
    add_people(&a, &b, &approver, &everyone).await;
    let (s, policy) =
        a.admin(Method::POST, &format!("{EM}/assignmentPolicies"), Some(&day_policy())).await;
    assert_eq!(s, StatusCode::CREATED, "{policy}");
    let policy = policy["id"].as_str().unwrap().to_owned();

    // At T0, on both nodes at once: the administrator assigns 200 users for a day (access ends
    // at T0 + 1 day), 20 users ask for it (nobody decides: they time out at T0 + 1 day).
    let end = T0 + DAY;
    let nodes = [(a.base.clone(), a.admin_token.clone()), (b.base.clone(), b.admin_token.clone())];
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    let targets = Arc::new(targets);
    for k in 0..4 {
        let (http, nodes, targets, policy) =
            (http.clone(), nodes.clone(), targets.clone(), policy.clone());
        tasks.spawn(async move {
            let mut made = Vec::new();
            for i in (k..ASSIGNMENTS).step_by(4) {
                let (base, token) = &nodes[i % 2];
                let body = json!({
                    "requestType": "adminAdd",
                    "assignment": {"targetId": targets[i].id, "assignmentPolicyId": policy, "accessPackageId": TRAVEL_PACKAGE},
                });
                let r = post_request(&http, base, token, &body).await;
                assert_eq!(r["state"], "delivered", "{r}");
                made.push((i, r["assignment"]["id"].as_str().unwrap().to_owned()));
            }
            made
        });
    }
    let mut request_ids = Vec::new();
    for (i, p) in requesters.iter().enumerate() {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let body = json!({
            "requestType": "userAdd",
            "assignment": {"targetId": p.id, "assignmentPolicyId": policy, "accessPackageId": TRAVEL_PACKAGE},
        });
        let r = post_request(&http, base, &p.token, &body).await;
        assert_eq!(r["state"], "pendingApproval", "{r}");
        request_ids.push(r["id"].as_str().unwrap().to_owned());
    }
    let mut assignment_ids: HashMap<String, usize> = HashMap::new();
    while let Some(made) = tasks.join_next().await {
        assignment_ids.extend(made.unwrap().into_iter().map(|(i, id)| (id, i)));
    }
    assert_eq!(assignment_ids.len(), ASSIGNMENTS);

    // Both nodes see every target in the group; the approver's 20 mails arrive (sent by the
    // background workers of whichever node wrote them).
    for server in [&a, &b] {
        let m = members(server).await;
        assert!(targets.iter().all(|t| m.contains(&t.id)), "before the end, all are members");
    }
    let mut expected: HashMap<(String, String), usize> = HashMap::new();
    for p in &requesters {
        *expected
            .entry((approver.upn.clone(), subject_of("approval-requested", &p.name)))
            .or_default() += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    wait_for(&mut mail, &expected, &mut seen).await;

    // Both clocks pass the instant; both nodes drain at once while their workers run too.
    a.clock.set(end + 1000);
    b.clock.set(end + 1000);
    let ((jobs_a, sent_a), (jobs_b, sent_b)) = tokio::join!(run_workers(&a), run_workers(&b));
    eprintln!(
        "node a did {jobs_a} jobs and leased {sent_a} messages, node b {jobs_b} and {sent_b}"
    );
    let mut after: HashMap<(String, String), usize> = HashMap::new();
    for t in targets.iter() {
        *after.entry((t.upn.clone(), subject_of("access-removed", &t.name))).or_default() += 1;
    }
    for p in &requesters {
        *after
            .entry((approver.upn.clone(), subject_of("approval-expired", &p.name)))
            .or_default() += 1;
        *after.entry((p.upn.clone(), subject_of("request-expired", &p.name))).or_default() += 1;
    }
    wait_for(&mut mail, &after, &mut seen).await;

    let pool = a.running.state.store.pool().clone();
    outbox_drained(&pool, "two nodes").await;
    // Nothing is left for either node.
    let (left_a, left_b) = tokio::join!(run_workers(&a), run_workers(&b));
    assert_eq!((left_a, left_b), ((0, 0), (0, 0)), "work left after the drain");

    // Each assignment expired once (one audit record), each request timed out once.
    let expired = audited(&pool, "Access package assignment expired").await;
    assert_eq!(expired.len(), ASSIGNMENTS, "every assignment's expiry is audited");
    for (id, n) in &expired {
        assert!(assignment_ids.contains_key(id), "an expiry of {id}, which nobody made");
        assert_eq!(*n, 1, "assignment {id} expired {n} times");
    }
    let timed_out = audited(&pool, "Access package assignment request timed out").await;
    assert_eq!(timed_out.len(), REQUESTS, "every request's timeout is audited: {timed_out:?}");
    for id in &request_ids {
        assert_eq!(
            timed_out.get(id),
            Some(&1),
            "request {id} timed out {:?} times",
            timed_out.get(id)
        );
    }
    let stored: Vec<(String, String)> =
        sqlx::query("SELECT id, state FROM em_assignments WHERE package_id = $1")
            .bind(TRAVEL_PACKAGE.to_owned())
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("id"), r.get("state")))
            .collect();
    assert_eq!(stored.len(), ASSIGNMENTS);
    assert!(stored.iter().all(|(_, s)| s == "expired"), "stored states: {stored:?}");
    let grants = sqlx::query("SELECT COUNT(*) AS n FROM member_grants").fetch_one(&pool).await;
    assert_eq!(grants.unwrap().get::<i64, _>("n"), 0, "every grant was taken back");

    // Both nodes agree: the requests were denied for want of a decision, the assignments
    // expired at their end, and nobody of them is in the group.
    for server in [&a, &b] {
        for id in &request_ids {
            let r =
                get(server, &server.admin_token, &format!("{EM}/assignmentRequests/{id}")).await;
            assert_eq!(
                (r["state"].as_str(), r["status"].as_str()),
                (Some("denied"), Some("Expired")),
                "{r}"
            );
        }
        let m = members(server).await;
        assert!(targets.iter().all(|t| !m.contains(&t.id)), "after the end, none is a member");
    }
    let asg = get(&b, &b.admin_token, &format!("{EM}/assignments?$top=999")).await;
    for x in asg["value"].as_array().unwrap() {
        assert_eq!(x["state"], "expired", "{x}");
        assert_eq!(x["expiredDateTime"], gatehouse_core::time::format(end), "{x}");
    }

    // Every mail once: the outbox's messages, each arrived exactly once, and no other.
    let outbox = a.running.state.store.outbox(Some("mail")).await.unwrap();
    a.stop().await;
    b.stop().await;
    for m in mail.finish().await {
        *seen.entry(m.message_id).or_default() += 1;
    }
    let want = REQUESTS * 3 + ASSIGNMENTS;
    assert_eq!(outbox.len(), want, "the outbox holds {} mails", outbox.len());
    let ids: HashSet<String> =
        outbox.iter().map(|(row, _, _)| format!("<{}@gatehouse>", row.id)).collect();
    assert_eq!(ids, seen.keys().cloned().collect::<HashSet<_>>(), "arrived = the outbox's");
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "nobody crashed, yet mail was repeated: {repeated:?}");
    assert!(
        outbox.iter().all(|(row, sent, _)| sent.is_some() && row.attempts == 1),
        "each sent once"
    );
    eprintln!("{want} mails, each once");
}
