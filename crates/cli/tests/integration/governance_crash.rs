//! Entitlement management survives SIGKILL in the middle of a burst: the real binary on its
//! test clock, clients requesting access at once (users' requests that need their manager's
//! approval, administrators' direct assignments), approvers approving, the clock moved so that
//! assignments expire. It is killed as the mail of the first expiry arrives (so while mail is
//! going out: sent, some of it not yet marked sent), then restarted on the same store at the
//! same instant; clients that got no answer ask again with their Idempotency-Key. Nothing
//! acknowledged is lost or doubled, every assignment whose end passed has expired (the worker
//! recorded it once) and taken its user out of the group, and every notification went out, a
//! repeat only under the Message-ID it had. SQLite, and PostgreSQL when the environment names
//! a server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_core::{Change, time};
use gatehouse_server::demo::{self, TRAVEL_GROUP, TRAVEL_PACKAGE, TRAVEL_POLICY};
use gatehouse_server::session::{Session, SessionKind};
use gatehouse_server::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::{Mutex, watch};

use crate::governance::answers;
use crate::governance_support::{EM, MailLog, Received, SmtpSink, outbox_drained};
use crate::server_support::{T0, TestDb};

const MINUTE: i64 = 60_000;
/// How far the clock moves at each step of the burst. An administrator's short assignment
/// lasts 30 minutes: two steps after it was made, it has ended.
const STEP: i64 = 20 * MINUTE;
const STEPS: usize = 3;
const REQUESTERS: usize = 30;
const TARGETS: usize = 30;
/// Killed once this many requests were acknowledged (of REQUESTERS + TARGETS) and this many
/// approvals: the rest are in flight or still to come.
const KILL_AFTER_ACKS: usize = 36;
const KILL_AFTER_APPROVALS: usize = 4;
/// A user's request lasts this long from its approval.
const USER_ACCESS: i64 = 2 * 60 * MINUTE;
/// The approver (index) of requesters whose requests nobody decides: they stay pending.
const IDLE: usize = 2;
const PACKAGE: &str = "Internals Travelling";

struct Person {
    id: String,
    upn: String,
    name: String,
    token: String,
}

fn person(role: &str, i: usize) -> Person {
    let id = gatehouse_server::random::guid();
    Person {
        upn: format!("crash-{role}{i}@contoso.example"),
        name: format!("Crash {role} {i}"),
        token: gatehouse_server::random::token("gh_"),
        id,
    }
}

/// Who takes part: Nestor (the demo's Global Administrator) assigns directly; requesters ask
/// for the travel package and their manager, one of the approvers, decides (approver IDLE
/// never does); targets are assigned by Nestor.
struct Cast {
    admin: String,
    approvers: Vec<Person>,
    requesters: Vec<(Person, usize)>,
    targets: Vec<Person>,
}

