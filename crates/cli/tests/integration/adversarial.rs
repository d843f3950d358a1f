//! Hostile and unlucky clients: malformed requests the framework answers itself, characters the
//! store cannot keep, administrators reaching above their role, writes racing each other, and a
//! restart in the middle of it all. Each test runs on SQLite, and all but the parser's on
//! PostgreSQL too when `GATEHOUSE_TEST_DATABASE_URL` is set.

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_core::Change;
use gatehouse_core::auth::secret;
use gatehouse_core::roles::Role;
use gatehouse_server::demo;
use gatehouse_server::http::directory::{assignment_json, device_json, group_json, user_json};
use gatehouse_server::session::{Session, SessionKind};
use gatehouse_server::state::AppState;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server_support::{T0, TestDb, TestServer};

const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
const ISAIAH: &str = "a0000000-0000-4000-8000-000000000004";
const NESTOR: &str = "a0000000-0000-4000-8000-000000000007";
const TRAVEL: &str = "b0000000-0000-4000-8000-000000000003";
const POLICY_001: &str = "d0000000-0000-4000-8000-000000000001";
const EXPENSES: &str = "f1000000-0000-4000-8000-000000000001";

/// A response read whole: status, `Content-Type`, and the body as text.
struct Raw {
    status: StatusCode,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Raw {
    /// Asserts Graph's error body (`{"error": {"code", "message", "innerError"}}` as JSON) with
    /// this status; returns the code.
    fn graph_error(&self, want: StatusCode, what: &str) -> String {
        assert_eq!(self.status, want, "{what}: {}", self.text);
        assert!(
            self.content_type.starts_with("application/json"),
            "{what}: content type `{}`, body `{}`",
            self.content_type,
            self.text
        );
        let body: Value = serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): `{}`", self.text));
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
        assert!(body["error"]["innerError"]["request-id"].is_string(), "{what}: {body}");
        body["error"]["code"].as_str().unwrap_or_else(|| panic!("{what}: {body}")).to_owned()
    }
}

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Raw {
    let mut req = server.http.request(method, format!("{}{path}", server.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((content_type, bytes)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let content_type =
        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Raw { status, content_type, headers, text: resp.text().await.unwrap() }
}

/// Sends `request` as bytes on a fresh connection and returns the status and the body, for
/// requests a client library would not send (chunked bodies of a chosen size, odd headers).
async fn wire(server: &TestServer, request: &[u8]) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(server.running.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The server may answer before it has read the whole body: write and read at once, and
    // stop writing once it stops reading.
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = read.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if response_complete(&out) {
            break;
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Whether `bytes` hold a whole response: headers and `Content-Length` bytes of body.
fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|n| body.len() >= n)
}

/// A new user holding `role` (directly), with an API token.
async fn holder_of(server: &TestServer, role: Option<Role>, name: &str) -> (String, String) {
    let id = gatehouse_server::random::guid();
    let mut changes = vec![Change::PutUser {
        user: json!({"id": id, "userPrincipalName": format!("{name}@contoso.example"),
                     "displayName": name, "accountEnabled": true})
        .as_object()
        .unwrap()
        .clone(),
        manager: None,
    }];
    if let Some(r) = role {
        changes.push(Change::PutRoleAssignment {
            assignment: json!({"id": gatehouse_server::random::guid(), "principalId": id,
                               "roleDefinitionId": r.template_id(), "directoryScopeId": "/"})
            .as_object()
            .unwrap()
            .clone(),
        });
    }
    let token = api_token(server, &id, &changes).await;
    (id, token)
}

/// An API token for `user`, committed with `changes`.
async fn api_token(server: &TestServer, user: &str, changes: &[Change]) -> String {
    let state = &server.running.state;
    let token = gatehouse_server::random::token("gh_");
    let session = Session {
        id: gatehouse_server::random::guid(),
        user_id: user.to_owned(),
        kind: SessionKind::ApiToken,
        created_at: T0,
        expires_at: None,
        methods: vec![],
        tap_id: None,
        target: None,
    };
    let mut w = state.store.begin().await.unwrap();
    w.insert_session(&secret::hash(&token), &session).await.unwrap();
    w.commit(T0, changes, &[]).await.unwrap();
    state.sync().await.unwrap();
    token
}

fn new_user(upn: &str) -> Value {
    json!({"accountEnabled": true, "displayName": upn, "mailNickname": upn.split('@').next().unwrap(),
           "userPrincipalName": upn, "passwordProfile": {"password": "Correct-Horse-9"}})
}

fn member_ref(server: &TestServer, id: &str) -> Value {
    json!({"@odata.id": format!("{}/v1.0/directoryObjects/{id}", server.base)})
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn framework_refusals_are_graph_errors_too() {
    for db in TestDb::each("framework_refusals_are_graph_errors_too").await {
        let server = TestServer::start(&db).await;
        let token = server.admin_token.clone();
        let t = Some(token.as_str());
        // A method the route does not serve: 405, Graph's body, and `Allow` kept.
        for (method, path) in [
            (Method::PUT, "/v1.0/users"),
            (Method::DELETE, "/v1.0/users"),
            (Method::POST, "/healthz"),
            (Method::GET, "/signin/begin"),
            (Method::PUT, "/v1.0/identity/conditionalAccess/policies"),
        ] {
            let r = raw(&server, method.clone(), path, t, None).await;
            r.graph_error(StatusCode::METHOD_NOT_ALLOWED, &format!("{method} {path}"));
            assert!(r.headers.contains_key("allow"), "{method} {path}: Allow is kept");
        }
        // A body over the limit (256 KiB by default): 413 with Graph's body, whether the
        // length is announced or the body streams in chunks.
        let big = vec![b' '; 300 * 1024];
        for path in ["/v1.0/users", "/signin/begin", "/v1.0/identity/conditionalAccess/policies"] {
            let r =
                raw(&server, Method::POST, path, t, Some(("application/json", big.clone()))).await;
            assert_eq!(
                r.graph_error(StatusCode::PAYLOAD_TOO_LARGE, path),
                "requestTooLarge",
                "{path}"
            );
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n{}0\r\n\r\n",
                chunk.repeat(5)
            );
            let (status, body) = wire(&server, request.as_bytes()).await;
            assert_eq!(status, 413, "{path} chunked: {body}");
            let body: Value = serde_json::from_str(body.trim())
                .unwrap_or_else(|e| panic!("{path} chunked: not JSON ({e}): {body}"));
            assert_eq!(body["error"]["code"], "requestTooLarge", "{body}");
        }
        // Path segments that are not UTF-8 once decoded: 400 with Graph's body.
        for path in [
            "/v1.0/directoryObjects/%C0%AF",
            "/v1.0/users/%FF%FE",
            &*format!("/v1.0/groups/{TRAVEL}/members/%FF/$ref"),
            "/v1.0/auditLogs/signIns/%E2%82",
        ] {
            let method = if path.ends_with("$ref") { Method::DELETE } else { Method::GET };
            raw(&server, method, path, t, None).await.graph_error(StatusCode::BAD_REQUEST, path);
        }
        // Traversal-looking and odd ids are just ids that name nothing.
        for path in [
            "/v1.0/users/..%2F..%2Fetc%2Fpasswd",
            "/v1.0/users/%2E%2E",
            "/v1.0/groups/'%20or%201=1--",
            "/v1.0/identity/conditionalAccess/policies/..%5C..%5Cwin.ini",
            "/v1.0/users/%F0%9F%98%80",
        ] {
            raw(&server, Method::GET, path, t, None).await.graph_error(StatusCode::NOT_FOUND, path);
        }
        // Wrong content types and empty bodies are read as what they are.
        let r = raw(
            &server,
            Method::POST,
            "/v1.0/users",
            t,
            Some(("text/plain", b"displayName=x".to_vec())),
        )
        .await;
        r.graph_error(StatusCode::BAD_REQUEST, "a form body");
        let r =
            raw(&server, Method::POST, "/v1.0/groups", t, Some(("application/json", vec![]))).await;
        r.graph_error(StatusCode::BAD_REQUEST, "an empty create");
        server.stop().await;
    }
}

#[tokio::test]
async fn nul_characters_are_refused_before_they_reach_the_store() {
    for db in TestDb::each("nul_characters_are_refused_before_they_reach_the_store").await {
        let server = TestServer::start(&db).await;
        let t = Some(server.admin_token.as_str());
        let json = |v: Value| Some(("application/json", v.to_string().into_bytes()));
        // In bodies: a sign-in username (stored in the sign-in log), a display name, a key.
        let begin =
            json!({"username": "nobody\u{0}@contoso.example", "target": {"appId": EXPENSES}});
        raw(&server, Method::POST, "/signin/begin", None, json(begin))
            .await
            .graph_error(StatusCode::BAD_REQUEST, "a NUL in a username");
        let group = json!({"displayName": "g\u{0}", "mailEnabled": false, "mailNickname": "gnul",
                           "securityEnabled": true});
        raw(&server, Method::POST, "/v1.0/groups", t, json(group))
            .await
            .graph_error(StatusCode::BAD_REQUEST, "a NUL in a display name");
        raw(
            &server,
            Method::PATCH,
            &format!("/v1.0/users/{ADELE}"),
            t,
            json(json!({"job\u{0}": 1})),
        )
        .await
        .graph_error(StatusCode::BAD_REQUEST, "a NUL in a key");
        // In the query string and the path of routes that query the store with them.
        for path in [
            "/v1.0/auditLogs/signIns?$filter=userPrincipalName%20eq%20'a%00b'",
            "/v1.0/auditLogs/directoryAudits?$filter=category%20eq%20'a%00b'",
            "/v1.0/auditLogs/signIns/a%00b",
            "/v1.0/auditLogs/directoryAudits/a%00b",
            "/v1.0/users/a%00b",
        ] {
            raw(&server, Method::GET, path, t, None)
                .await
                .graph_error(StatusCode::BAD_REQUEST, &format!("{path} ({})", db.label()));
        }
        // A sign-in that got through with a control character elsewhere is still logged.
        let begin =
            json!({"username": "nobody\u{1}@contoso.example", "target": {"appId": EXPENSES}});
        let (status, flow) = server.call(Method::POST, "/signin/begin", None, Some(&begin)).await;
        assert_eq!(status, StatusCode::OK, "{flow}");
        let body = json!({"flowToken": flow["flowToken"], "password": "wrong-password"});
        let path = format!("/signin/{}/password", flow["flowId"].as_str().unwrap());
        let (status, body) = server.call(Method::POST, &path, None, Some(&body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body} ({})", db.label());
        server.stop().await;
    }
}

#[tokio::test]
async fn duplicate_keys_and_unicode_in_bodies() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let t = Some(server.admin_token.as_str());
    // Two values for one key: which one counts would depend on the parser; refuse it.
    let body = br#"{"accountEnabled": true, "displayName": "Dup", "mailNickname": "dup",
        "userPrincipalName": "dup1@contoso.example", "userPrincipalName": "dup2@contoso.example",
        "passwordProfile": {"password": "Correct-Horse-9"}}"#;
    let r = raw(&server, Method::POST, "/v1.0/users", t, Some(("application/json", body.to_vec())))
        .await;
    r.graph_error(StatusCode::BAD_REQUEST, "a duplicate key");
    assert!(r.text.contains("userPrincipalName"), "the message names the key: {}", r.text);
    let nested = br#"{"flowToken": "x", "password": "a", "password": "b"}"#;
    let r = raw(
        &server,
        Method::POST,
        "/signin/00000000-0000-4000-8000-000000000000/password",
        None,
        Some(("application/json", nested.to_vec())),
    )
    .await;
    r.graph_error(StatusCode::BAD_REQUEST, "a duplicate key in a sign-in step");
    for upn in ["dup1@contoso.example", "dup2@contoso.example"] {
        let (status, _) = server.admin(Method::GET, &format!("/v1.0/users/{upn}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{upn} was not created");
    }
    // Unicode round-trips, and a name that differs only in case is the same name.
    let (status, created) = server
        .admin(Method::POST, "/v1.0/users", Some(&new_user("zoë.ünï😀@contoso.example")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, got) =
        server.admin(Method::GET, "/v1.0/users/ZOË.ÜNÏ😀@contoso.example", None).await;
    assert_eq!((status, got["id"].clone()), (StatusCode::OK, created["id"].clone()), "{got}");
    let (status, body) = server
        .admin(Method::POST, "/v1.0/users", Some(&new_user("ZOË.ünï😀@CONTOSO.example")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Authorization

#[tokio::test]
async fn groups_that_confer_roles_are_managed_by_global_administrators_only() {
    for db in TestDb::each("groups_that_confer_roles").await {
        let server = TestServer::start(&db).await;
        // A role-assignable group holding Global Administrator.
        let group = json!({"displayName": "Tier0", "mailEnabled": false, "mailNickname": "tier0",
                           "securityEnabled": true, "isAssignableToRole": true});
        let (status, tier0) = server.admin(Method::POST, "/v1.0/groups", Some(&group)).await;
        assert_eq!(status, StatusCode::CREATED, "{tier0}");
        let tier0 = tier0["id"].as_str().unwrap().to_owned();
        let assignment = json!({"principalId": tier0, "roleDefinitionId": Role::GlobalAdministrator.template_id(),
                                "directoryScopeId": "/"});
        let (status, body) = server
            .admin(
                Method::POST,
                "/v1.0/roleManagement/directory/roleAssignments",
                Some(&assignment),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // A plain group nested into it confers Global Administrator too.
        let group = json!({"displayName": "Helpers", "mailEnabled": false, "mailNickname": "helpers",
                           "securityEnabled": true});
        let (status, helpers) = server.admin(Method::POST, "/v1.0/groups", Some(&group)).await;
        assert_eq!(status, StatusCode::CREATED, "{helpers}");
        let helpers = helpers["id"].as_str().unwrap().to_owned();
        let path = format!("/v1.0/groups/{tier0}/members/$ref");
        let (status, body) =
            server.admin(Method::POST, &path, Some(&member_ref(&server, &helpers))).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

        for role in [Role::GroupsAdministrator, Role::UserAdministrator] {
            let name = format!("climber-{}", role.display_name().replace(' ', "-").to_lowercase());
            let (me, token) = holder_of(&server, Some(role), &name).await;
            let t = Some(token.as_str());
            let me_ref = member_ref(&server, &me);
            for group in [&tier0, &helpers] {
                let add = format!("/v1.0/groups/{group}/members/$ref");
                let (status, body) = server.call(Method::POST, &add, t, Some(&me_ref)).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} joins {group}: {body}");
                let bind = json!({"members@odata.bind": [me_ref["@odata.id"]]});
                let (status, body) = server
                    .call(Method::PATCH, &format!("/v1.0/groups/{group}"), t, Some(&bind))
                    .await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} binds into {group}: {body}");
                let (status, body) =
                    server.call(Method::DELETE, &format!("/v1.0/groups/{group}"), t, None).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} deletes {group}: {body}");
            }
            let remove = format!("/v1.0/groups/{tier0}/members/{helpers}/$ref");
            let (status, body) = server.call(Method::DELETE, &remove, t, None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} removes from tier0: {body}");
            let create = json!({"displayName": "Mine", "mailEnabled": false, "mailNickname": "mine",
                                "securityEnabled": true, "isAssignableToRole": true,
                                "members@odata.bind": [me_ref["@odata.id"]]});
            let (status, body) = server.call(Method::POST, "/v1.0/groups", t, Some(&create)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} creates a role group: {body}");
            // Still no more than their own role, and ordinary groups are theirs to manage.
            let (status, _) = server
                .call(Method::GET, "/v1.0/roleManagement/directory/roleAssignments", t, None)
                .await;
            assert_eq!(status, StatusCode::OK);
            let (status, _) = server
                .call(
                    Method::POST,
                    &format!("/v1.0/groups/{TRAVEL}/members/$ref"),
                    t,
                    Some(&me_ref),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{role:?} manages an ordinary group");
            let (status, body) = server
                .call(
                    Method::DELETE,
                    &format!("/v1.0/identity/conditionalAccess/policies/{POLICY_001}"),
                    t,
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        }
        // A Global Administrator may.
        let (isaiah_ref, path) =
            (member_ref(&server, ISAIAH), format!("/v1.0/groups/{tier0}/members/$ref"));
        let (status, body) = server.admin(Method::POST, &path, Some(&isaiah_ref)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn user_administrators_cannot_take_over_administrators() {
    for db in TestDb::each("user_administrators_cannot_take_over_administrators").await {
        let server = TestServer::start(&db).await;
        let (_, token) = holder_of(&server, Some(Role::UserAdministrator), "useradmin").await;
        let (other_ua, _) = holder_of(&server, Some(Role::UserAdministrator), "other-ua").await;
        let (ca_admin, _) =
            holder_of(&server, Some(Role::ConditionalAccessAdministrator), "ca-admin").await;
        let t = Some(token.as_str());
        for target in [NESTOR, ca_admin.as_str()] {
            let path = format!("/v1.0/users/{target}");
            for patch in [
                json!({"passwordProfile": {"password": "Taken-Over-123"}}),
                json!({"accountEnabled": false}),
                json!({"userPrincipalName": "renamed@contoso.example"}),
                json!({"displayName": "Renamed"}),
            ] {
                let (status, body) = server.call(Method::PATCH, &path, t, Some(&patch)).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{target} {patch}: {body}");
            }
            let (status, body) = server.call(Method::DELETE, &path, t, None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "delete {target}: {body}");
        }
        // The password still works: nothing changed.
        let flow = json!({"username": "nestor@contoso.example", "target": {"appId": EXPENSES}});
        let (_, flow) = server.call(Method::POST, "/signin/begin", None, Some(&flow)).await;
        let body = json!({"flowToken": flow["flowToken"], "password": demo::PASSWORD});
        let path = format!("/signin/{}/password", flow["flowId"].as_str().unwrap());
        let (status, body) = server.call(Method::POST, &path, None, Some(&body)).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");
        // Ordinary users and other User Administrators are theirs to manage.
        for target in [ADELE, other_ua.as_str()] {
            let patch = json!({"passwordProfile": {"password": "Reset-By-UA-123"}});
            let (status, body) =
                server.call(Method::PATCH, &format!("/v1.0/users/{target}"), t, Some(&patch)).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{target}: {body}");
        }
        // An Authentication Administrator may not issue a pass to an administrator.
        let (_, auth_admin) =
            holder_of(&server, Some(Role::AuthenticationAdministrator), "authadmin").await;
        let path = format!("/v1.0/users/{other_ua}/authentication/temporaryAccessPassMethods");
        let (status, body) =
            server.call(Method::POST, &path, Some(&auth_admin), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn the_last_global_administrator_is_neither_deleted_nor_disabled() {
    for db in TestDb::each("the_last_global_administrator_is_neither_deleted_nor_disabled").await {
        let server = TestServer::start(&db).await;
        // Leave Nestor the only Global Administrator (the break-glass accounts lose theirs).
        let path = format!(
            "/v1.0/roleManagement/directory/roleAssignments?$filter=roleDefinitionId%20eq%20'{}'",
            Role::GlobalAdministrator.template_id()
        );
        let (_, list) = server.admin(Method::GET, &path, None).await;
        for a in list["value"].as_array().unwrap().iter().filter(|a| a["principalId"] != NESTOR) {
            let one = format!(
                "/v1.0/roleManagement/directory/roleAssignments/{}",
                a["id"].as_str().unwrap()
            );
            let (status, body) = server.admin(Method::DELETE, &one, None).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
        let me = format!("/v1.0/users/{NESTOR}");
        let (status, body) =
            server.admin(Method::PATCH, &me, Some(&json!({"accountEnabled": false}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body} ({})", db.label());
        let (status, body) = server.admin(Method::DELETE, &me, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _) = server.admin(Method::GET, "/v1.0/users/$count", None).await;
        assert_eq!(status, StatusCode::OK, "still administered");
        // With another one, either may go.
        let (other, _) = holder_of(&server, Some(Role::GlobalAdministrator), "second-ga").await;
        let (status, body) =
            server.admin(Method::DELETE, &format!("/v1.0/users/{other}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn tokens_follow_their_user_and_roles() {
    for db in TestDb::each("tokens_follow_their_user_and_roles").await {
        let server = TestServer::start(&db).await;
        let (reader, token) = holder_of(&server, Some(Role::GlobalReader), "reader").await;
        let t = Some(token.as_str());
        let (status, _) = server.call(Method::GET, "/v1.0/users", t, None).await;
        assert_eq!(status, StatusCode::OK);
        // Only `Authorization: Bearer` carries a token; scheme case and extra spaces are fine.
        for query in ["access_token", "token", "$token"] {
            let r = raw(&server, Method::GET, &format!("/v1.0/users?{query}={token}"), None, None)
                .await;
            r.graph_error(StatusCode::UNAUTHORIZED, query);
        }
        for (header, ok) in [
            (format!("bearer {token}"), true),
            (format!("Bearer  {token}"), true),
            (format!("Bearer {token} "), true),
            (format!("Bearer\t{token}"), false),
            (format!("Basic {token}"), false),
            (format!("Bearer {token} {token}"), false),
            (format!("Bearer {token},Bearer x"), false),
            (token.clone(), false),
            ("Bearer".to_owned(), false),
        ] {
            let request = format!(
                "GET /v1.0/users/$count HTTP/1.1\r\nHost: x\r\nAuthorization: {header}\r\n\
                 Connection: close\r\n\r\n"
            );
            let (status, body) = wire(&server, request.as_bytes()).await;
            assert_eq!(status == 200, ok, "`{header}`: {status} {body}");
        }
        // A role removed takes effect on the next request.
        let (status, list) = server
            .admin(
                Method::GET,
                &format!("/v1.0/roleManagement/directory/roleAssignments?$filter=principalId%20eq%20'{reader}'"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let assignment = list["value"][0]["id"].as_str().unwrap().to_owned();
        let (status, _) = server
            .admin(
                Method::DELETE,
                &format!("/v1.0/roleManagement/directory/roleAssignments/{assignment}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = server.call(Method::GET, "/v1.0/users", t, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        // Disabled: 401 at once, and enabling again does not revive the token.
        let (uid, token2) = holder_of(&server, Some(Role::GlobalReader), "reader2").await;
        for enabled in [false, true] {
            let (status, _) = server
                .admin(
                    Method::PATCH,
                    &format!("/v1.0/users/{uid}"),
                    Some(&json!({"accountEnabled": enabled})),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&token2), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "enabled: {enabled}");
        }
        // Deleted: 401, and a new user of the same name does not inherit the token.
        let (uid3, token3) = holder_of(&server, Some(Role::GlobalReader), "reader3").await;
        let (status, _) = server.admin(Method::DELETE, &format!("/v1.0/users/{uid3}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = server
            .admin(Method::POST, "/v1.0/users", Some(&new_user("reader3@contoso.example")))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&token3), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // A session granted for registering security info is no admin session, even for a
        // Global Administrator.
        let session = Session {
            id: gatehouse_server::random::guid(),
            user_id: NESTOR.into(),
            kind: SessionKind::SignIn,
            created_at: T0,
            expires_at: Some(T0 + 3_600_000),
            methods: vec!["temporaryAccessPass".into()],
            tap_id: None,
            target: Some("userAction:registersecurityinfo".into()),
        };
        let registration = gatehouse_server::random::token("ghs_");
        let mut w = server.running.state.store.begin().await.unwrap();
        w.insert_session(&secret::hash(&registration), &session).await.unwrap();
        w.commit(T0, &[], &[]).await.unwrap();
        let r = Some(registration.as_str());
        for (method, path) in [
            (Method::GET, "/v1.0/users".to_owned()),
            (Method::PATCH, format!("/v1.0/users/{ADELE}")),
            (Method::GET, "/v1.0/auditLogs/signIns".to_owned()),
        ] {
            let (status, body) = server.call(method.clone(), &path, r, Some(&json!({}))).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        }
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Races

#[tokio::test]
async fn a_revocation_racing_a_first_use_of_the_token_wins() {
    for db in TestDb::each("a_revocation_racing_a_first_use_of_the_token_wins").await {
        let server = TestServer::start(&db).await;
        let (user, token) = holder_of(&server, Some(Role::GlobalReader), "racing-reader").await;
        let state = &server.running.state;
        // A first use of the token reads its session from the store (not cached yet)…
        let hash = secret::hash(&token);
        let seen = state.session_revocations();
        let read = state.store.find_session(&hash).await.unwrap();
        assert!(read.is_some());
        // …the password is reset before it gets to cache what it read…
        let reset = json!({"passwordProfile": {"password": "Reset-While-Reading-1"}});
        let (status, body) =
            server.admin(Method::PATCH, &format!("/v1.0/users/{user}"), Some(&reset)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        // …and then it does: the revocation must still hold.
        state.remember_session(seen, &hash, read);
        let (status, _) = server.call(Method::GET, "/v1.0/users/$count", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token lives on in the cache");
        server.stop().await;
    }
}

/// Runs `n` copies of `f` at once on the multi-thread runtime; returns their results in order.
async fn at_once<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let fut = f(i);
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            fut.await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(statuses: &[StatusCode], s: StatusCode) -> usize {
    statuses.iter().filter(|x| **x == s).count()
}

/// A request as an owned future (for `at_once`).
fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> impl std::future::Future<Output = (StatusCode, Value)> + Send + 'static + use<> {
    let (http, url, token) =
        (server.http.clone(), format!("{}{path}", server.base), server.admin_token.clone());
    async move {
        let mut req = http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// How many `Add member to group` records name CA-Internals-Travel.
async fn membership_adds(server: &TestServer) -> usize {
    let path = format!(
        "/v1.0/auditLogs/directoryAudits?$filter=targetResources/any(t:t/id%20eq%20'{TRAVEL}')&$top=999"
    );
    let (status, audits) = server.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{audits}");
    let entries = audits["value"].as_array().unwrap();
    entries.iter().filter(|a| a["activityDisplayName"] == "Add member to group").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_and_membership_changes_each_happen_once() {
    for db in TestDb::each("racing_creates_and_membership_changes_each_happen_once").await {
        let server = TestServer::start(&db).await;
        let adds_before = membership_adds(&server).await;
        for round in 0..3 {
            let upn = format!("racer{round}@contoso.example");
            let results = at_once(6, |i| {
                // Different spellings of one name.
                let upn = if i % 2 == 0 { upn.clone() } else { upn.to_uppercase() };
                send(&server, Method::POST, "/v1.0/users", Some(new_user(&upn)))
            })
            .await;
            let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
            assert_eq!(count(&statuses, StatusCode::CREATED), 1, "{results:?} ({})", db.label());
            assert!(statuses.iter().all(|s| matches!(s.as_u16(), 201 | 400 | 409)), "{results:?}");
            let users = server
                .running
                .state
                .dir()
                .users()
                .filter(|u| {
                    u.user_principal_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&upn))
                })
                .count();
            assert_eq!(users, 1);

            // The same member added at once: once; removed at once: once.
            let add = format!("/v1.0/groups/{TRAVEL}/members/$ref");
            let adele = member_ref(&server, ADELE);
            let results =
                at_once(6, |_| send(&server, Method::POST, &add, Some(adele.clone()))).await;
            let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
            assert_eq!(count(&statuses, StatusCode::NO_CONTENT), 1, "{results:?} ({})", db.label());
            assert_eq!(count(&statuses, StatusCode::BAD_REQUEST), 5, "{results:?}");
            let remove = format!("/v1.0/groups/{TRAVEL}/members/{ADELE}/$ref");
            let results = at_once(6, |_| send(&server, Method::DELETE, &remove, None)).await;
            let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
            assert_eq!(count(&statuses, StatusCode::NO_CONTENT), 1, "{results:?} ({})", db.label());
            assert_eq!(count(&statuses, StatusCode::NOT_FOUND), 5, "{results:?}");
            let adds = membership_adds(&server).await;
            assert_eq!(adds, adds_before + round + 1, "one audit record per member added");
        }
        // Adds and removes of several members interleaved, then the store read back from
        // scratch agrees with what this node holds.
        let members: Vec<String> =
            (0..4).map(|i| format!("a0000000-0000-4000-8000-00000000000{}", i + 1)).collect();
        for _ in 0..4 {
            at_once(8, |i| {
                let m = &members[i % members.len()];
                if i < 4 {
                    send(
                        &server,
                        Method::POST,
                        &format!("/v1.0/groups/{TRAVEL}/members/$ref"),
                        Some(member_ref(&server, m)),
                    )
                } else {
                    send(
                        &server,
                        Method::DELETE,
                        &format!("/v1.0/groups/{TRAVEL}/members/{m}/$ref"),
                        None,
                    )
                }
            })
            .await;
        }
        let memory = fingerprint(&server.running.state).await;
        let server = server.restart(&db).await;
        assert_same(&memory, &fingerprint(&server.running.state).await, db.label());
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_patches_of_one_policy_keep_every_change() {
    for db in TestDb::each("racing_patches_of_one_policy_keep_every_change").await {
        let server = TestServer::start(&db).await;
        let path = format!("/v1.0/identity/conditionalAccess/policies/{POLICY_001}");
        for round in 0..3 {
            let level = ["high", "medium", "low"][round];
            let patches = [
                json!({"displayName": format!("renamed-{round}")}),
                json!({"state": if round % 2 == 0 { "disabled" } else { "enabledForReportingButNotEnforced" }}),
                json!({"conditions": {"signInRiskLevels": [level]}}),
                json!({"conditions": {"userRiskLevels": [level]}}),
                json!({"sessionControls": {"signInFrequency": {"isEnabled": true, "type": "hours", "value": round + 1, "frequencyInterval": "timeBased"}}}),
            ];
            let results = at_once(patches.len(), |i| {
                send(&server, Method::PATCH, &path, Some(patches[i].clone()))
            })
            .await;
            for r in &results {
                assert_eq!(r.0, StatusCode::NO_CONTENT, "{results:?} ({})", db.label());
            }
            let (_, p) = server.admin(Method::GET, &path, None).await;
            assert_eq!(p["displayName"], format!("renamed-{round}"), "{p:#} ({})", db.label());
            assert_eq!(p["state"], patches[1]["state"], "{p:#}");
            assert_eq!(
                p["conditions"]["signInRiskLevels"], patches[2]["conditions"]["signInRiskLevels"],
                "{p:#}"
            );
            assert_eq!(
                p["conditions"]["userRiskLevels"], patches[3]["conditions"]["userRiskLevels"],
                "{p:#}"
            );
            assert_eq!(p["sessionControls"]["signInFrequency"]["value"], round + 1, "{p:#}");
        }
        // A PATCH racing a DELETE never brings the object back.
        for round in 0..4 {
            let body = json!({"displayName": format!("doomed-{round}"), "state": "disabled",
                              "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
                              "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}});
            let (status, created) = server
                .admin(Method::POST, "/v1.0/identity/conditionalAccess/policies", Some(&body))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            let one = format!(
                "/v1.0/identity/conditionalAccess/policies/{}",
                created["id"].as_str().unwrap()
            );
            let results = at_once(4, |i| {
                if i == 0 {
                    send(&server, Method::DELETE, &one, None)
                } else {
                    send(
                        &server,
                        Method::PATCH,
                        &one,
                        Some(json!({"displayName": format!("patched-{i}")})),
                    )
                }
            })
            .await;
            assert_eq!(results[0].0, StatusCode::NO_CONTENT, "{results:?}");
            let (status, body) = server.admin(Method::GET, &one, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "deleted, yet: {body} ({})", db.label());
        }
        // The same for a user.
        for round in 0..4 {
            let (status, created) = server
                .admin(
                    Method::POST,
                    "/v1.0/users",
                    Some(&new_user(&format!("doomed{round}@contoso.example"))),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            let one = format!("/v1.0/users/{}", created["id"].as_str().unwrap());
            let results = at_once(4, |i| {
                if i == 0 {
                    send(&server, Method::DELETE, &one, None)
                } else {
                    send(&server, Method::PATCH, &one, Some(json!({"jobTitle": format!("t{i}")})))
                }
            })
            .await;
            assert_eq!(results[0].0, StatusCode::NO_CONTENT, "{results:?}");
            let (status, body) = server.admin(Method::GET, &one, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "deleted, yet: {body} ({})", db.label());
        }
        let memory = fingerprint(&server.running.state).await;
        let server = server.restart(&db).await;
        assert_same(&memory, &fingerprint(&server.running.state).await, db.label());
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_passes_for_one_user_leave_exactly_one() {
    for db in TestDb::each("racing_passes_for_one_user_leave_exactly_one").await {
        let server = TestServer::start(&db).await;
        let path = format!("/v1.0/users/{ISAIAH}/authentication/temporaryAccessPassMethods");
        let results = at_once(4, |_| {
            send(&server, Method::POST, &path, Some(json!({"isUsableOnce": false})))
        })
        .await;
        let codes: Vec<String> = results
            .iter()
            .filter(|r| r.0 == StatusCode::CREATED)
            .map(|r| r.1["temporaryAccessPass"].as_str().unwrap().to_owned())
            .collect();
        assert!(!codes.is_empty(), "{results:?}");
        assert!(results.iter().all(|r| matches!(r.0.as_u16(), 201 | 409)), "{results:?}");
        let (_, list) = server.admin(Method::GET, &path, None).await;
        assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");
        let mut working = 0;
        for code in &codes {
            let begin = json!({"username": "isaiah@contoso.example", "target": {"userAction": "registerSecurityInformation"}});
            let (_, flow) = server.call(Method::POST, "/signin/begin", None, Some(&begin)).await;
            let body = json!({"flowToken": flow["flowToken"], "code": code});
            let step = format!("/signin/{}/temporaryAccessPass", flow["flowId"].as_str().unwrap());
            let (status, _) = server.call(Method::POST, &step, None, Some(&body)).await;
            working += usize::from(status == StatusCode::OK);
        }
        assert_eq!(working, 1, "exactly the remaining pass works ({})", db.label());
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Restarts

/// What a node holds in memory, in Graph's shapes, with each group's members: two nodes (or
/// one before and after a restart) that agree on this serve the same directory.
async fn fingerprint(state: &AppState) -> Value {
    state.sync().await.unwrap();
    let dir = state.dir();
    let mut groups = BTreeMap::new();
    for g in dir.groups() {
        let mut members = g.members.clone();
        members.sort();
        groups.insert(g.id.clone(), json!({"group": group_json(g), "members": members}));
    }
    let users: BTreeMap<String, Value> = dir
        .users()
        .map(|u| (u.id.clone(), json!({"user": user_json(u), "manager": u.manager})))
        .collect();
    json!({
        "users": users,
        "groups": groups,
        "roleAssignments": dir.role_assignments().map(assignment_json).collect::<Vec<_>>(),
        "servicePrincipals": dir.service_principals().map(|a| Value::Object(a.raw.clone())).collect::<Vec<_>>(),
        "devices": dir.devices().map(device_json).collect::<Vec<_>>(),
        "policies": dir.policies().map(|p| Value::Object(p.raw.clone())).collect::<Vec<_>>(),
        "namedLocations": dir.named_locations().map(|l| Value::Object(l.raw.clone())).collect::<Vec<_>>(),
        "strengths": dir.strengths().map(|s| Value::Object(s.raw.clone())).collect::<Vec<_>>(),
        "authenticationMethodsPolicy": dir.auth_methods_policy().cloned(),
    })
}

fn assert_same(before: &Value, after: &Value, label: &str) {
    if before == after {
        return;
    }
    let (b, a) = (before.as_object().unwrap(), after.as_object().unwrap());
    let differ: Vec<&String> = b.keys().filter(|k| b.get(*k) != a.get(*k)).collect();
    panic!(
        "{label}: the state after the restart differs in {differ:?}:\nbefore {before:#}\nafter {after:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_mid_activity_keeps_the_state() {
    for db in TestDb::each("a_restart_mid_activity_keeps_the_state").await {
        let server = TestServer::start(&db).await;
        // Sessions of every kind before the restart.
        let path = format!("/v1.0/users/{ISAIAH}/authentication/temporaryAccessPassMethods");
        let (status, tap) = server
            .admin(
                Method::POST,
                &path,
                Some(&json!({"lifetimeInMinutes": 60, "isUsableOnce": false})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{tap}");
        let begin = json!({"username": "isaiah@contoso.example", "target": {"userAction": "registerSecurityInformation"}});
        let (_, flow) = server.call(Method::POST, "/signin/begin", None, Some(&begin)).await;
        let body = json!({"flowToken": flow["flowToken"], "code": tap["temporaryAccessPass"]});
        let step = format!("/signin/{}/temporaryAccessPass", flow["flowId"].as_str().unwrap());
        let (status, signed) = server.call(Method::POST, &step, None, Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{signed}");
        let tap_session = signed["session"]["token"].as_str().unwrap().to_owned();
        let (reader, reader_token) =
            holder_of(&server, Some(Role::GlobalReader), "restart-reader").await;
        let (revoked, revoked_token) =
            holder_of(&server, Some(Role::GlobalReader), "restart-revoked").await;
        // An unfinished flow survives too.
        let begin = json!({"username": "adele@contoso.example", "target": {"appId": EXPENSES}});
        let (_, open_flow) = server.call(Method::POST, "/signin/begin", None, Some(&begin)).await;

        // Writers of every kind, stopped by the shutdown in the middle of their work.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4usize {
            let (http, base, token, stop) = (
                server.http.clone(),
                server.base.clone(),
                server.admin_token.clone(),
                stop.clone(),
            );
            writers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let (method, path, body) = match (w, n % 3) {
                        (0, _) => (Method::POST, "/v1.0/groups".to_owned(),
                                   json!({"displayName": format!("g{n}"), "mailEnabled": false, "mailNickname": format!("g{n}"), "securityEnabled": true})),
                        (1, 0) => (Method::DELETE, format!("/v1.0/groups/{TRAVEL}/members/{ADELE}/$ref"), json!({})),
                        (1, _) => (Method::POST, format!("/v1.0/groups/{TRAVEL}/members/$ref"), json!({"@odata.id": ADELE})),
                        (2, _) => (Method::PATCH, format!("/v1.0/identity/conditionalAccess/policies/{POLICY_001}"),
                                   json!({"displayName": format!("001-renamed-{n}")})),
                        _ => (Method::POST, "/v1.0/users".to_owned(), new_user(&format!("w{n}@contoso.example"))),
                    };
                    let sent = http.request(method, format!("{base}{path}")).bearer_auth(&token).json(&body).send().await;
                    match sent {
                        Ok(r) if r.status().is_server_error() => panic!("{path}: {}", r.status()),
                        Ok(_) => {}
                        Err(_) => break, // the server went away
                    }
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/users/{revoked}"),
                Some(&json!({"passwordProfile": {"password": "Another-Pass-123"}})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let state = server.running.state.clone();
        let clock = server.clock.clone();
        let server = server.restart(&db).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in writers {
            w.await.unwrap();
        }
        let before = fingerprint(&state).await;
        let after = fingerprint(&server.running.state).await;
        assert_same(&before, &after, db.label());

        // Tokens: the API tokens and the pass's session work; the revoked one does not.
        for (token, want) in [
            (server.admin_token.as_str(), StatusCode::OK),
            (reader_token.as_str(), StatusCode::OK),
            (revoked_token.as_str(), StatusCode::UNAUTHORIZED),
        ] {
            let (status, _) =
                server.call(Method::GET, "/v1.0/users/$count", Some(token), None).await;
            assert_eq!(status, want, "{} ({reader})", db.label());
        }
        let (status, body) = server
            .call(Method::POST, "/signin/security-info/totp", Some(&tap_session), Some(&json!({})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // The flow begun before the restart goes on after it.
        let body = json!({"flowToken": open_flow["flowToken"], "password": demo::PASSWORD});
        let step = format!("/signin/{}/password", open_flow["flowId"].as_str().unwrap());
        let (status, body) = server.call(Method::POST, &step, None, Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Time passes: the pass ends, and its session with it.
        clock.advance(61 * 60_000);
        let (status, _) = server
            .call(Method::POST, "/signin/security-info/totp", Some(&tap_session), Some(&json!({})))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        server.stop().await;
    }
}

/// A session is a token for what it was signed in to: the Graph API only takes sessions signed
/// in to Microsoft Graph (so Conditional Access on Graph governs administration), never a
/// session for another app, even of a user who holds a role.
#[tokio::test]
async fn a_session_for_another_app_is_not_a_graph_token() {
    use gatehouse_core::auth::totp;
    for db in TestDb::each("a_session_for_another_app_is_not_a_graph_token").await {
        let server = TestServer::start(&db).await;
        let adele = "a0000000-0000-4000-8000-000000000001";
        let grant = json!({"principalId": adele, "roleDefinitionId": Role::GlobalReader.template_id(),
                           "directoryScopeId": "/"});
        let (status, body) = server
            .admin(Method::POST, "/v1.0/roleManagement/directory/roleAssignments", Some(&grant))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let secret = totp::Secret::from_base32(gatehouse_server::demo::ADELE_TOTP_SECRET).unwrap();
        let mut sessions = Vec::new();
        for app in ["f1000000-0000-4000-8000-000000000001", "00000003-0000-0000-c000-000000000000"]
        {
            server.clock.advance(30_000); // a fresh code each time
            let begin = json!({"username": "adele@contoso.example", "target": {"appId": app}});
            let (_, flow) = server.call(Method::POST, "/signin/begin", None, Some(&begin)).await;
            let id = flow["flowId"].as_str().unwrap();
            let pw = json!({"flowToken": flow["flowToken"], "password": gatehouse_server::demo::PASSWORD});
            let (_, answer) =
                server.call(Method::POST, &format!("/signin/{id}/password"), None, Some(&pw)).await;
            assert_eq!(answer["status"], "challenge", "{answer}");
            let code = totp::code_at(&secret, totp::step_of(server.clock_now()));
            let body = json!({"flowToken": flow["flowToken"], "code": code});
            let (_, answer) =
                server.call(Method::POST, &format!("/signin/{id}/totp"), None, Some(&body)).await;
            assert_eq!(answer["status"], "success", "{answer}");
            sessions.push(answer["session"]["token"].as_str().unwrap().to_owned());
        }
        let (status, body) =
            server.call(Method::GET, "/v1.0/users", Some(&sessions[0]), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "an Expenses session on Graph: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("Microsoft Graph"), "{body}");
        let (status, body) =
            server.call(Method::GET, "/v1.0/users", Some(&sessions[1]), None).await;
        assert_eq!(status, StatusCode::OK, "a Graph session of a Global Reader: {body}");
        server.stop().await;
    }
}
