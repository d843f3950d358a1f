//! The README's walk-through, automated: the real binary started with `serve --demo`, then the
//! same requests the README shows, checked against what the README says they print.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use gatehouse_core::auth::totp;
use gatehouse_server::clock::{Clock, SystemClock};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ISAIAH: &str = "isaiah@contoso.example";
const ADELE: &str = "adele@contoso.example";
const ADELE_ID: &str = "a0000000-0000-4000-8000-000000000001";
const EXPENSES: &str = "f1000000-0000-4000-8000-000000000001";
const TRAVEL: &str = "b0000000-0000-4000-8000-000000000003";
const PASSWORD: &str = "Demo-Passw0rd";
const FRANCE: &str = "198.51.100.7";

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

/// `gatehouse serve --demo` in `dir`, as the Quick start runs it (on a free port); the admin
/// token if it was printed (only when the demo was seeded).
fn start_demo(dir: &std::path::Path) -> (Child, String, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
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

fn serve_demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let (child, base, token) = start_demo(dir.path());
    let token = token.expect("serve --demo prints the admin token");
    assert!(token.starts_with("gh_"), "{token}");
    Demo { child, base, token, _dir: dir }
}

struct Walk {
    http: reqwest::Client,
    demo: Demo,
}

impl Walk {
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

fn code(secret: &str, steps_ahead: i64) -> String {
    let secret = totp::Secret::from_base32(secret).unwrap();
    totp::code_at(&secret, totp::step_of(SystemClock.now()) + steps_ahead)
}

#[tokio::test]
async fn the_readme_walk_through() {
    let w = Walk { http: reqwest::Client::new(), demo: serve_demo() };
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
        w.post(&verify, Some(&session), None, json!({"code": code(&secret, 0)})).await;
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
    let (status, answer) = w
        .post(
            &format!("/signin/{id}/totp"),
            None,
            None,
            json!({"flowToken": ft, "code": code(&secret, 1)}),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("success")), "{answer}");

    // Adele in France: blocked by 011.
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

    // An admin adds her to the travel persona.
    let (status, body) = w
        .post(
            &format!("/v1.0/groups/{TRAVEL}/members/$ref"),
            Some(&token),
            None,
            json!({"@odata.id": format!("{}/v1.0/directoryObjects/{ADELE_ID}", w.demo.base)}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Now only MFA is asked, and her app answers it.
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
    let adele_code = code(gatehouse_server::demo::ADELE_TOTP_SECRET, 0);
    let (status, answer) = w
        .post(
            &format!("/signin/{id}/totp"),
            None,
            Some(FRANCE),
            json!({"flowToken": ft, "code": adele_code}),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("success")), "{answer}");

    // The sign-in log says why, each time (newest first).
    let logs = w.admin_get("/v1.0/auditLogs/signIns?$top=10").await;
    let adele: Vec<&Value> = logs["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["userPrincipalName"] == ADELE)
        .collect();
    let codes: Vec<i64> =
        adele.iter().map(|e| e["status"]["errorCode"].as_i64().unwrap()).collect();
    assert_eq!(codes, vec![0, 50074, 53003], "{adele:#?}");
    let result_of = |entry: &Value, policy: &str| -> String {
        entry["appliedConditionalAccessPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["displayName"] == policy)
            .map(|p| p["result"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(result_of(adele[2], "011-Global-AllApps-UnapprovedLocation-Block"), "failure");
    assert_eq!(adele[2]["conditionalAccessStatus"], "failure");
    assert_eq!(adele[2]["location"]["countryOrRegion"], "FR");
    assert_eq!(result_of(adele[1], "011-Global-AllApps-UnapprovedLocation-Block"), "notApplied");
    assert_eq!(result_of(adele[0], "001-Global-AllApps-MFA-Require"), "success");
    // The README prints the newest six entries with a jq one-liner and shows its output.
    let top6 = w.admin_get("/v1.0/auditLogs/signIns?$top=6").await;
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

    // Starting again keeps the store: no second seed, no second token, Adele still travelling.
    let mut w = w;
    w.demo.child.kill().unwrap();
    w.demo.child.wait().unwrap();
    let (child, base, printed) = start_demo(w.demo._dir.path());
    w.demo.child = child;
    assert_eq!(printed, None, "a restart does not seed again");
    let resp = w
        .http
        .get(format!("{base}/v1.0/users/{ADELE_ID}/memberOf"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let groups: Value = resp.json().await.unwrap();
    assert!(groups["value"].as_array().unwrap().iter().any(|g| g["id"] == TRAVEL), "{groups}");
}
