//! Sign-in under Conditional Access over the JSON API (`docs/signin-api.md`): the TAP story,
//! the travel story, TAP and TOTP rules, lockout and throttling, client addresses, and the
//! sign-in log each attempt leaves. Every test runs on SQLite, and on PostgreSQL when
//! `GATEHOUSE_TEST_DATABASE_URL` is set.

use gatehouse_core::Change;
use gatehouse_core::auth::totp;
use gatehouse_server::clock::ManualClock;
use gatehouse_server::demo;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;

use crate::server_support::{T0, TestDb, TestServer, config};

const ADELE: &str = "adele@contoso.example";
const ISAIAH: &str = "isaiah@contoso.example";
const ADELE_ID: &str = "a0000000-0000-4000-8000-000000000001";
const ISAIAH_ID: &str = "a0000000-0000-4000-8000-000000000004";
const TRAVEL: &str = "b0000000-0000-4000-8000-000000000003";
/// Contoso Expenses: a line-of-business app, outside Office 365 (so policy 060's managed-device
/// requirement does not apply): 001 (MFA) and the location blocks do.
const EXPENSES: &str = "f1000000-0000-4000-8000-000000000001";
const P001: &str = "d0000000-0000-4000-8000-000000000001";
const P011: &str = "d0000000-0000-4000-8000-000000000011";
const P012: &str = "d0000000-0000-4000-8000-000000000012";
const P013: &str = "d0000000-0000-4000-8000-000000000013";
const P020: &str = "d0000000-0000-4000-8000-000000000020";
const P021: &str = "d0000000-0000-4000-8000-000000000021";
/// Loopback (a trusted proxy in tests) forwarding for a client in France (demo GeoIP).
const FRANCE: &[(&str, &str)] = &[("X-Forwarded-For", "198.51.100.7")];
/// Contoso's HQ range: GB, but a network Adele has never signed in from.
const HQ: &[(&str, &str)] = &[("X-Forwarded-For", "203.0.113.9")];
const HOME: &[(&str, &str)] = &[];

fn app(id: &str) -> Value {
    json!({"appId": id})
}

fn register_security_info() -> Value {
    json!({"userAction": "registerSecurityInformation"})
}

async fn begin(
    server: &TestServer,
    username: &str,
    target: Value,
    headers: &[(&str, &str)],
) -> Value {
    let body = json!({"username": username, "target": target, "client": {"platform": "windows", "clientAppType": "browser"}});
    let (status, flow) =
        server.call_with(Method::POST, "/signin/begin", None, Some(&body), headers).await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    flow
}

async fn step(
    server: &TestServer,
    flow: &Value,
    method: &str,
    secret: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let key = if method == "password" { "password" } else { "code" };
    let body = json!({"flowToken": flow["flowToken"], key: secret});
    let path = format!("/signin/{}/{method}", flow["flowId"].as_str().unwrap());
    server.call_with(Method::POST, &path, None, Some(&body), headers).await
}

/// Begins a sign-in and passes the password step.
async fn password(
    server: &TestServer,
    user: &str,
    target: Value,
    pw: &str,
    headers: &[(&str, &str)],
) -> (Value, StatusCode, Value) {
    let flow = begin(server, user, target, headers).await;
    let (status, body) = step(server, &flow, "password", pw, headers).await;
    (flow, status, body)
}

fn now(server: &TestServer) -> i64 {
    use gatehouse_server::clock::Clock;
    server.clock.now()
}

fn code_at(secret: &str, step: i64) -> String {
    totp::code_at(&totp::Secret::from_base32(secret).unwrap(), step)
}

fn current_code(server: &TestServer, secret: &str) -> String {
    code_at(secret, totp::step_of(now(server)))
}

/// Every sign-in log row's Graph body, as stored.
async fn signin_logs(server: &TestServer) -> Vec<Value> {
    let rows = sqlx::query("SELECT body FROM signin_logs")
        .fetch_all(server.running.state.store.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(&r.try_get::<String, _>("body").unwrap()).unwrap())
        .collect()
}

/// The rows of one sign-in flow, by correlation id, as (errorCode, row).
async fn logs_of(server: &TestServer, flow: &Value) -> Vec<Value> {
    let cid = flow["correlationId"].as_str().unwrap();
    signin_logs(server).await.into_iter().filter(|l| l["correlationId"] == cid).collect()
}

