//! The README's walk-through, automated: the real binary started with `serve --demo`, then the
//! same requests the README shows, checked against what the README says they print. The binary
//! runs on its test clock (`--test-clock`), which the walk moves where the README says to wait.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use gatehouse_core::auth::totp;
use gatehouse_server::clock::{Clock, SystemClock};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Mutex;

const ISAIAH: &str = "isaiah@contoso.example";
const ADELE: &str = "adele@contoso.example";
const ADELE_ID: &str = "a0000000-0000-4000-8000-000000000001";
const EXPENSES: &str = "f1000000-0000-4000-8000-000000000001";
const TRAVEL: &str = "b0000000-0000-4000-8000-000000000003";
const PASSWORD: &str = "Demo-Passw0rd";
const FRANCE: &str = "198.51.100.7";
const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
const EM: &str = "/v1.0/identityGovernance/entitlementManagement";

struct Demo {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gatehouse serve --demo` in `dir`, as the Quick start runs it (on a free port, on a test
/// clock at `clock`); the admin token if it was printed (only when the demo was seeded).
fn start_demo(dir: &std::path::Path, clock: i64) -> (Child, String, Option<String>) {
    let at = gatehouse_core::time::format(clock);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--test-clock", &at])
        .current_dir(dir)
        .env("GATEHOUSE_LOG", "warn")
        .env_remove("GATEHOUSE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut token, mut after_token_line) = (None, false);
    let base = loop {
        let line = lines.next().expect("serve --demo exited early").unwrap();
        if after_token_line && token.is_none() {
            token = Some(line.trim().to_owned());
        }
        after_token_line |= line.contains("shown once");
        if let Some(rest) = line.strip_prefix("Gatehouse is listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base, token)
}

fn serve_demo(clock: i64) -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let (child, base, token) = start_demo(dir.path(), clock);
    let token = token.expect("serve --demo prints the admin token");
    assert!(token.starts_with("gh_"), "{token}");
    Demo { child, base, token, _dir: dir }
}

struct Walk {
    http: reqwest::Client,
    demo: Demo,
    /// The server's test clock, as the walk moved it.
    clock: Mutex<i64>,
}

impl Walk {
    fn now(&self) -> i64 {
        *self.clock.lock().unwrap()
    }

    /// Moves the server's clock (where the README says to wait).
    async fn advance(&self, ms: i64) {
        let (status, body) =
            self.post("/test/clock", None, None, json!({"advanceMilliseconds": ms})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        *self.clock.lock().unwrap() += ms;
    }

    /// The Authenticator-app code at the server's time, `steps_ahead` steps later.
    fn code(&self, secret: &str, steps_ahead: i64) -> String {
        let secret = totp::Secret::from_base32(secret).unwrap();
        totp::code_at(&secret, totp::step_of(self.now()) + steps_ahead)
    }

    /// The README's `graph_token`: password then app code, to Microsoft Graph from home.
    async fn graph_token(&self, user: &str, secret: &str) -> String {
        self.advance(31_000).await;
        let (id, ft, (status, answer)) =
            self.sign_in(user, json!({"appId": GRAPH}), None, "password", PASSWORD).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (StatusCode::OK, Some("challenge")),
            "{answer}"
        );
        let (status, answer) = self
            .post(
                &format!("/signin/{id}/totp"),
                None,
                None,
                json!({"flowToken": ft, "code": self.code(secret, 0)}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["session"]["token"].as_str().unwrap().to_owned()
    }

    async fn get_as(&self, token: &str, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.demo.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        xff: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.demo.base)).json(&body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(ip) = xff {
            req = req.header("X-Forwarded-For", ip);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn admin_get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.demo.base))
            .bearer_auth(&self.demo.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// `POST /signin/begin` then one first-factor step; returns (flow id, flow token, answer).
    async fn sign_in(
        &self,
        user: &str,
        target: Value,
        xff: Option<&str>,
        step: &str,
        secret: &str,
    ) -> (String, Value, (StatusCode, Value)) {
        let (status, flow) = self
            .post("/signin/begin", None, xff, json!({"username": user, "target": target}))
            .await;
        assert_eq!(status, StatusCode::OK, "{flow}");
        let id = flow["flowId"].as_str().unwrap().to_owned();
        let field = if step == "password" { "password" } else { "code" };
        let answer = self
            .post(
                &format!("/signin/{id}/{step}"),
                None,
                xff,
                json!({"flowToken": flow["flowToken"], field: secret}),
            )
            .await;
        (id, flow["flowToken"].clone(), answer)
    }
}

#[tokio::test]
async fn the_readme_walk_through() {
    // Today, to the second, as a newcomer's clock would read.
    let start = SystemClock.now() / 1000 * 1000;
    let w =
        Walk { http: reqwest::Client::new(), demo: serve_demo(start), clock: Mutex::new(start) };
    let token = w.demo.token.clone();

    // A new hire's first day: a Temporary Access Pass, shown once.
    let (status, tap) = w
        .post(
            &format!("/v1.0/users/{ISAIAH}/authentication/temporaryAccessPassMethods"),
            Some(&token),
            None,
            json!({"lifetimeInMinutes": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tap}");
    let tap = tap["temporaryAccessPass"].as_str().unwrap().to_owned();

    // He signs in with it to register security info: the pass satisfies MFA and the bootstrap strength.
    let (_, _, (status, answer)) = w
        .sign_in(
            ISAIAH,
            json!({"userAction": "registerSecurityInformation"}),
            None,
            "temporaryAccessPass",
            &tap,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "success", "{answer}");
    let session = answer["session"]["token"].as_str().unwrap().to_owned();

    // He adds the Authenticator app and proves it with a code.
    let (status, reg) = w.post("/signin/security-info/totp", Some(&session), None, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    let secret = reg["secret"].as_str().unwrap().to_owned();
    let verify = format!("/signin/security-info/totp/{}/verify", reg["id"].as_str().unwrap());
    let (status, body) =
        w.post(&verify, Some(&session), None, json!({"code": w.code(&secret, 0)})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // From now on: password, then the MFA challenge, answered with the app (the next code: a
    // code is never accepted twice, and one step of drift is allowed).
    let (id, ft, (status, answer)) =
        w.sign_in(ISAIAH, json!({"appId": EXPENSES}), None, "password", PASSWORD).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (StatusCode::OK, Some("challenge")),
        "{answer}"
    );
    assert!(answer["methods"].as_array().unwrap().contains(&json!("totp")), "{answer}");
    w.advance(1_000).await; // typing the code: the log orders by time
    let (status, answer) = w
        .post(
            &format!("/signin/{id}/totp"),
            None,
            None,
            json!({"flowToken": ft, "code": w.code(&secret, 1)}),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("success")), "{answer}");

    // Adele in France: blocked by 011.
    w.advance(1_000).await;
    let (_, _, (status, answer)) =
        w.sign_in(ADELE, json!({"appId": EXPENSES}), Some(FRANCE), "password", PASSWORD).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], "53003");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("011-Global-AllApps-UnapprovedLocation-Block")
    );

    // She signs in to Graph from home and finds the package she may request.
    let adele = w.graph_token(ADELE, gatehouse_server::demo::ADELE_TOTP_SECRET).await;
    let offered = w
        .get_as(&adele, &format!("{EM}/accessPackages/filterByCurrentUser(on='allowedRequestor')"))
        .await;
    let names: Vec<&str> = offered["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Internals Travelling"]);
    // She requests it for two minutes, with the answers and a justification.
    let (status, request) = w
        .post(&format!("{EM}/assignmentRequests"), Some(&adele), None, json!({
            "requestType": "userAdd", "justification": "Customer workshop in Paris",
            "assignment": {"accessPackageId": "c0000000-0000-4000-8000-000000000002"},
            "schedule": {"expiration": {"type": "afterDuration", "duration": "PT2M"}},
            "answers": [
                {"value": "FR", "answeredQuestion": {"id": "c0000000-0000-4000-8000-0000000000a1"}},
                {"value": "TR-2026", "answeredQuestion": {"id": "c0000000-0000-4000-8000-0000000000a2"}}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{request}");
    assert_eq!(request["status"], "PendingApproval");
    let req = request["id"].as_str().unwrap().to_owned();

    // Megan approves.
    let megan =
        w.graph_token("megan@contoso.example", gatehouse_server::demo::MEGAN_TOTP_SECRET).await;
    let stages =
        w.get_as(&megan, &format!("{EM}/accessPackageAssignmentApprovals/{req}/stages")).await;
    let stage = stages["value"][0]["id"].as_str().unwrap();
    let resp = w
        .http
        .patch(format!("{}{EM}/accessPackageAssignmentApprovals/{req}/stages/{stage}", w.demo.base))
        .bearer_auth(&megan)
        .json(&json!({"reviewResult": "Approve", "justification": "Enjoy Paris"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let r = w.get_as(&adele, &format!("{EM}/assignmentRequests/{req}")).await;
    let history: Vec<&str> =
        r["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(
        (r["state"].as_str(), history),
        (Some("delivered"), vec!["Accepted", "PendingApproval", "Delivered"]),
        "{r}"
    );

    // Now only MFA is asked, and her app answers it (the next code: the last went to Graph).
    w.advance(31_000).await;
    let (id, ft, (status, answer)) =
        w.sign_in(ADELE, json!({"appId": EXPENSES}), Some(FRANCE), "password", PASSWORD).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (StatusCode::OK, Some("challenge")),
        "{answer}"
    );
    assert!(
        answer["reason"].as_str().unwrap().contains("001-Global-AllApps-MFA-Require"),
        "{answer}"
    );
    w.advance(1_000).await; // she takes a second to type the code
    let adele_code = w.code(gatehouse_server::demo::ADELE_TOTP_SECRET, 0);
    let (status, answer) = w
        .post(
            &format!("/signin/{id}/totp"),
            None,
            Some(FRANCE),
            json!({"flowToken": ft, "code": adele_code}),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("success")), "{answer}");

    // Two minutes after the approval, the package has ended: expired, and blocked again.
    w.advance(120_000).await;
    let mine =
        w.get_as(&adele, &format!("{EM}/assignments/filterByCurrentUser(on='target')")).await;
    assert_eq!(mine["value"][0]["state"], "expired", "{mine}");
    let (_, _, (status, answer)) =
        w.sign_in(ADELE, json!({"appId": EXPENSES}), Some(FRANCE), "password", PASSWORD).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("53003")),
        "{answer}"
    );

    // The sign-in log says why, each time (newest first).
    let logs = w.admin_get("/v1.0/auditLogs/signIns?$top=20").await;
    let adele: Vec<&Value> = logs["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["userPrincipalName"] == ADELE && e["appId"] == EXPENSES)
        .collect();
    let codes: Vec<i64> =
        adele.iter().map(|e| e["status"]["errorCode"].as_i64().unwrap()).collect();
    assert_eq!(codes, vec![53003, 0, 50074, 53003], "{adele:#?}");
    let result_of = |entry: &Value, policy: &str| -> String {
        entry["appliedConditionalAccessPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["displayName"] == policy)
            .map(|p| p["result"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(result_of(adele[3], "011-Global-AllApps-UnapprovedLocation-Block"), "failure");
    assert_eq!(adele[3]["conditionalAccessStatus"], "failure");
    assert_eq!(adele[3]["location"]["countryOrRegion"], "FR");
    assert_eq!(result_of(adele[2], "011-Global-AllApps-UnapprovedLocation-Block"), "notApplied");
    assert_eq!(result_of(adele[1], "001-Global-AllApps-MFA-Require"), "success");
    assert_eq!(result_of(adele[0], "011-Global-AllApps-UnapprovedLocation-Block"), "failure");
    // The README prints the newest six entries of Contoso Expenses with a jq one-liner and
    // shows its output.
    let top6 = w
        .admin_get(&format!("/v1.0/auditLogs/signIns?$filter=appId%20eq%20'{EXPENSES}'&$top=6"))
        .await;
    let lines: Vec<String> = top6["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let decided: Vec<String> = e["appliedConditionalAccessPolicies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["result"] == "success" || p["result"] == "failure")
                .map(|p| {
                    format!(
                        "{}={}",
                        p["displayName"].as_str().unwrap(),
                        p["result"].as_str().unwrap()
                    )
                })
                .collect();
            format!(
                "{}  {}  {}  {}",
                e["userPrincipalName"].as_str().unwrap(),
                e["status"]["errorCode"],
                e["conditionalAccessStatus"].as_str().unwrap(),
                decided.join(", ")
            )
        })
        .collect();
    let readme = std::fs::read_to_string(crate::support::repo_root().join("README.md")).unwrap();
    let shown = readme.split("It prints, newest first").nth(1).unwrap();
    let shown: Vec<&str> = shown.split("```").nth(1).unwrap().trim().lines().collect();
    assert_eq!(lines, shown, "the README shows what the sign-in log says");

    let isaiah: Vec<&Value> = logs["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["userPrincipalName"] == ISAIAH)
        .collect();
    assert_eq!(isaiah.first().unwrap()["status"]["errorCode"], 0);

    // Starting again keeps the store: no second seed, no second token, the expired assignment
    // still on record.
    let mut w = w;
    w.demo.child.kill().unwrap();
    w.demo.child.wait().unwrap();
    let (child, base, printed) = start_demo(w.demo._dir.path(), w.now());
    w.demo.child = child;
    assert_eq!(printed, None, "a restart does not seed again");
    let resp =
        w.http.get(format!("{base}{EM}/assignments")).bearer_auth(&token).send().await.unwrap();
    let all: Value = resp.json().await.unwrap();
    assert!(
        all["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["target"]["objectId"] == ADELE_ID && a["state"] == "expired"),
        "{all}"
    );
    let resp = w
        .http
        .get(format!("{base}/v1.0/users/{ADELE_ID}/memberOf"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let groups: Value = resp.json().await.unwrap();
    assert!(!groups["value"].as_array().unwrap().iter().any(|g| g["id"] == TRAVEL), "{groups}");
}
