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
