//! No secret leaks. A user is created with a password, gets a Temporary Access Pass, signs in
//! with it, registers the Authenticator app, signs in with password and app code, has the
//! password reset, and uses API and session tokens on the way. Then none of those secrets
//! (passwords, a wrong guess, the pass, the app's secret and codes, flow, session and API
//! tokens) may appear in the server's tracing output at trace level, in any row of any table,
//! in the audit or sign-in log, or in any later response. Each search first finds a value
//! planted where it looks, so a search that could not see a leak cannot pass.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use gatehouse_core::auth::totp;
use gatehouse_server::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;

use crate::server_support::{TestDb, TestServer};

/// Contoso Expenses: policy 001 asks for MFA there.
const EXPENSES: &str = "f1000000-0000-4000-8000-000000000001";
const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
const GLOBAL_READER: &str = "f2ef992c-3afb-46b9-b7cf-a126ee74c451";

/// Everything the process traces, at every level, while a test records.
static RECORDING: AtomicBool = AtomicBool::new(false);

fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        let logs: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = logs.clone();
        // The server's own format (`gatehouse serve`), without colours; decided per event, so
        // nothing is formatted while no test records.
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                RECORDING.load(Ordering::SeqCst)
            }));
        let installed =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        assert!(installed.is_ok(), "another test installed a global tracing subscriber");
        logs
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A secret and where it may legitimately be found.
struct Secret {
    what: &'static str,
    value: String,
}

/// Where `secret` occurs in `text`. A six-digit code counts only as a whole token (not inside
/// a longer run of letters or digits, as timestamps and ids hold by chance).
fn occurs(text: &str, secret: &str) -> bool {
    let code = secret.len() == 6 && secret.bytes().all(|b| b.is_ascii_digit());
    if !code {
        return text.contains(secret);
    }
    text.match_indices(secret).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + secret.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

fn leaks<'s>(text: &str, secrets: &'s [Secret]) -> Vec<&'s str> {
    secrets.iter().filter(|s| occurs(text, &s.value)).map(|s| s.what).collect()
}

/// Every row of every table, each column as text, as `table: col=value …` lines.
async fn dump(server: &TestServer, db: &TestDb) -> Vec<(String, String)> {
    let pool = server.running.state.store.pool();
    let list = match db.backend() {
        crate::server_support::Backend::Sqlite => {
            "SELECT name AS t FROM sqlite_master WHERE type = 'table'"
        }
        crate::server_support::Backend::Postgres => {
            "SELECT tablename::text AS t FROM pg_catalog.pg_tables WHERE schemaname = 'public'"
        }
    };
    let tables: Vec<String> = sqlx::query(list)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>("t").unwrap())
        .collect();
    assert!(tables.len() > 15, "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let sql = format!("SELECT * FROM \"{table}\"");
        for row in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap() {
            let mut line = String::new();
            for i in 0..row.len() {
                let value = row
                    .try_get::<Option<String>, _>(i)
                    .map(|v| v.unwrap_or_default())
                    .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|v| format!("{v:?}")))
                    .or_else(|_| row.try_get::<Option<f64>, _>(i).map(|v| format!("{v:?}")))
                    .or_else(|_| {
                        row.try_get::<Option<Vec<u8>>, _>(i)
                            .map(|v| String::from_utf8_lossy(&v.unwrap_or_default()).into_owned())
                    })
                    .unwrap_or_else(|e| panic!("{table} column {i}: {e}"));
                line.push_str(&value);
                line.push(' ');
            }
            out.push((table.clone(), line));
        }
    }
    out
}

