//! What the entitlement-management tests share: a real SMTP server (aiosmtpd, from the test
//! venv) that reports each message it accepts, signing in demo users through the sign-in API,
//! and running the workers on the test's clock.

use std::process::Stdio;
use std::time::Duration;

use gatehouse_core::auth::totp;
use gatehouse_server::clock::Clock;
use gatehouse_server::governance::worker::{Senders, drain};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::server_support::TestServer;

pub const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
pub const FRANCE: &str = "198.51.100.7";
pub const EM: &str = "/v1.0/identityGovernance/entitlementManagement";

/// A mail the SMTP server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub body: String,
}

pub struct SmtpSink {
    pub port: u16,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts the server, or says the test is skipped when there is no test venv.
    pub async fn start(test: &str) -> Option<SmtpSink> {
        let Ok(python) = std::env::var("GATEHOUSE_TEST_PYTHON") else {
            eprintln!(
                "skipped {test}: GATEHOUSE_TEST_PYTHON is not set (source scripts/test-env.sh); it needs aiosmtpd"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let script = crate::support::repo_root().join("tests/python/smtp_sink.py");
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let port = first.strip_prefix("ready ").unwrap().trim().parse().unwrap();
        Some(SmtpSink { port, child, lines, _dir: dir })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The next message, waiting for it to arrive (a minute at most, then the test fails).
    pub async fn next(&mut self) -> Received {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("no mail arrived within a minute")
            .unwrap()
            .expect("the SMTP server stopped");
        received(&line)
    }

    /// The next message to `address` whose subject starts with `subject`, skipping others.
    pub async fn next_like(&mut self, address: &str, subject: &str) -> Received {
        loop {
            let m = self.next().await;
            if m.to.contains(address) && m.subject.starts_with(subject) {
                return m;
            }
        }
    }

    /// The next message to `address`, skipping (and returning) others in between.
    pub async fn next_to(&mut self, address: &str) -> (Received, Vec<Received>) {
        let mut others = Vec::new();
        loop {
            let m = self.next().await;
            if m.to.contains(address) {
                return (m, others);
            }
            others.push(m);
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Hands the mail stream to a task that reads every line as it comes: a burst of mail
    /// would otherwise fill the pipe, and the SMTP server would stall in mid-conversation.
    pub fn collect(self) -> MailLog {
        let SmtpSink { port, child, mut lines, _dir } = self;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(received(&line)).is_err() {
                    break;
                }
            }
        });
        MailLog { port, child, rx, _dir }
    }
}

fn received(line: &str) -> Received {
    let v: Value = serde_json::from_str(line).unwrap();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Received { to: s("to"), subject: s("subject"), message_id: s("message_id"), body: s("body") }
}

/// The SMTP server's messages, read as they arrive by a task of their own
/// ([`SmtpSink::collect`]).
pub struct MailLog {
    pub port: u16,
    child: Child,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    _dir: tempfile::TempDir,
}

impl MailLog {
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The next message, waiting for it to arrive (a minute at most, then the test fails).
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
            .await
            .expect("no mail arrived within a minute")
            .expect("the SMTP server stopped")
    }

    /// Stops the SMTP server and returns the messages not read yet. The server prints a
    /// message's line before it answers 250, so once every sender has had its 250 (the outbox
    /// marks a message sent only then), every line is here.
    pub async fn finish(mut self) -> Vec<Received> {
        let _ = self.child.kill().await;
        let mut rest = Vec::new();
        while let Some(m) = self.rx.recv().await {
            rest.push(m);
        }
        rest
    }
}

/// Signs a demo user in to Microsoft Graph with password and Authenticator app (from `xff`, or
/// from this machine, which the demo GeoIP database puts in Great Britain). Moves the clock a
/// TOTP step on first, so no code is ever replayed. Returns the session token.
pub async fn graph_session(server: &TestServer, upn: &str, totp_secret: &str) -> String {
    let (status, body) =
        sign_in(server, upn, json!({"appId": GRAPH}), None, Some(totp_secret)).await;
    assert_eq!(status, StatusCode::OK, "{upn}: {body}");
    assert_eq!(body["status"], "success", "{upn}: {body}");
    body["session"]["token"].as_str().unwrap().to_owned()
}

/// One sign-in: begin, password, then TOTP if asked for and a secret is given. Returns the
/// last answer.
pub async fn sign_in(
    server: &TestServer,
    upn: &str,
    target: Value,
    xff: Option<&str>,
    totp_secret: Option<&str>,
) -> (StatusCode, Value) {
    server.clock.advance(31_000);
    let headers: Vec<(&str, &str)> =
        xff.map(|ip| vec![("X-Forwarded-For", ip)]).unwrap_or_default();
    let (status, flow) = server
        .call_with(
            Method::POST,
            "/signin/begin",
            None,
            Some(&json!({"username": upn, "target": target})),
            &headers,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    let id = flow["flowId"].as_str().unwrap().to_owned();
    let body =
        json!({"flowToken": flow["flowToken"], "password": gatehouse_server::demo::PASSWORD});
    let (status, answer) = server
        .call_with(Method::POST, &format!("/signin/{id}/password"), None, Some(&body), &headers)
        .await;
    if answer["status"] != "challenge" {
        return (status, answer);
    }
    let Some(secret) = totp_secret else { return (status, answer) };
    let code = totp::code_at(
        &totp::Secret::from_base32(secret).unwrap(),
        totp::step_of(server.clock.now()),
    );
    let body = json!({"flowToken": flow["flowToken"], "code": code});
    server.call_with(Method::POST, &format!("/signin/{id}/totp"), None, Some(&body), &headers).await
}

/// Does every due job and sends every due message, as of the test's clock.
pub async fn run_workers(server: &TestServer) -> (usize, usize) {
    let state = &server.running.state;
    let senders = Senders::from_config(&state.config).unwrap();
    drain(state, &senders).await.unwrap()
}

/// `GET` as `token`, asserting 200.
pub async fn get(server: &TestServer, token: &str, path: &str) -> Value {
    let (status, body) = server.call(Method::GET, path, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

pub async fn is_member(server: &TestServer, group: &str, user: &str) -> bool {
    let body =
        get(server, &server.admin_token, &format!("/v1.0/groups/{group}/members?$select=id")).await;
    body["value"].as_array().unwrap().iter().any(|m| m["id"] == user)
}

/// An API token for an existing user (as `admin bootstrap` makes for administrators): the
/// tests' stand-in for people who would sign in, when the sign-in itself is not under test.
pub async fn token_of(server: &TestServer, user_id: &str) -> String {
    use gatehouse_server::session::{Session, SessionKind};
    let state = &server.running.state;
    let token = gatehouse_server::random::token("gh_");
    let session = Session {
        id: gatehouse_server::random::guid(),
        user_id: user_id.to_owned(),
        kind: SessionKind::ApiToken,
        created_at: server.clock.now(),
        expires_at: None,
        methods: vec![],
        tap_id: None,
        target: None,
    };
    let mut w = state.store.begin().await.unwrap();
    w.insert_session(&gatehouse_core::auth::secret::hash(&token), &session).await.unwrap();
    w.commit(server.clock.now(), &[], &[]).await.unwrap();
    token
}

/// Creates a member user (and returns its id).
pub async fn new_user(server: &TestServer, upn: &str, name: &str, manager: Option<&str>) -> String {
    let body = json!({
        "accountEnabled": true, "displayName": name, "mailNickname": upn.split('@').next().unwrap(),
        "userPrincipalName": upn, "userType": "Member",
        "passwordProfile": {"forceChangePasswordNextSignIn": false, "password": "Correct-Horse-9"},
    });
    let (s, u) = server.admin(Method::POST, "/v1.0/users", Some(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let id = u["id"].as_str().unwrap().to_owned();
    if let Some(m) = manager {
        set_manager(server, &id, m).await;
    }
    id
}

pub async fn set_manager(server: &TestServer, user: &str, manager: &str) {
    let (s, b) = server
        .admin(
            Method::PUT,
            &format!("/v1.0/users/{user}/manager/$ref"),
            Some(&json!({"@odata.id": format!("{}/v1.0/users/{manager}", server.base)})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
}

/// A catalog with one group as its resource and a package granting its membership; returns
/// (catalog, package).
pub async fn package_for_group(
    server: &TestServer,
    catalog: &str,
    package: &str,
    group: &str,
) -> (String, String) {
    let (s, c) = server
        .admin(Method::POST, &format!("{EM}/catalogs"), Some(&json!({"displayName": catalog})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let c = c["id"].as_str().unwrap().to_owned();
    let (s, b) = server
        .admin(Method::POST, &format!("{EM}/resourceRequests"), Some(&json!({"requestType": "adminAdd", "resource": {"originId": group, "originSystem": "AadGroup"}, "catalog": {"id": c}})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, p) = server
        .admin(
            Method::POST,
            &format!("{EM}/accessPackages"),
            Some(&json!({"displayName": package, "catalog": {"id": c}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let p = p["id"].as_str().unwrap().to_owned();
    add_group_role(server, &p, group).await;
    (c, p)
}

/// Adds the member role of `group` (already a resource of the package's catalog) to a package.
pub async fn add_group_role(server: &TestServer, package: &str, group: &str) -> Value {
    let (s, rs) = server
        .admin(
            Method::POST,
            &format!("{EM}/accessPackages/{package}/resourceRoleScopes"),
            Some(&json!({
                "role": {"originId": format!("Member_{group}"), "originSystem": "AadGroup"},
                "scope": {"originId": group, "originSystem": "AadGroup", "isRootScope": true},
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rs}");
    rs
}

/// A policy on `package` from `extra` merged over a plain self-request policy without
/// approval for all members; returns its id.
pub async fn policy(server: &TestServer, package: &str, extra: Value) -> String {
    let mut body = json!({
        "displayName": "Members",
        "allowedTargetScope": "allMemberUsers",
        "expiration": {"type": "afterDuration", "duration": "P7D"},
        "requestorSettings": {"enableTargetsToSelfAddAccess": true, "enableTargetsToSelfUpdateAccess": true,
                              "enableTargetsToSelfRemoveAccess": true, "allowCustomAssignmentSchedule": true},
        "requestApprovalSettings": {"isApprovalRequiredForAdd": false, "isApprovalRequiredForUpdate": false, "stages": []},
        "accessPackage": {"id": package},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let (s, p) = server.admin(Method::POST, &format!("{EM}/assignmentPolicies"), Some(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

/// A self request (userAdd) as `token` for `user`; returns (status, body).
pub async fn request_self(
    server: &TestServer,
    token: &str,
    user: &str,
    package: &str,
    policy: &str,
    extra: Value,
) -> (StatusCode, Value) {
    let mut body = json!({
        "requestType": "userAdd", "justification": "work",
        "assignment": {"targetId": user, "assignmentPolicyId": policy, "accessPackageId": package},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    server.call(Method::POST, &format!("{EM}/assignmentRequests"), Some(token), Some(&body)).await
}

/// An approval stage as `token` sees it: (stage path, stage body).
pub async fn stage_of(server: &TestServer, token: &str, request: &str) -> (String, Value) {
    let stages =
        get(server, token, &format!("{EM}/accessPackageAssignmentApprovals/{request}/stages"))
            .await;
    let s = stages["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "InProgress")
        .cloned()
        .unwrap_or_else(|| stages["value"][0].clone());
    (
        format!(
            "{EM}/accessPackageAssignmentApprovals/{request}/stages/{}",
            s["id"].as_str().unwrap()
        ),
        s,
    )
}

/// Creates a security group and returns its id.
pub async fn new_group(server: &TestServer, name: &str) -> String {
    let body = json!({"displayName": name, "mailEnabled": false, "mailNickname": name.replace(' ', ""), "securityEnabled": true, "groupTypes": []});
    let (s, g) = server.admin(Method::POST, "/v1.0/groups", Some(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    g["id"].as_str().unwrap().to_owned()
}

/// Adds a group of the directory to a catalog.
pub async fn add_resource(server: &TestServer, catalog: &str, group: &str) {
    let (s, b) = server
        .admin(Method::POST, &format!("{EM}/resourceRequests"), Some(&json!({"requestType": "adminAdd", "resource": {"originId": group, "originSystem": "AadGroup"}, "catalog": {"id": catalog}})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

/// The calls a [`Receiver`] got: headers and body of each.
pub type Calls = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver: a real HTTP server on loopback recording every call, answering the
/// status the test sets, and telling the test each time a call arrives.
pub struct Receiver {
    pub url: String,
    pub calls: Calls,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// `statuses`: the answers to the first calls in order; 202 after them.
    pub async fn start(statuses: Vec<u16>) -> Receiver {
        use axum::extract::State;
        type Shared = (
            std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>,
            std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
            tokio::sync::mpsc::UnboundedSender<()>,
        );
        async fn hook(
            State((calls, status, tx)): State<Shared>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            calls.lock().unwrap().push((headers, body.to_vec()));
            let code = {
                let mut s = status.lock().unwrap();
                if s.is_empty() { 202 } else { s.remove(0) }
            };
            let _ = tx.send(());
            axum::http::StatusCode::from_u16(code).unwrap()
        }
        let calls = std::sync::Arc::default();
        let status = std::sync::Arc::new(std::sync::Mutex::new(statuses));
        let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state((
            std::sync::Arc::clone(&calls),
            std::sync::Arc::clone(&status),
            tx,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, calls, arrived, _task: task }
    }

    /// Waits for the next call (a minute at most) and returns its headers and JSON body.
    pub async fn next(&mut self) -> (axum::http::HeaderMap, Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(60), self.arrived.recv())
            .await
            .expect("no call arrived within a minute")
            .unwrap();
        self.calls.lock().unwrap().last().cloned().unwrap()
    }
}

/// Waits until the outbox holds no unsent message. Marking a message sent follows its 250 and
/// has no event of its own, so this is a short bounded poll (20 s at most, every 20 ms), used
/// only once every mail the test expects has arrived.
pub async fn outbox_drained(pool: &sqlx::AnyPool, what: &str) {
    use sqlx::Row;
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
                .fetch_one(pool)
                .await
                .unwrap();
            if row.try_get::<i64, _>("n").unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "{what}: the outbox still holds unsent messages after 20 s");
}