/// The demo (as `serve --demo` seeds it) and the cast, written straight into the store before
/// the server first starts; each approver and requester gets an API token.
async fn seed(db: &TestDb) -> Cast {
    let store = Store::open(&db.url).await.unwrap();
    let admin = demo::seed(&store, T0).await.unwrap().expect("a fresh store").admin_token;
    let approvers: Vec<Person> = (0..3).map(|i| person("approver", i)).collect();
    let requesters: Vec<(Person, usize)> = (0..REQUESTERS)
        .map(|i| (person("requester", i), if i % 5 == 4 { IDLE } else { i % 2 }))
        .collect();
    let targets: Vec<Person> = (0..TARGETS).map(|i| person("target", i)).collect();
    let put = |p: &Person, manager: Option<&Person>| Change::PutUser {
        user: json!({"id": p.id, "userPrincipalName": p.upn, "displayName": p.name,
                     "accountEnabled": true, "userType": "Member"})
        .as_object()
        .unwrap()
        .clone(),
        manager: manager.map(|m| m.id.clone()),
    };
    let mut changes: Vec<Change> = approvers.iter().map(|p| put(p, None)).collect();
    changes.extend(requesters.iter().map(|(p, a)| put(p, Some(&approvers[*a]))));
    changes.extend(targets.iter().map(|p| put(p, None)));
    let mut w = store.begin().await.unwrap();
    for p in approvers.iter().chain(requesters.iter().map(|(p, _)| p)) {
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
    store.pool().close().await;
    Cast { admin, approvers, requesters, targets }
}

/// `gatehouse serve` on its test clock at `at`, sending mail to `smtp`. Returns the process and
/// its base URL; its log (warnings and worse) goes to the test's output.
fn serve(url: &str, at: i64, smtp: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--test-clock", &time::format(at), "--listen", "127.0.0.1:0"])
        .args(["--database-url", url])
        .env("GATEHOUSE_LOG", "warn")
        .env_remove("GATEHOUSE_DATABASE_URL")
        .env("GATEHOUSE_SMTP_URL", smtp)
        .env("GATEHOUSE_TIME_ZONE", "Europe/London")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("[gatehouse] {line}");
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(rest) = line.strip_prefix("Gatehouse is listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: String) -> Api {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Api { http, base }
    }

    /// One call; `Err` when no complete answer came (the server died under it).
    async fn try_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let url =
            if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    async fn get(&self, token: &str, path: &str) -> Value {
        let (s, v) = self.try_call(Method::GET, path, Some(token), None, None).await.unwrap();
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    /// Every item of a collection, following `@odata.nextLink`.
    async fn all(&self, token: &str, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(p) = next {
            let page = self.get(token, &p).await;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
        }
        out
    }

    async fn move_clock_to(&self, at: i64) {
        let body = json!({"dateTime": time::format(at)});
        let (s, v) =
            self.try_call(Method::POST, "/test/clock", None, Some(&body), None).await.unwrap();
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

/// What a client asks for: requester i's own request, or Nestor's assignment of target i.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Ask {
    User(usize),
    Admin(usize),
}

impl Ask {
    /// The client's Idempotency-Key: a client that got no answer asks again with it.
    fn key(self) -> String {
        match self {
            Ask::User(i) => format!("crash-user-{i}"),
            Ask::Admin(i) => format!("crash-admin-{i}"),
        }
    }

    /// Administrators' assignments of even targets last 30 minutes, of odd ones five days.
    fn short(self) -> bool {
        matches!(self, Ask::Admin(i) if i % 2 == 0)
    }
}

async fn submit(api: &Api, cast: &Cast, ask: Ask) -> Result<(StatusCode, Value), reqwest::Error> {
    let (token, body) = match ask {
        Ask::User(i) => {
            let p = &cast.requesters[i].0;
            let body = json!({
                "requestType": "userAdd",
                "justification": "Customer workshop in Paris",
                "assignment": {"targetId": p.id, "assignmentPolicyId": TRAVEL_POLICY, "accessPackageId": TRAVEL_PACKAGE},
                "answers": answers(),
                "schedule": {"expiration": {"type": "afterDuration", "duration": "PT2H"}},
            });
            (p.token.as_str(), body)
        }
        Ask::Admin(i) => {
            let duration = if ask.short() { "PT30M" } else { "P5D" };
            let body = json!({
                "requestType": "adminAdd",
                "assignment": {"targetId": cast.targets[i].id, "assignmentPolicyId": TRAVEL_POLICY, "accessPackageId": TRAVEL_PACKAGE},
                "schedule": {"expiration": {"type": "afterDuration", "duration": duration}},
            });
            (cast.admin.as_str(), body)
        }
    };
    api.try_call(
        Method::POST,
        &format!("{EM}/assignmentRequests"),
        Some(token),
        Some(&body),
        Some(&ask.key()),
    )
    .await
}

/// What the clients were told, and how far the burst got (acknowledged requests, approvals).
struct Burst {
    api: Api,
    cast: Arc<Cast>,
    acked: Mutex<BTreeMap<Ask, String>>,
    approved: Mutex<HashSet<String>>,
    progress: watch::Sender<(usize, usize)>,
    stop: AtomicBool,
}

/// Sends `asks` one after the other; returns those not acknowledged (the one the server died
/// under, and those never sent).
async fn post_all(b: Arc<Burst>, asks: Vec<Ask>) -> Vec<Ask> {
    for (n, &ask) in asks.iter().enumerate() {
        if b.stop.load(Ordering::SeqCst) {
            return asks[n..].to_vec();
        }
        match submit(&b.api, &b.cast, ask).await {
            Ok((StatusCode::CREATED, v)) => {
                b.acked.lock().await.insert(ask, v["id"].as_str().unwrap().to_owned());
                b.progress.send_modify(|p| p.0 += 1);
            }
            Ok((s, v)) => panic!("{ask:?}: {s} {v}"),
            Err(_) => return asks[n..].to_vec(),
        }
    }
    Vec::new()
}

/// Approves every approval waiting for `token`; each acknowledged one goes into `approved`.
/// Returns how many, or `Err` when the server died under a call.
async fn approve_pending(
    api: &Api,
    token: &str,
    approved: &Mutex<HashSet<String>>,
    progress: &watch::Sender<(usize, usize)>,
) -> Result<usize, reqwest::Error> {
    let path = format!("{EM}/accessPackageAssignmentApprovals/filterByCurrentUser(on='approver')");
    let (s, list) = api.try_call(Method::GET, &path, Some(token), None, None).await?;
    assert_eq!(s, StatusCode::OK, "{list}");
    let mut n = 0;
    for a in list["value"].as_array().unwrap() {
        let id = a["id"].as_str().unwrap();
        let stage = &a["stages"][0];
        if stage["status"] != "InProgress" || stage["assignedToMe"] != true {
            continue;
        }
        let path = format!(
            "{EM}/accessPackageAssignmentApprovals/{id}/stages/{}",
            stage["id"].as_str().unwrap()
        );
        let body = json!({"reviewResult": "Approve"});
        let (s, v) = api.try_call(Method::PATCH, &path, Some(token), Some(&body), None).await?;
        assert_eq!(s, StatusCode::NO_CONTENT, "approving {id}: {v}");
        approved.lock().await.insert(id.to_owned());
        progress.send_modify(|p| p.1 += 1);
        n += 1;
    }
    Ok(n)
}

/// An approver at work: approves what waits, then waits for the next acknowledged request.
async fn approver(b: Arc<Burst>, who: usize) {
    let mut seen = b.progress.subscribe();
    let token = b.cast.approvers[who].token.clone();
    while !b.stop.load(Ordering::SeqCst) {
        match approve_pending(&b.api, &token, &b.approved, &b.progress).await {
            Err(_) => return,
            Ok(0) => {
                if seen.changed().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query(sql).fetch_one(store.pool()).await.unwrap().get::<i64, _>("n")
}

fn subject_of(template: &str, target: &str) -> String {
    match template {
        "approval-requested" => {
            format!("Action required: approve or deny {target}'s request for {PACKAGE}")
        }
        "access-granted" => format!("You now have access to {PACKAGE}"),
        "access-removed" => format!("Your access to {PACKAGE} has ended"),
        other => panic!("no subject for {other}"),
    }
}

async fn sigkill_mid_burst(db: &TestDb) {
    let label = db.label();
    let cast = Arc::new(seed(db).await);
    let mut mail: MailLog =
        SmtpSink::start("sigkill_mid_burst_loses_nothing").await.expect("checked").collect();
    let (mut child, base) = serve(&db.url, T0, &mail.url());
    let (progress, mut watching) = watch::channel((0, 0));
    let burst = Arc::new(Burst {
        api: Api::new(base),
        cast: cast.clone(),
        acked: Mutex::default(),
        approved: Mutex::default(),
        progress,
        stop: AtomicBool::new(false),
    });

    // The burst: three clients request for themselves, two administrators assign, two
    // approvers decide, all at once; the clock moves as they go.
    let mut posters = Vec::new();
    for k in 0..3 {
        let asks = (0..REQUESTERS).filter(|i| i % 3 == k).map(Ask::User).collect();
        posters.push(tokio::spawn(post_all(burst.clone(), asks)));
    }
    for k in 0..2 {
        let asks = (0..TARGETS).filter(|i| i % 2 == k).map(Ask::Admin).collect();
        posters.push(tokio::spawn(post_all(burst.clone(), asks)));
    }
    let approvers: Vec<_> = (0..2).map(|who| tokio::spawn(approver(burst.clone(), who))).collect();
    // The kill comes once enough requests and approvals were acknowledged, the clock has made
    // all its steps, and the worker has recorded an expiry (its mail arrived): with requests
    // still in flight and mail still going out.
    let mut now = T0;
    let mut steps = 0;
    let mut early = Vec::new();
    let ended_subject = subject_of("access-removed", "");
    loop {
        let (acks, approvals) = *watching.borrow_and_update();
        if steps < STEPS && acks >= 10 * (steps + 1) {
            now += STEP;
            burst.api.move_clock_to(now).await;
            steps += 1;
            continue;
        }
        let expiries = early.iter().filter(|m: &&Received| m.subject == ended_subject).count();
        if steps == STEPS
            && acks >= KILL_AFTER_ACKS
            && approvals >= KILL_AFTER_APPROVALS
            && expiries > 0
        {
            break;
        }
        assert!(
            acks < REQUESTERS + TARGETS,
            "{label}: the burst ended before the kill ({approvals} approvals, {expiries} expiries mailed, {} mails)",
            early.len()
        );
        let woke = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                changed = watching.changed() => changed.unwrap(),
                m = mail.next() => early.push(m),
            }
        })
        .await;
        woke.expect("the burst stalled");
    }
    child.kill().unwrap(); // SIGKILL, in the middle of it all
    child.wait().unwrap();
    burst.stop.store(true, Ordering::SeqCst);
    burst.progress.send_modify(|_| {});
    let mut unacked = Vec::new();
    for p in posters {
        unacked.extend(p.await.unwrap());
    }
    for a in approvers {
        a.await.unwrap();
    }
    let (acked_before, approved_before) = *burst.progress.borrow();
    assert!(!unacked.is_empty(), "{label}: every request was answered before the kill");
    let store = Store::open(&db.url).await.unwrap();
    eprintln!(
        "{label}: killed with {acked_before} requests and {approved_before} approvals acknowledged, {} not; \
         {} assignments had expired, {} mails were marked sent and {} not",
        unacked.len(),
        count(&store, "SELECT COUNT(*) AS n FROM em_assignments WHERE state = 'expired'").await,
        count(&store, "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NOT NULL").await,
        count(&store, "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL").await,
    );

    // Restarted at the instant it was killed. Clients that got no answer ask again with the
    // same key; the approvers decide what still waits.
    let (mut child, base) = serve(&db.url, now, &mail.url());
    let api = Api::new(base);
    let mut acked = burst.acked.lock().await.clone();
    unacked.sort();
    for ask in unacked {
        let (s, v) = submit(&api, &cast, ask).await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "{label}: {ask:?} again: {v}");
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(!acked.values().any(|a| *a == id), "{label}: {ask:?} was given {id} twice");
        acked.insert(ask, id);
    }
    for who in 0..2 {
        let token = &cast.approvers[who].token;
        while approve_pending(&api, token, &burst.approved, &burst.progress).await.unwrap() > 0 {}
    }
    // Past the end of every user's access (two hours from its approval) and of every short
    // assignment, and past the outbox's lease of whatever the killed process was sending.
    now += USER_ACCESS + MINUTE;
    api.move_clock_to(now).await;

    // What the store now holds, through the API.
    let admin = cast.admin.as_str();
    let requests = api.all(admin, &format!("{EM}/assignmentRequests?$top=999")).await;
    let assignments = api.all(admin, &format!("{EM}/assignments?$top=999")).await;
    let members: HashSet<String> = api
        .all(admin, &format!("/v1.0/groups/{TRAVEL_GROUP}/members?$select=id&$top=999"))
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();

    // Every acknowledged request exists, once per user, in the state its story says.
    let mut by_target: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in &requests {
        by_target.entry(r["assignment"]["targetId"].as_str().unwrap()).or_default().push(r);
    }
    let asg_by_id: HashMap<&str, &Value> =
        assignments.iter().map(|a| (a["id"].as_str().unwrap(), a)).collect();
    assert_eq!(asg_by_id.len(), assignments.len(), "{label}: an assignment id twice");
    let mut live: HashMap<&str, usize> = HashMap::new();
    for a in &assignments {
        if a["state"] == "delivered" {
            *live.entry(a["target"]["objectId"].as_str().unwrap()).or_default() += 1;
        }
    }
    assert!(live.values().all(|n| *n == 1), "{label}: a user holds the package twice: {live:?}");
    let mut expected: HashMap<(String, String), usize> = HashMap::new();
    let mut expect = |to: &Person, template: &str, target: &Person| {
        *expected.entry((to.upn.clone(), subject_of(template, &target.name))).or_default() += 1;
    };
    let asks = (0..REQUESTERS).map(Ask::User).chain((0..TARGETS).map(Ask::Admin));
    let mut ended = HashSet::new();
    for ask in asks {
        let (who, approver) = match ask {
            Ask::User(i) => (&cast.requesters[i].0, Some(&cast.approvers[cast.requesters[i].1])),
            Ask::Admin(i) => (&cast.targets[i], None),
        };
        let id = acked.get(&ask).unwrap();
        let mine = by_target.get(who.id.as_str()).cloned().unwrap_or_default();
        assert_eq!(mine.len(), 1, "{label}: {ask:?} has {} requests: {mine:?}", mine.len());
        let r = mine[0];
        assert_eq!(r["id"], id.as_str(), "{label}: {ask:?} was acknowledged as {id}: {r}");
        let pending = matches!(ask, Ask::User(i) if cast.requesters[i].1 == IDLE);
        let want = if pending { "pendingApproval" } else { "delivered" };
        assert_eq!(r["state"], want, "{label}: {ask:?}: {r}");
        if let Some(a) = approver {
            expect(a, "approval-requested", who);
        }
        let aid = r["assignment"]["id"].as_str().unwrap();
        let asg = asg_by_id.get(aid);
        if pending {
            assert!(asg.is_none(), "{label}: {ask:?} is pending yet assigned: {asg:?}");
            assert!(!members.contains(&who.id), "{label}: {ask:?} pending, yet in the group");
            continue;
        }
        let asg = asg.unwrap_or_else(|| panic!("{label}: {ask:?} delivered {aid}, which is gone"));
        assert_eq!(asg["target"]["objectId"], who.id.as_str(), "{label}: {asg}");
        let end =
            time::parse(asg["schedule"]["expiration"]["endDateTime"].as_str().unwrap()).unwrap();
        if matches!(ask, Ask::User(_)) {
            expect(who, "access-granted", who);
        }
        if end <= now {
            assert!(ask.short() || matches!(ask, Ask::User(_)), "{label}: {ask:?} ended early");
            assert_eq!(asg["state"], "expired", "{label}: {ask:?}: {asg}");
            assert_eq!(asg["expiredDateTime"], time::format(end), "{label}: {asg}");
            assert!(!members.contains(&who.id), "{label}: {ask:?} ended, yet in the group");
            expect(who, "access-removed", who);
            ended.insert(aid.to_owned());
        } else {
            assert!(matches!(ask, Ask::Admin(_)) && !ask.short(), "{label}: {ask:?}: {asg}");
            assert_eq!(asg["state"], "delivered", "{label}: {ask:?}: {asg}");
            assert!(members.contains(&who.id), "{label}: {ask:?} is live, yet not in the group");
        }
    }
    assert_eq!(requests.len(), REQUESTERS + TARGETS, "{label}: requests nobody made");
    let delivered = requests.iter().filter(|r| r["state"] == "delivered").count();
    assert_eq!(assignments.len(), delivered, "{label}: assignments no request made");
    // Every approval acknowledged was of a request acknowledged (at last), now delivered.
    let by_id: HashMap<&str, &Value> =
        requests.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    for id in burst.approved.lock().await.iter() {
        assert!(acked.values().any(|a| a == id), "{label}: approved {id}, which nobody asked for");
        assert_eq!(by_id[id.as_str()]["state"], "delivered", "{label}: approved {id}");
    }

    // Every mail that should have gone out arrives (waiting on the SMTP server's lines): each
    // new Message-ID is one of them; a Message-ID seen before is a repeat.
    let want_total: usize = expected.values().sum();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut left = expected.clone();
    let mut early = early.into_iter();
    while left.values().any(|n| *n > 0) {
        let m = match early.next() {
            Some(m) => m,
            None => mail.next().await,
        };
        let n = seen.entry(m.message_id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            continue;
        }
        let key = left
            .iter()
            .find(|((to, subject), n)| {
                **n > 0 && m.to.contains(&format!("<{to}>")) && m.subject == *subject
            })
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| {
                panic!("{label}: a mail nobody should have had: {} {:?}", m.to, m.subject)
            });
        *left.get_mut(&key).unwrap() -= 1;
    }
    outbox_drained(store.pool(), label).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for m in mail.finish().await {
        *seen.entry(m.message_id).or_default() += 1;
    }

    // The outbox agrees: every message it holds was sent, each arrived, and nothing else did;
    // a repeat is a message the killed process had leased (one crash: at most one repeat).
    let outbox = store.outbox(None).await.unwrap();
    assert_eq!(outbox.len(), want_total, "{label}: the outbox holds other mail than the story");
    let mut ids = HashSet::new();
    for (row, sent, error) in &outbox {
        assert_eq!(row.channel, "mail", "{label}: {row:?}");
        assert!(sent.is_some(), "{label}: {} never sent ({error:?})", row.id);
        let mid = format!("<{}@gatehouse>", row.id);
        let n = seen.get(&mid).copied().unwrap_or(0);
        assert!(n >= 1, "{label}: {mid} is marked sent but never arrived");
        assert!(n <= 2, "{label}: {mid} arrived {n} times after one crash");
        if n == 2 {
            assert!(row.attempts >= 2, "{label}: {mid} arrived twice but was sent once");
        }
        ids.insert(mid);
    }
    let arrived: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(arrived, ids, "{label}: the Message-IDs that arrived are the outbox's");
    let repeats: usize = seen.values().map(|n| n - 1).sum();

    // The store itself: the worker recorded each expiry once and took its grants back; nothing
    // due is left undone; pending requests still have their timeout.
    let rows = sqlx::query("SELECT id, state, end_at FROM em_assignments")
        .fetch_all(store.pool())
        .await
        .unwrap();
    for r in &rows {
        let (id, state): (String, String) = (r.get("id"), r.get("state"));
        let end: Option<i64> = r.get("end_at");
        let want = if ended.contains(&id) { "expired" } else { "delivered" };
        assert_eq!(state, want, "{label}: stored assignment {id} (end {end:?})");
    }
    let grants: Vec<String> = sqlx::query("SELECT assignment_id FROM member_grants")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("assignment_id"))
        .collect();
    assert!(grants.iter().all(|g| !ended.contains(g)), "{label}: an ended grant is still stored");
    let audits: Vec<String> = sqlx::query(
        "SELECT target_id FROM audit_logs WHERE activity = 'Access package assignment expired'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("target_id"))
    .collect();
    let audited: HashSet<&String> = audits.iter().collect();
    assert_eq!(audits.len(), ended.len(), "{label}: expiries audited {audits:?}");
    assert_eq!(audited, ended.iter().collect(), "{label}: each expiry audited once");
    let jobs = sqlx::query("SELECT subject, kind, due_at FROM due_jobs")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let mut deny = HashSet::new();
    for j in &jobs {
        let (subject, kind, due): (String, String, i64) =
            (j.get("subject"), j.get("kind"), j.get("due_at"));
        assert!(due > now, "{label}: job {kind} of {subject} was due and not done");
        if kind == "deny/0" {
            deny.insert(subject);
        }
    }
    let pending: HashSet<String> = cast
        .requesters
        .iter()
        .enumerate()
        .filter(|(_, (_, a))| *a == IDLE)
        .map(|(i, _)| acked[&Ask::User(i)].clone())
        .collect();
    assert_eq!(deny, pending, "{label}: each pending request keeps its timeout, nothing else");
    store.pool().close().await;
    eprintln!(
        "{label}: {} requests, {} assignments ({} ended), {} mails ({repeats} repeated)",
        requests.len(),
        assignments.len(),
        ended.len(),
        outbox.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_nothing() {
    // Checked here so that a missing venv skips the test rather than failing it.
    if std::env::var("GATEHOUSE_TEST_PYTHON").is_err() {
        eprintln!(
            "skipped sigkill_mid_burst_loses_nothing: GATEHOUSE_TEST_PYTHON is not set (source scripts/test-env.sh); it needs aiosmtpd"
        );
        return;
    }
    for db in TestDb::each("sigkill_mid_burst_loses_nothing").await {
        sigkill_mid_burst(&db).await;
    }
}