/// Every page of a collection, as one text.
async fn all_pages(server: &TestServer, first: &str, token: &str) -> String {
    let mut text = String::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(url) = next {
        let (status, body) = server.call(Method::GET, &url, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        next = body["@odata.nextLink"].as_str().map(str::to_owned);
        text.push_str(&body.to_string());
        pages += 1;
        assert!(pages < 200, "{first}: paging does not end");
    }
    text
}

async fn begin(server: &TestServer, user: &str, target: Value) -> Value {
    let body = json!({"username": user, "target": target});
    let (status, flow) = server.call(Method::POST, "/signin/begin", None, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    flow
}

async fn step(
    server: &TestServer,
    flow: &Value,
    method: &str,
    secret: &str,
) -> (StatusCode, Value) {
    let key = if method == "password" { "password" } else { "code" };
    let body = json!({"flowToken": flow["flowToken"], key: secret});
    let path = format!("/signin/{}/{method}", flow["flowId"].as_str().unwrap());
    server.call(Method::POST, &path, None, Some(&body)).await
}

fn code_now(server: &TestServer, secret: &str) -> String {
    let secret = totp::Secret::from_base32(secret).unwrap();
    totp::code_at(&secret, totp::step_of(server.clock.now()))
}

/// Signs in to Microsoft Graph with password and app code (a fresh 30-second step each
/// time: a code is accepted once); returns the flow token, the code and the session token.
async fn password_and_code(
    server: &TestServer,
    upn: &str,
    password: &str,
    app_secret: &str,
) -> (String, String, String) {
    server.clock.advance(30_000);
    let flow = begin(server, upn, json!({"appId": GRAPH})).await;
    let (status, body) = step(server, &flow, "password", password).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("challenge")), "{body}");
    let code = code_now(server, app_secret);
    let (status, body) = step(server, &flow, "totp", &code).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("success")), "{body}");
    let session = body["session"]["token"].as_str().unwrap().to_owned();
    (flow["flowToken"].as_str().unwrap().to_owned(), code, session)
}

