//! Authorization: every route, called with no token and with a token of each role, answers
//! exactly as its entry in the route table says. And docs/api.md is that table.

use gatehouse_core::Change;
use gatehouse_core::roles::{Access, Role};
use gatehouse_server::session::{Session, SessionKind};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::server_support::{T0, TestDb, TestServer};

/// A user holding exactly `role` (or none), with an API token.
pub async fn token_for(server: &TestServer, role: Option<Role>) -> String {
    let state = &server.running.state;
    let id = gatehouse_server::random::guid();
    let name =
        role.map_or("no-role".to_owned(), |r| r.display_name().replace(' ', "-").to_lowercase());
    let mut changes = vec![Change::PutUser {
        user: json!({"id": id, "userPrincipalName": format!("{name}-{}@contoso.example", &id[..8]),
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
    let token = gatehouse_server::random::token("gh_");
    let session = Session {
        id: gatehouse_server::random::guid(),
        user_id: id,
        kind: SessionKind::ApiToken,
        created_at: T0,
        expires_at: None,
        methods: vec![],
        tap_id: None,
        target: None,
    };
    let mut w = state.store.begin().await.unwrap();
    w.insert_session(&gatehouse_core::auth::secret::hash(&token), &session).await.unwrap();
    w.commit(T0, &changes, &[]).await.unwrap();
    state.sync().await.unwrap();
    token
}

/// Path parameters become an id that names nothing: the role check runs before any lookup, so
/// an allowed caller gets past it (to a 400/404), and a refused one gets 403.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("00000000-0000-4000-8000-00000000dead");
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

#[tokio::test]
async fn every_route_with_every_role() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let mut tokens = vec![(None, token_for(&server, None).await)];
    for r in Role::ALL {
        tokens.push((Some(r), token_for(&server, Some(r)).await));
    }
    let specs = server.running.routes.clone();
    assert!(specs.len() > 20, "the route table looks empty: {}", specs.len());
    let mut failures = Vec::new();
    for spec in &specs {
        let path = concrete(spec.path);
        let body =
            matches!(spec.method, Method::POST | Method::PATCH | Method::PUT).then(|| json!({}));
        let (status, _) = server.call(spec.method.clone(), &path, None, body.as_ref()).await;
        let anonymous_ok = spec.access == Access::Anonymous;
        if anonymous_ok == (status == StatusCode::UNAUTHORIZED) {
            failures.push(format!("{} {} without a token: {status}", spec.method, spec.path));
        }
        // Catalog roles and signed callbacks widen a route beyond its directory roles; these
        // tokens hold neither, so the directory roles alone decide.
        if let Access::Roles(allowed) | Access::Catalog(allowed, _) | Access::SignedOr(allowed) =
            spec.access
        {
            for (role, token) in &tokens {
                let (status, _) =
                    server.call(spec.method.clone(), &path, Some(token), body.as_ref()).await;
                let may = role.is_some_and(|r| allowed.contains(&r));
                let refused = status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED;
                if may == refused {
                    let who = role.map_or("no role".to_owned(), |r| r.display_name().to_owned());
                    failures.push(format!(
                        "{} {} as {who}: {status} (allowed: {may})",
                        spec.method, spec.path
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} authorization mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_or_missing_token_is_401_with_a_graph_error() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    for token in [None, Some("gh_not-a-token"), Some("")] {
        let (status, body) = server.call(Method::GET, "/v1.0/users", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["innerError"]["request-id"].is_string());
    }
    server.stop().await;
}

#[tokio::test]
async fn api_doc_is_current() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let rendered = gatehouse_server::http::render_api_doc(&server.running.routes);
    let path = crate::support::repo_root().join("docs/api.md");
    if std::env::var_os("GATEHOUSE_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/api.md is out of date with the route table; run with GATEHOUSE_BLESS=1 to rewrite it"
    );
    server.stop().await;
}