fn with_code(logs: &[Value], code: i64) -> Value {
    let found: Vec<&Value> = logs.iter().filter(|l| l["status"]["errorCode"] == code).collect();
    assert_eq!(found.len(), 1, "one row with errorCode {code} in {logs:#?}");
    found[0].clone()
}

fn policy_result(log: &Value, id: &str) -> String {
    let p = log["appliedConditionalAccessPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("policy {id} in {log:#}"));
    p["result"].as_str().unwrap().to_owned()
}

/// Issues a TAP to Isaiah as Nestor; returns the pass.
async fn issue_tap(server: &TestServer, body: Value) -> String {
    let path = format!("/v1.0/users/{ISAIAH_ID}/authentication/temporaryAccessPassMethods");
    let (status, tap) = server.admin(Method::POST, &path, Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{tap}");
    tap["temporaryAccessPass"].as_str().unwrap().to_owned()
}

/// Adds a user to CA-Internals-Travel: through Graph if that route is served, else as a
/// committed change (what the route does).
async fn add_to_travel(server: &TestServer, user_id: &str) {
    let path = format!("/v1.0/groups/{TRAVEL}/members/$ref");
    let body = json!({"@odata.id": format!("{}/v1.0/directoryObjects/{user_id}", server.base)});
    let (status, resp) = server.admin(Method::POST, &path, Some(&body)).await;
    if status == StatusCode::NO_CONTENT {
        return;
    }
    assert_eq!(status, StatusCode::NOT_FOUND, "{resp}");
    let state = &server.running.state;
    let w = state.store.begin().await.unwrap();
    let change = Change::AddMember { group: TRAVEL.into(), member: user_id.into() };
    w.commit(state.now(), &[change], &[]).await.unwrap();
    state.sync().await.unwrap();
}

#[tokio::test]
async fn tap_story_registers_totp_then_signs_in_with_password_and_totp() {
    for db in TestDb::each("tap_story").await {
        let server = TestServer::start(&db).await;
        let pass = issue_tap(&server, json!({"lifetimeInMinutes": 120})).await;

        // Isaiah has only a TAP: it is offered first, and satisfies 020 (MFA) and 021 (the
        // bootstrap strength) at once.
        let flow = begin(&server, ISAIAH, register_security_info(), HOME).await;
        assert_eq!(flow["methods"], json!(["temporaryAccessPass", "password"]), "{}", db.label());
        let (status, signed_in) = step(&server, &flow, "temporaryAccessPass", &pass, HOME).await;
        assert_eq!(status, StatusCode::OK, "{signed_in}");
        assert_eq!(signed_in["status"], "success");
        let session = &signed_in["session"];
        assert_eq!(session["methods"], json!(["temporaryAccessPass"]));
        assert_eq!(session["target"], "userAction:registersecurityinfo");
        assert_eq!(session["conditionalAccessStatus"], "success");
        let token = session["token"].as_str().unwrap().to_owned();
        let log = with_code(&logs_of(&server, &flow).await, 0);
        assert_eq!(
            (policy_result(&log, P020), policy_result(&log, P021)),
            ("success".into(), "success".into())
        );
        assert_eq!(policy_result(&log, P001), "notApplied", "user actions are not All resources");
        assert_eq!(policy_result(&log, P011), "notApplied");
        assert_eq!(
            log["authenticationDetails"][0]["authenticationMethod"],
            "Temporary Access Pass"
        );
        assert_eq!(log["authenticationDetails"][0]["succeeded"], true);
        assert_eq!(log["appDisplayName"], "My Signins");
        assert_eq!(log["authenticationRequirement"], "multiFactorAuthentication");

        // Register the Authenticator app with that session.
        let (status, reg) = server
            .call(
                Method::POST,
                "/signin/security-info/totp",
                Some(&token),
                Some(&json!({"displayName": "Phone"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        let secret = reg["secret"].as_str().unwrap().to_owned();
        assert!(reg["otpauthUri"].as_str().unwrap().contains(&format!("secret={secret}")));
        assert!(reg["otpauthUri"].as_str().unwrap().contains("isaiah%40contoso.example"));
        let verify = format!("/signin/security-info/totp/{}/verify", reg["id"].as_str().unwrap());
        let (status, body) = server
            .call(Method::POST, &verify, Some(&token), Some(&json!({"code": "000000"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a wrong code does not verify: {body}");
        let code = current_code(&server, &secret);
        let (status, body) =
            server.call(Method::POST, &verify, Some(&token), Some(&json!({"code": code}))).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let (status, _) =
            server.call(Method::POST, &verify, Some(&token), Some(&json!({"code": code}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "verified once");
        let audits = sqlx::query(
            "SELECT body FROM audit_logs WHERE activity = 'User registered security info'",
        )
        .fetch_all(server.running.state.store.pool())
        .await
        .unwrap();
        assert_eq!(audits.len(), 1);

        // From now on: password, then the Authenticator app (next step: the code just used for
        // verification cannot be replayed).
        server.clock.advance(30_000);
        let (flow, status, challenge) =
            password(&server, ISAIAH, app(EXPENSES), demo::PASSWORD, HOME).await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        assert_eq!(challenge["status"], "challenge");
        assert!(challenge["methods"].as_array().unwrap().contains(&json!("totp")), "{challenge}");
        assert!(
            challenge["reason"].as_str().unwrap().contains("001-Global-AllApps-MFA-Require"),
            "{challenge}"
        );
        let (status, done) =
            step(&server, &flow, "totp", &current_code(&server, &secret), HOME).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["session"]["methods"], json!(["password", "totp"]));
        assert_eq!(done["session"]["target"], EXPENSES);

        let logs = logs_of(&server, &flow).await;
        assert_eq!(logs.len(), 2, "the challenge and the success: {logs:#?}");
        let interrupted = with_code(&logs, 50074);
        assert_eq!(policy_result(&interrupted, P001), "failure");
        assert_eq!(interrupted["conditionalAccessStatus"], "failure");
        let success = with_code(&logs, 0);
        assert_eq!(policy_result(&success, P001), "success");
        assert_eq!(policy_result(&success, P020), "notApplied");
        assert_eq!(success["conditionalAccessStatus"], "success");
        assert_eq!(success["appDisplayName"], "Contoso Expenses");
        let steps: Vec<&str> = success["authenticationDetails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["authenticationMethod"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["Password", "OATH verification code"]);

        // No secret in any log row or audit entry.
        let mut everything =
            signin_logs(&server).await.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
        for r in sqlx::query("SELECT body FROM audit_logs")
            .fetch_all(server.running.state.store.pool())
            .await
            .unwrap()
        {
            everything.push_str(&r.try_get::<String, _>("body").unwrap());
        }
        for secret_value in [pass.as_str(), demo::PASSWORD, secret.as_str(), token.as_str()] {
            assert!(!everything.contains(secret_value), "a secret leaked into the logs");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn adele_in_france_is_blocked_until_she_joins_the_travel_group() {
    for db in TestDb::each("travel_story").await {
        let server = TestServer::start(&db).await;
        let (flow, status, blocked) =
            password(&server, ADELE, app(EXPENSES), demo::PASSWORD, FRANCE).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{blocked}");
        assert_eq!(blocked["error"]["code"], "53003");
        assert_eq!(blocked["error"]["policy"]["id"], P011);
        assert_eq!(
            blocked["error"]["policy"]["displayName"],
            "011-Global-AllApps-UnapprovedLocation-Block"
        );
        assert!(
            blocked["error"]["message"]
                .as_str()
                .unwrap()
                .contains("011-Global-AllApps-UnapprovedLocation-Block")
        );
        let log = with_code(&logs_of(&server, &flow).await, 53003);
        assert_eq!(policy_result(&log, P011), "failure", "{}", db.label());
        assert_eq!(log["conditionalAccessStatus"], "failure");
        assert_eq!(log["ipAddress"], "198.51.100.7");
        assert_eq!(log["location"]["countryOrRegion"], "FR");
        assert_eq!(log["userId"], ADELE_ID);
        assert_eq!(log["clientAppUsed"], "Browser");
        assert_eq!(log["riskLevelDuringSignIn"], "none");
        // The same row through Graph, as an admin reads it.
        let query = format!(
            "/v1.0/auditLogs/signIns?$filter=userId%20eq%20'{ADELE_ID}'%20and%20status/errorCode%20eq%2053003"
        );
        let (status, page) = server.admin(Method::GET, &query, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["value"].as_array().unwrap().len(), 1, "{page}");
        assert_eq!(policy_result(&page["value"][0], P011), "failure");
        // The flow ended with the block.
        let (status, body) = step(&server, &flow, "password", demo::PASSWORD, FRANCE).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("50089"))
        );

        add_to_travel(&server, ADELE_ID).await;
        let (flow, status, challenge) =
            password(&server, ADELE, app(EXPENSES), demo::PASSWORD, FRANCE).await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        assert_eq!(challenge["status"], "challenge");
        assert_eq!(challenge["methods"], json!(["totp"]));
        assert_eq!(challenge["policies"][0]["id"], P001);
        let (status, done) =
            step(&server, &flow, "totp", &current_code(&server, demo::ADELE_TOTP_SECRET), FRANCE)
                .await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["status"], "success");
        // 013 asks for a sign-in every 8 hours: the session ends by then.
        let expires =
            gatehouse_core::time::parse(done["session"]["expiresDateTime"].as_str().unwrap())
                .unwrap();
        assert!(expires <= now(&server) + 8 * 3_600_000);

        let logs = logs_of(&server, &flow).await;
        let success = with_code(&logs, 0);
        assert_eq!(
            policy_result(&success, P011),
            "notApplied",
            "the travel group is excluded from 011"
        );
        assert_eq!(
            policy_result(&success, P012),
            "notApplied",
            "France is an approved travel country"
        );
        assert_eq!(policy_result(&success, P013), "success");
        assert_eq!(policy_result(&success, P001), "success");
        let p013 = success["appliedConditionalAccessPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == P013)
            .unwrap();
        assert_eq!(p013["enforcedSessionControls"], json!(["SignInFrequency"]));
        assert!(
            with_code(&logs, 50074)["status"]["additionalDetails"]
                .as_str()
                .unwrap()
                .contains("001-Global")
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn tap_rules_apply_at_sign_in() {
    for db in TestDb::each("tap_rules").await {
        let server = TestServer::start(&db).await;
        let expect_refused = |(status, body): (StatusCode, Value), code: &str, reason: &str| {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert_eq!(body["error"]["methodUsabilityReason"], reason, "{body}");
            assert!(body["error"]["message"].as_str().unwrap().len() > 20);
        };

        // Not yet valid.
        let start = gatehouse_core::time::format(T0 + 3_600_000);
        let pass =
            issue_tap(&server, json!({"startDateTime": start, "lifetimeInMinutes": 60})).await;
        let flow = begin(&server, ISAIAH, register_security_info(), HOME).await;
        assert_eq!(flow["methods"], json!(["password"]), "a pass not valid yet is not offered");
        expect_refused(
            step(&server, &flow, "temporaryAccessPass", &pass, HOME).await,
            "130501",
            "NotYetValid",
        );

        // Expired.
        let pass = issue_tap(&server, json!({"lifetimeInMinutes": 60})).await;
        server.clock.advance(60 * 60_000);
        let flow = begin(&server, ISAIAH, register_security_info(), HOME).await;
        expect_refused(
            step(&server, &flow, "temporaryAccessPass", &pass, HOME).await,
            "130504",
            "Expired",
        );
        // A wrong pass reads differently.
        let (status, body) =
            step(&server, &flow, "temporaryAccessPass", "Wrong-Pass-1", HOME).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("130507"))
        );

        // One-time: used once, then refused.
        let pass = issue_tap(&server, json!({"lifetimeInMinutes": 60, "isUsableOnce": true})).await;
        let flow = begin(&server, ISAIAH, register_security_info(), HOME).await;
        let (status, body) = step(&server, &flow, "temporaryAccessPass", &pass, HOME).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let flow = begin(&server, ISAIAH, register_security_info(), HOME).await;
        expect_refused(
            step(&server, &flow, "temporaryAccessPass", &pass, HOME).await,
            "130501",
            "OneTimeUsed",
        );

        // Two sign-ins at once with one one-time pass: exactly one succeeds.
        let pass = issue_tap(&server, json!({"lifetimeInMinutes": 60, "isUsableOnce": true})).await;
        let (a, b) = (
            begin(&server, ISAIAH, register_security_info(), HOME).await,
            begin(&server, ISAIAH, register_security_info(), HOME).await,
        );
        let (ra, rb) = tokio::join!(
            step(&server, &a, "temporaryAccessPass", &pass, HOME),
            step(&server, &b, "temporaryAccessPass", &pass, HOME)
        );
        let ok = [&ra, &rb].iter().filter(|r| r.0 == StatusCode::OK).count();
        assert_eq!(ok, 1, "{ra:?} {rb:?}");
        let loser = if ra.0 == StatusCode::OK { rb } else { ra };
        expect_refused(loser, "130501", "OneTimeUsed");

        // A session from a pass ends with the pass.
        let issued_at = now(&server);
        let pass = issue_tap(&server, json!({"lifetimeInMinutes": 60})).await;
        let flow = begin(&server, ISAIAH, register_security_info(), HOME).await;
        let (status, body) = step(&server, &flow, "temporaryAccessPass", &pass, HOME).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let expires = body["session"]["expiresDateTime"].as_str().unwrap();
        assert_eq!(
            gatehouse_core::time::parse(expires),
            Some(issued_at + 60 * 60_000),
            "{}",
            db.label()
        );
        let token = body["session"]["token"].as_str().unwrap().to_owned();
        let policy = "/v1.0/policies/authenticationMethodsPolicy";
        let (status, _) = server.call(Method::GET, policy, Some(&token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a live registration session, not an admin one");
        let (status, _) =
            server.call(Method::POST, "/signin/security-info/totp", Some(&token), None).await;
        assert_eq!(status, StatusCode::CREATED);
        server.clock.advance(60 * 60_000);
        let (status, _) = server.call(Method::GET, policy, Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the session ended with the pass");
        let (status, _) =
            server.call(Method::POST, "/signin/security-info/totp", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Each refusal was logged with its code.
        let codes: Vec<i64> = signin_logs(&server)
            .await
            .iter()
            .map(|l| l["status"]["errorCode"].as_i64().unwrap())
            .collect();
        for code in [130501, 130504, 130507] {
            assert!(codes.contains(&code), "{code} in {codes:?}");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn totp_accepts_one_step_of_drift_and_refuses_replays() {
    for db in TestDb::each("totp_rules").await {
        let server = TestServer::start(&db).await;
        let secret = demo::ADELE_TOTP_SECRET;
        let totp_step = |code: String| {
            let server = &server;
            async move {
                let (flow, status, body) =
                    password(server, ADELE, app(EXPENSES), demo::PASSWORD, HOME).await;
                assert_eq!(
                    (status, body["status"].as_str()),
                    (StatusCode::OK, Some("challenge")),
                    "{body}"
                );
                let (status, body) = step(server, &flow, "totp", &code, HOME).await;
                (flow, status, body)
            }
        };
        let current = totp::step_of(now(&server));
        let (_, status, body) = totp_step(code_at(secret, current - 1)).await;
        assert_eq!(status, StatusCode::OK, "one step behind: {body} ({})", db.label());
        let (_, status, body) = totp_step(code_at(secret, current + 1)).await;
        assert_eq!(status, StatusCode::OK, "one step ahead: {body}");

        server.clock.advance(3 * 30_000);
        let current = totp::step_of(now(&server));
        for off in [-2, 2] {
            let (_, status, body) = totp_step(code_at(secret, current + off)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{off} steps: {body}");
            assert_eq!(body["error"]["code"], "500121");
        }
        let (flow, status, body) = totp_step(code_at(secret, current)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The same code again, in a new sign-in: a replay.
        let (_, status, body) = totp_step(code_at(secret, current)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("already been used"), "{body}");
        // A TOTP step after success, on the finished flow, is refused.
        let (status, body) =
            step(&server, &flow, "totp", &code_at(secret, current + 1), HOME).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("50089"))
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn lockout_locks_the_unfamiliar_scope_and_expires() {
    for db in TestDb::each("lockout").await {
        let server = TestServer::start(&db).await;
        // Adele signs in at home once: loopback becomes familiar.
        let (flow, status, _) = password(&server, ADELE, app(EXPENSES), demo::PASSWORD, HOME).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) =
            step(&server, &flow, "totp", &current_code(&server, demo::ADELE_TOTP_SECRET), HOME)
                .await;
        assert_eq!(status, StatusCode::OK);

        // Someone at another network guesses: five failures lock that scope.
        for i in 0..5 {
            let (_, status, body) =
                password(&server, ADELE, app(EXPENSES), "guess-guess", HQ).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("50126")),
                "{i}"
            );
        }
        let (flow, status, body) =
            password(&server, ADELE, app(EXPENSES), demo::PASSWORD, HQ).await;
        assert_eq!(
            status,
            StatusCode::LOCKED,
            "the right password is refused while locked: {body}"
        );
        assert_eq!(body["error"]["code"], "50053");
        assert_eq!(
            body["error"]["lockedUntil"],
            gatehouse_core::time::format(now(&server) + 60_000)
        );
        assert_eq!(
            with_code(&logs_of(&server, &flow).await, 50053)["userId"],
            ADELE_ID,
            "{}",
            db.label()
        );

        // At home she is not locked out.
        let (_, status, body) = password(&server, ADELE, app(EXPENSES), demo::PASSWORD, HOME).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("challenge")),
            "{body}"
        );

        // The lock ends after the configured time; one more failure locks again, twice as long.
        server.clock.advance(60_000);
        let (_, status, body) = password(&server, ADELE, app(EXPENSES), demo::PASSWORD, HQ).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("challenge")),
            "{body}"
        );
        let (_, status, _) = password(&server, ADELE, app(EXPENSES), "guess-guess", HQ).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, status, body) = password(&server, ADELE, app(EXPENSES), demo::PASSWORD, HQ).await;
        assert_eq!(status, StatusCode::LOCKED);
        assert_eq!(
            body["error"]["lockedUntil"],
            gatehouse_core::time::format(now(&server) + 120_000)
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn throttle_answers_429_with_retry_after() {
    for db in TestDb::each("throttle").await {
        let mut cfg = config();
        cfg.signin.attempts_per_second_per_ip = 1; // a burst of 10
        let server = TestServer::start_with(&db, cfg, ManualClock::at(T0)).await;
        let body = json!({"username": ADELE, "target": app(EXPENSES)});
        let send = |xff: &'static str| {
            let req = server
                .http
                .post(format!("{}/signin/begin", server.base))
                .header("X-Forwarded-For", xff)
                .json(&body);
            async move { req.send().await.unwrap() }
        };
        for _ in 0..10 {
            assert_eq!(send("192.0.2.10").await.status(), StatusCode::OK);
        }
        let refused = send("192.0.2.10").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "{}", db.label());
        assert_eq!(refused.headers()["retry-after"], "1");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "activityLimitReached");
        // Another client is not affected; the budget refills with time.
        assert_eq!(send("192.0.2.11").await.status(), StatusCode::OK);
        server.clock.advance(1_000);
        assert_eq!(send("192.0.2.10").await.status(), StatusCode::OK);
        assert_eq!(send("192.0.2.10").await.status(), StatusCode::TOO_MANY_REQUESTS);
        server.stop().await;
    }
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    for db in TestDb::each("untrusted_xff").await {
        let mut cfg = config();
        cfg.trusted_proxies = Vec::new();
        let server = TestServer::start_with(&db, cfg, ManualClock::at(T0)).await;
        // Claiming France does not block her: the connection is from loopback (GB).
        let (flow, status, body) =
            password(&server, ADELE, app(EXPENSES), demo::PASSWORD, FRANCE).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("challenge")),
            "{body}"
        );
        let log = with_code(&logs_of(&server, &flow).await, 50074);
        assert_eq!(log["ipAddress"], "127.0.0.1", "{}", db.label());
        assert_eq!(log["location"]["countryOrRegion"], "GB");
        assert_eq!(policy_result(&log, P011), "notApplied");
        server.stop().await;
    }
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_look_the_same() {
    for db in TestDb::each("no_enumeration").await {
        let server = TestServer::start(&db).await;
        let nobody = begin(&server, "nobody@contoso.example", app(EXPENSES), HOME).await;
        let adele = begin(&server, ADELE, app(EXPENSES), HOME).await;
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&nobody), keys(&adele));
        assert_eq!(nobody["methods"], adele["methods"]);
        let (s1, e1) = step(&server, &nobody, "password", "wrong-password", HOME).await;
        let (s2, e2) = step(&server, &adele, "password", "wrong-password", HOME).await;
        assert_eq!(
            (s1, s2),
            (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED),
            "{}",
            db.label()
        );
        let strip = |v: &Value| {
            let mut e = v["error"].as_object().unwrap().clone();
            e.remove("correlationId");
            e.remove("innerError");
            e
        };
        assert_eq!(strip(&e1), strip(&e2));
        assert_eq!(e1["error"]["code"], "50126");
        // Unknown users lock as real ones do (lockout reveals nothing either).
        for _ in 0..4 {
            let (_, status, _) =
                password(&server, "nobody@contoso.example", app(EXPENSES), "x-wrong-x", HOME).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let (_, status, body) =
            password(&server, "nobody@contoso.example", app(EXPENSES), "x-wrong-x", HOME).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::LOCKED, Some("50053")));
        let unknown = signin_logs(&server).await;
        assert!(
            unknown.iter().any(
                |l| l["userPrincipalName"] == "nobody@contoso.example" && l["userId"].is_null()
            )
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn users_without_a_second_method_are_sent_to_registration() {
    for db in TestDb::each("registration_required").await {
        let server = TestServer::start(&db).await;
        // Diego has a password only; 001 asks for MFA.
        let (flow, status, body) =
            password(&server, "diego@contoso.example", app(EXPENSES), demo::PASSWORD, HOME).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "registrationRequired", "{}", db.label());
        assert_eq!(body["errorCode"], 50079);
        assert!(body["message"].as_str().unwrap().contains("Temporary Access Pass"));
        assert_eq!(body["policies"][0]["id"], P001);
        assert_eq!(
            with_code(&logs_of(&server, &flow).await, 50079)["conditionalAccessStatus"],
            "failure"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn bad_sign_in_requests_get_clear_errors() {
    for db in TestDb::each("signin_bad_input").await {
        let server = TestServer::start(&db).await;
        let call = |path: &'static str, body: Value| {
            let server = &server;
            async move { server.call(Method::POST, path, None, Some(&body)).await }
        };
        let (status, body) = call("/signin/begin", json!({"username": ADELE})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalidRequest")),
            "{body}"
        );
        let (status, body) = call(
            "/signin/begin",
            json!({"username": ADELE, "target": app("f1000000-0000-4000-8000-0000000000ff")}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("700016")),
            "{body}"
        );
        let resp = server
            .http
            .post(format!("{}/signin/begin", server.base))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{}", db.label());

        let flow = begin(&server, ADELE, app(EXPENSES), HOME).await;
        let path = format!("/signin/{}/password", flow["flowId"].as_str().unwrap());
        let wrong_token = json!({"flowToken": "ghf_not-it", "password": demo::PASSWORD});
        let (status, body) = server.call(Method::POST, &path, None, Some(&wrong_token)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("50089"))
        );
        let (status, body) = server
            .call(Method::POST, "/signin/no-such-flow/password", None, Some(&wrong_token))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("50089"))
        );
        let (status, body) = step(&server, &flow, "totp", "123456", HOME).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a code before a first factor: {body}");
        let extra = json!({"flowToken": flow["flowToken"], "password": demo::PASSWORD, "otp": "1"});
        let (status, _) = server.call(Method::POST, &path, None, Some(&extra)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // The flow expires.
        server.clock.advance(10 * 60_000);
        let (status, body) = step(&server, &flow, "password", demo::PASSWORD, HOME).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("50089"))
        );

        // Registering security info needs a registerSecurityInformation session.
        let (status, body) = server
            .call(
                Method::POST,
                "/signin/security-info/totp",
                Some(&server.admin_token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _) = server.call(Method::POST, "/signin/security-info/totp", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        server.stop().await;
    }
}

#[tokio::test]
async fn disabled_accounts_are_told_only_after_a_right_password() {
    for db in TestDb::each("disabled_account").await {
        let server = TestServer::start(&db).await;
        let path = format!("/v1.0/users/{ADELE_ID}");
        let (status, body) =
            server.admin(Method::PATCH, &path, Some(&json!({"accountEnabled": false}))).await;
        if status != StatusCode::NO_CONTENT {
            // The users route is not served: disable her the way it would.
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
            let state = &server.running.state;
            let mut user = state.dir().user(ADELE_ID).unwrap().raw.clone();
            user.insert("accountEnabled".into(), json!(false));
            let change = Change::PutUser {
                user,
                manager: Some("a0000000-0000-4000-8000-000000000002".into()),
            };
            let w = state.store.begin().await.unwrap();
            w.commit(state.now(), &[change], &[]).await.unwrap();
            state.sync().await.unwrap();
        }
        let (_, status, body) =
            password(&server, ADELE, app(EXPENSES), "wrong-password", HOME).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("50126")),
            "{}",
            db.label()
        );
        let (flow, status, body) =
            password(&server, ADELE, app(EXPENSES), demo::PASSWORD, HOME).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("50057")),
            "{body}"
        );
        assert_eq!(with_code(&logs_of(&server, &flow).await, 50057)["userId"], ADELE_ID);
        server.stop().await;
    }
}

#[tokio::test]
async fn two_steps_at_once_on_one_flow_move_it_once() {
    for db in TestDb::each("flow_race").await {
        let server = TestServer::start(&db).await;
        let flow = begin(&server, ADELE, app(EXPENSES), HOME).await;
        let (a, b) = tokio::join!(
            step(&server, &flow, "password", demo::PASSWORD, HOME),
            step(&server, &flow, "password", demo::PASSWORD, HOME)
        );
        let statuses = [a.0, b.0];
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "{a:?} {b:?} ({})",
            db.label()
        );
        // The other either lost the race to commit (409) or saw the step already passed (400).
        assert!(
            statuses.iter().any(|s| *s == StatusCode::CONFLICT || *s == StatusCode::BAD_REQUEST),
            "{a:?} {b:?}"
        );
        assert_eq!(logs_of(&server, &flow).await.len(), 1, "one challenge logged");
        server.stop().await;
    }
}

#[tokio::test]
async fn device_compliance_comes_from_the_directory() {
    const SHAREPOINT: &str = "00000003-0000-0ff1-ce00-000000000000";
    const P060: &str = "d0000000-0000-4000-8000-000000000060";
    const DEVICE: &str = "e0000000-0000-4000-8000-0000000000aa";
    for db in TestDb::each("device_compliance").await {
        let server = TestServer::start(&db).await;
        let secret = demo::ADELE_TOTP_SECRET;
        // Office 365 off the trusted network: 060 wants a compliant or hybrid-joined device.
        let (flow, status, body) =
            password(&server, ADELE, app(SHAREPOINT), demo::PASSWORD, HOME).await;
        assert_eq!(
            (status, body["methods"].clone()),
            (StatusCode::OK, json!(["totp"])),
            "MFA first: {body}"
        );
        let (status, body) =
            step(&server, &flow, "totp", &current_code(&server, secret), HOME).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body} ({})", db.label());
        assert_eq!(body["error"]["code"], "53000");
        assert_eq!(body["error"]["policy"]["id"], P060);
        assert_eq!(
            policy_result(&with_code(&logs_of(&server, &flow).await, 53000), P060),
            "failure"
        );

        let device = json!({"deviceId": DEVICE, "displayName": "ADELE-LAPTOP", "operatingSystem": "Windows",
                            "isCompliant": true, "trustType": "AzureAd"});
        let (status, created) = server.admin(Method::POST, "/v1.0/devices", Some(&device)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        server.clock.advance(30_000);
        let begin_body = json!({"username": ADELE, "target": app(SHAREPOINT),
                                "client": {"platform": "windows", "deviceId": DEVICE}});
        let (status, flow) =
            server.call(Method::POST, "/signin/begin", None, Some(&begin_body)).await;
        assert_eq!(status, StatusCode::OK, "{flow}");
        let (status, body) = step(&server, &flow, "password", demo::PASSWORD, HOME).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) =
            step(&server, &flow, "totp", &current_code(&server, secret), HOME).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("success")), "{body}");
        let log = with_code(&logs_of(&server, &flow).await, 0);
        assert_eq!(policy_result(&log, P060), "success");
        assert_eq!(log["deviceDetail"]["deviceId"], DEVICE);
        assert_eq!(log["deviceDetail"]["isCompliant"], true);
        assert_eq!(log["deviceDetail"]["displayName"], "ADELE-LAPTOP");
        server.stop().await;
    }
}