#[tokio::test]
async fn secrets_never_reach_logs_tables_or_later_responses() {
    let logs = captured();
    RECORDING.store(true, Ordering::SeqCst);
    for db in TestDb::each("secrets_never_reach_logs_tables_or_later_responses").await {
        let server = TestServer::start(&db).await;
        let admin = server.admin_token.clone();
        let unique = gatehouse_server::random::token("");
        let mut secrets = vec![Secret { what: "the admin's API token", value: admin.clone() }];
        let mut keep = |what: &'static str, value: &str| {
            assert!(!value.is_empty(), "{what} is empty");
            secrets.push(Secret { what, value: value.to_owned() });
        };

        // A user with a password.
        let upn = format!("leaky-{}@contoso.example", &unique[..8].to_lowercase());
        let first_password = format!("First-{unique}-9");
        keep("the first password", &first_password);
        let body = json!({"accountEnabled": true, "displayName": "Leaky", "mailNickname": "leaky",
                          "userPrincipalName": upn, "passwordProfile": {"password": first_password}});
        let (status, user) = server.admin(Method::POST, "/v1.0/users", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        let id = user["id"].as_str().unwrap().to_owned();

        // A pass, a sign-in with it, and the Authenticator app registered with that session.
        let path = format!("/v1.0/users/{id}/authentication/temporaryAccessPassMethods");
        let (status, tap) = server.admin(Method::POST, &path, Some(&json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{tap}");
        let pass = tap["temporaryAccessPass"].as_str().unwrap().to_owned();
        keep("the Temporary Access Pass", &pass);
        let flow = begin(&server, &upn, json!({"userAction": "registerSecurityInformation"})).await;
        keep("a flow token (pass)", flow["flowToken"].as_str().unwrap());
        let (status, body) = step(&server, &flow, "temporaryAccessPass", &pass).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let registration = body["session"]["token"].as_str().unwrap().to_owned();
        keep("the registration session token", &registration);
        let (status, reg) = server
            .call(Method::POST, "/signin/security-info/totp", Some(&registration), Some(&json!({})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        let app_secret = reg["secret"].as_str().unwrap().to_owned();
        let verify_code = code_now(&server, &app_secret);
        keep("the code that verified the app", &verify_code);
        let path = format!("/signin/security-info/totp/{}/verify", reg["id"].as_str().unwrap());
        let (status, body) = server
            .call(Method::POST, &path, Some(&registration), Some(&json!({"code": verify_code})))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

        // A wrong guess first, then password and app code.
        let guess = format!("Guess-{unique}-1");
        keep("a wrong password", &guess);
        let flow = begin(&server, &upn, json!({"appId": EXPENSES})).await;
        keep("a flow token (wrong guess)", flow["flowToken"].as_str().unwrap());
        let (status, body) = step(&server, &flow, "password", &guess).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(!occurs(&body.to_string(), &guess), "the refusal echoes the guess: {body}");
        let (flow_token, code, session) =
            password_and_code(&server, &upn, &first_password, &app_secret).await;
        keep("a flow token (password)", &flow_token);
        keep("a sign-in code", &code);
        keep("an app session token", &session);
        // The session works where the user's role allows.
        let assignment = json!({"principalId": id, "roleDefinitionId": GLOBAL_READER});
        let (status, body) = server
            .admin(
                Method::POST,
                "/v1.0/roleManagement/directory/roleAssignments",
                Some(&assignment),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) =
            server.call(Method::GET, "/v1.0/users/$count", Some(&session), None).await;
        assert_eq!(status, StatusCode::OK);

        // A password reset ends the session; the new password works.
        let second_password = format!("Second-{unique}-8");
        keep("the reset password", &second_password);
        let reset = json!({"passwordProfile": {"password": second_password,
                                               "forceChangePasswordNextSignIn": false}});
        let (status, body) =
            server.admin(Method::PATCH, &format!("/v1.0/users/{id}"), Some(&reset)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let (status, _) =
            server.call(Method::GET, "/v1.0/users/$count", Some(&session), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (flow_token, code, session) =
            password_and_code(&server, &upn, &second_password, &app_secret).await;
        keep("a flow token (reset password)", &flow_token);
        keep("a sign-in code after the reset", &code);
        keep("a session token after the reset", &session);
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&session), None).await;
        assert_eq!(status, StatusCode::OK);

        // Each search finds what is planted where it looks.
        let planted = format!("planted-{unique}");
        tracing::debug!(value = %planted, "a planted log line");
        let group = json!({"displayName": planted, "mailEnabled": false,
                           "mailNickname": "planted", "securityEnabled": true});
        let (status, body) = server.admin(Method::POST, "/v1.0/groups", Some(&group)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        // The tables: the app's secret lives in its method's row (the server needs it to
        // check codes) and nowhere else; nothing else anywhere.
        let rows = dump(&server, &db).await;
        assert!(rows.iter().any(|(_, r)| r.contains(&planted)), "the dump sees the tables");
        for (table, row) in &rows {
            let found = leaks(row, &secrets);
            assert!(found.is_empty(), "{}: table {table} holds {found:?}: {row}", db.label());
            if table != "totp_methods" {
                assert!(!row.contains(&app_secret), "{}: {table} holds the app secret", db.label());
            }
        }
        let methods: Vec<&String> =
            rows.iter().filter(|(t, _)| t == "totp_methods").map(|(_, r)| r).collect();
        assert!(methods.iter().any(|r| r.contains(&app_secret)), "the app secret is kept");

        // The logs, and every later read.
        let mut responses = String::new();
        for path in [
            "/v1.0/auditLogs/directoryAudits?$top=50".to_owned(),
            "/v1.0/auditLogs/signIns?$top=50".to_owned(),
            "/v1.0/users?$top=50".to_owned(),
            "/v1.0/groups?$top=50".to_owned(),
            format!("/v1.0/users/{id}/authentication/methods"),
            format!("/v1.0/users/{id}/authentication/temporaryAccessPassMethods"),
            format!("/v1.0/users/{id}/authentication/passwordMethods"),
            format!("/v1.0/users/{id}/authentication/softwareOathMethods"),
        ] {
            responses.push_str(&all_pages(&server, &path, &admin).await);
        }
        for path in [
            format!("/v1.0/users/{id}"),
            format!("/v1.0/users/{upn}"),
            format!(
                "/v1.0/users/{id}/authentication/temporaryAccessPassMethods/{}",
                tap["id"].as_str().unwrap()
            ),
            format!(
                "/v1.0/users/{id}/authentication/softwareOathMethods/{}",
                reg["id"].as_str().unwrap()
            ),
            format!("/v1.0/users/{id}/authentication/methods/{}", reg["id"].as_str().unwrap()),
        ] {
            let (status, body) = server.admin(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            responses.push_str(&body.to_string());
        }
        assert!(responses.contains(&planted), "the responses are searched");
        assert!(responses.contains("Reset user password"), "the audit log was read");
        assert!(responses.contains(&upn), "the sign-in log was read");
        let found = leaks(&responses, &secrets);
        assert!(found.is_empty(), "{}: later responses hold {found:?}", db.label());
        assert!(
            !responses.contains(&app_secret),
            "{}: a later response holds the app secret",
            db.label()
        );

        server.stop().await;
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        assert!(text.contains(&planted), "the captured logs hold the planted line");
        assert!(text.contains("sqlx::query"), "the logs are at debug level and below");
        let found = leaks(&text, &secrets);
        assert!(found.is_empty(), "{}: the logs hold {found:?}", db.label());
        assert!(!text.contains(&app_secret), "{}: the logs hold the app secret", db.label());
    }
    RECORDING.store(false, Ordering::SeqCst);
}
