//! Temporary Access Pass and authentication methods over Graph: graph-shapes.md §7 items 1–9,
//! the policy's scope, who may issue to whom, replacement, secrecy of the code, and the atomic
//! one-time consumption the sign-in flow relies on. Every test runs on SQLite and, when
//! `GATEHOUSE_TEST_DATABASE_URL` is set, on PostgreSQL.

use gatehouse_core::auth::secret;
use gatehouse_core::roles::Role;
use gatehouse_core::time::{MINUTE, format};
use gatehouse_server::session::{Session, SessionKind};
use gatehouse_server::store::{Store, TapRow};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::authz::token_for;
use crate::server_support::{T0, TestDb, TestServer};

const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
const MEGAN: &str = "a0000000-0000-4000-8000-000000000002";
const LEE: &str = "a0000000-0000-4000-8000-000000000003";
const PAT_EXTERNAL: &str = "a0000000-0000-4000-8000-000000000006";
const NESTOR: &str = "a0000000-0000-4000-8000-000000000007";
const LIDIA_INTERNAL_GUEST: &str = "a0000000-0000-4000-8000-000000000011";
const TRAVEL_GROUP: &str = "b0000000-0000-4000-8000-000000000003";

const POLICY: &str = "/v1.0/policies/authenticationMethodsPolicy";
const TAP_CONFIG: &str = "/v1.0/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/TemporaryAccessPass";
const TAP_TYPE: &str = "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration";
const NOT_ALLOWED: &str = "Converged UserCredentialPolicy does not allow creating or updating this authentication method. AuthMethodType [TemporaryAccessPass].";

fn taps(user: &str) -> String {
    format!("/v1.0/users/{user}/authentication/temporaryAccessPassMethods")
}

/// The raw body text of an admin GET, to look for secrets in exactly what a client receives.
async fn raw(server: &TestServer, path: &str) -> (StatusCode, String) {
    let resp = server
        .http
        .get(format!("{}{path}", server.base))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// Issues a pass to `user` as the Global Administrator; returns the 201 body.
async fn issue(server: &TestServer, user: &str, body: Value) -> Value {
    let (status, created) = server.admin(Method::POST, &taps(user), Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

fn assert_graph_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["innerError"]["request-id"].is_string(), "{body}");
}

#[tokio::test]
async fn graph_conformance_items_1_to_4_policy_and_tap_configuration() {
    for db in TestDb::each("graph_conformance_items_1_to_4_policy_and_tap_configuration").await {
        let server = TestServer::start(&db).await;

        // 1. The singleton, configurations expanded and typed.
        let (status, policy) = server.admin(Method::GET, POLICY, None).await;
        assert_eq!(status, StatusCode::OK, "{}: {policy}", db.label());
        assert_eq!(policy["id"], "authenticationMethodsPolicy");
        assert!(policy["@odata.context"].as_str().unwrap().ends_with("$entity"), "{policy}");
        let configs = policy["authenticationMethodConfigurations"].as_array().unwrap();
        let types: Vec<&str> = configs.iter().map(|c| c["@odata.type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                TAP_TYPE,
                "#microsoft.graph.softwareOathAuthenticationMethodConfiguration",
                "#microsoft.graph.fido2AuthenticationMethodConfiguration"
            ]
        );
        assert_eq!(configs[0]["state"], "enabled", "the demo enables TAP");
        assert_eq!(configs[0]["maximumLifetimeInMinutes"], 480);

        // 2. The TAP configuration, its id matched case-insensitively.
        let lower = TAP_CONFIG.replace("TemporaryAccessPass", "temporaryAccessPass");
        let (status, tap) = server.admin(Method::GET, &lower, None).await;
        assert_eq!(status, StatusCode::OK, "{tap}");
        assert_eq!(tap["@odata.type"], TAP_TYPE);
        assert_eq!(tap["id"], "TemporaryAccessPass");
        assert_eq!(
            tap["includeTargets"],
            json!([{"id": "all_users", "targetType": "group", "isRegistrationRequired": false}])
        );
        let (status, _) = server
            .admin(Method::GET, &TAP_CONFIG.replace("TemporaryAccessPass", "Fido2"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = server
            .admin(Method::GET, &TAP_CONFIG.replace("TemporaryAccessPass", "Sms"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_graph_error(&body, "itemNotFound");

        // 3. PATCH: 204, only what is sent changes; `@odata.type` is required.
        let (status, body) = server
            .admin(
                Method::PATCH,
                &lower,
                Some(&json!({"@odata.type": TAP_TYPE, "isUsableOnce": true})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        assert_eq!(body, Value::Null, "204 has no body");
        let (_, tap) = server.admin(Method::GET, TAP_CONFIG, None).await;
        assert_eq!(
            (tap["isUsableOnce"].clone(), tap["state"].clone()),
            (json!(true), json!("enabled"))
        );
        let (status, body) =
            server.admin(Method::PATCH, TAP_CONFIG, Some(&json!({"isUsableOnce": false}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_graph_error(&body, "badRequest");
        assert!(body["error"]["message"].as_str().unwrap().contains("@odata.type"), "{body}");
        for bad in [
            json!({"@odata.type": TAP_TYPE, "defaultLength": 7}),
            json!({"@odata.type": TAP_TYPE, "minimumLifetimeInMinutes": 500}),
            json!({"@odata.type": TAP_TYPE, "colour": "blue"}),
            json!({"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration"}),
        ] {
            let (status, body) = server.admin(Method::PATCH, TAP_CONFIG, Some(&bad)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert_graph_error(&body, "badRequest");
        }
        let (_, tap) = server.admin(Method::GET, TAP_CONFIG, None).await;
        assert_eq!(tap["defaultLength"], 8, "refused PATCHes change nothing");
        // The other configurations are read-only.
        let fido = TAP_CONFIG.replace("TemporaryAccessPass", "Fido2");
        let (status, body) = server
            .admin(Method::PATCH, &fido, Some(&json!({"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration", "state": "disabled"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_graph_error(&body, "badRequest");

        // 4. DELETE: 204, back to Entra's defaults (TAP disabled).
        let (status, _) = server.admin(Method::DELETE, &lower, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, tap) = server.admin(Method::GET, TAP_CONFIG, None).await;
        assert_eq!(
            (
                tap["state"].clone(),
                tap["isUsableOnce"].clone(),
                tap["minimumLifetimeInMinutes"].clone()
            ),
            (json!("disabled"), json!(false), json!(60))
        );
        let (_, policy) = server.admin(Method::GET, POLICY, None).await;
        assert_eq!(policy["authenticationMethodConfigurations"][0]["state"], "disabled");
        assert_eq!(policy["lastModifiedDateTime"], format(T0));
        server.stop().await;
    }
}

#[tokio::test]
async fn the_policy_singleton_patches_only_its_own_properties() {
    for db in TestDb::each("the_policy_singleton_patches_only_its_own_properties").await {
        let server = TestServer::start(&db).await;
        let body = json!({
            "reconfirmationInDays": "90",
            "description": "Contoso methods",
            "registrationEnforcement": {"authenticationMethodsRegistrationCampaign": {
                "snoozeDurationInDays": 3, "state": "Enabled", "excludeTargets": [],
                "includeTargets": [{"id": "all_users", "targetType": "group", "targetedAuthenticationMethod": "microsoftAuthenticator"}]
            }}
        });
        let (status, policy) = server.admin(Method::PATCH, POLICY, Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{}: {policy}", db.label());
        assert_eq!(policy["reconfirmationInDays"], 90);
        assert_eq!(policy["description"], "Contoso methods");
        assert_eq!(
            policy["registrationEnforcement"]["authenticationMethodsRegistrationCampaign"]["state"],
            "enabled"
        );
        assert_eq!(policy["authenticationMethodConfigurations"].as_array().unwrap().len(), 3);
        let (_, again) = server.admin(Method::GET, POLICY, None).await;
        assert_eq!(again["reconfirmationInDays"], 90, "stored");
        assert_eq!(
            again["authenticationMethodConfigurations"][0]["state"], "enabled",
            "TAP untouched"
        );

        for bad in [
            json!({"displayName": "mine"}),
            json!({"authenticationMethodConfigurations": []}),
            json!({"reconfirmationInDays": 400}),
            json!({"reconfirmationInDays": "soon"}),
            json!({"registrationEnforcement": {"authenticationMethodsRegistrationCampaign": {"state": "sometimes"}}}),
            json!({"registrationEnforcement": {"other": {}}}),
        ] {
            let (status, body) = server.admin(Method::PATCH, POLICY, Some(&bad)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert_graph_error(&body, "badRequest");
        }
        let (_, after) = server.admin(Method::GET, POLICY, None).await;
        assert_eq!(after["reconfirmationInDays"], 90, "refused PATCHes change nothing");
        // Two admins changing different parts at once: neither change is lost.
        for round in 0..8_i64 {
            let singleton = json!({"reconfirmationInDays": 100 + round});
            let config = json!({"@odata.type": TAP_TYPE, "defaultLength": 10 + round});
            let (a, b) = tokio::join!(
                server.admin(Method::PATCH, POLICY, Some(&singleton)),
                server.admin(Method::PATCH, TAP_CONFIG, Some(&config)),
            );
            assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::NO_CONTENT), "{} {}", a.1, b.1);
            let (_, now) = server.admin(Method::GET, POLICY, None).await;
            assert_eq!(now["reconfirmationInDays"], 100 + round, "{}", db.label());
            assert_eq!(now["authenticationMethodConfigurations"][0]["defaultLength"], 10 + round);
        }
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT activity, result FROM audit_logs WHERE category = 'Policy'")
                .fetch_all(server.running.state.store.pool())
                .await
                .unwrap();
        assert_eq!(
            rows.len(),
            17,
            "one entry per accepted change, none for refused ones: {rows:?}"
        );
        assert!(
            rows.iter().all(|(a, r)| a == "Authentication Methods Policy Update" && r == "success")
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn graph_conformance_items_5_to_9_a_users_pass() {
    for db in TestDb::each("graph_conformance_items_5_to_9_a_users_pass").await {
        let server = TestServer::start(&db).await;
        let start = T0 + 24 * 60 * MINUTE;

        // 5. Create with a future start: 201, the code once, not usable yet.
        let body = json!({"startDateTime": format(start).replace('Z', "+00:00"), "lifetimeInMinutes": 60, "isUsableOnce": false});
        let created = issue(&server, ADELE, body).await;
        let code = created["temporaryAccessPass"].as_str().unwrap().to_owned();
        assert_eq!(code.len(), 8, "the policy's defaultLength");
        assert_eq!(
            created["@odata.type"],
            "#microsoft.graph.temporaryAccessPassAuthenticationMethod"
        );
        assert_eq!(created["startDateTime"], format(start));
        assert_eq!(created["createdDateTime"], format(T0));
        assert_eq!(
            (created["lifetimeInMinutes"].clone(), created["isUsableOnce"].clone()),
            (json!(60), json!(false))
        );
        assert_eq!(
            (created["isUsable"].clone(), created["methodUsabilityReason"].clone()),
            (json!(false), json!("NotYetValid"))
        );
        let id = created["id"].as_str().unwrap().to_owned();

        // 6. List: one item, no code.
        let (status, list) = server.admin(Method::GET, &taps(ADELE), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["value"].as_array().unwrap().len(), 1);
        assert_eq!(list["value"][0]["id"], id.as_str());
        assert!(list["value"][0]["temporaryAccessPass"].is_null(), "{list}");
        assert!(list["value"][0].as_object().unwrap().contains_key("temporaryAccessPass"));

        // 7. Get by id (by UPN too): no code; usability follows the clock.
        server.clock.advance(24 * 60 * MINUTE);
        let (status, got) = server
            .admin(Method::GET, &format!("{}/{id}", taps("adele@contoso.example")), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert!(got["temporaryAccessPass"].is_null());
        assert_eq!(
            (got["isUsable"].clone(), got["methodUsabilityReason"].clone()),
            (json!(true), json!("EnabledByPolicy"))
        );
        server.clock.advance(60 * MINUTE);
        let (_, got) = server.admin(Method::GET, &format!("{}/{id}", taps(ADELE)), None).await;
        assert_eq!(
            (got["isUsable"].clone(), got["methodUsabilityReason"].clone()),
            (json!(false), json!("Expired"))
        );

        // It is listed among the user's methods, beside the password.
        let (status, methods) = server
            .admin(Method::GET, &format!("/v1.0/users/{ADELE}/authentication/methods"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let kinds: Vec<&str> = methods["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["@odata.type"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"#microsoft.graph.temporaryAccessPassAuthenticationMethod"),
            "{methods}"
        );

        // 8. Delete: 204, then gone.
        let (status, _) =
            server.admin(Method::DELETE, &format!("{}/{id}", taps(ADELE)), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) =
            server.admin(Method::GET, &format!("{}/{id}", taps(ADELE)), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_graph_error(&body, "itemNotFound");
        let (status, _) =
            server.admin(Method::DELETE, &format!("{}/{id}", taps(ADELE)), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = server.admin(Method::GET, &taps(ADELE), None).await;
        assert_eq!(list["value"], json!([]));

        // 9. A lifetime outside the policy: 400 with the bounds in the message.
        for lifetime in [481, 59] {
            let (status, body) = server
                .admin(Method::POST, &taps(ADELE), Some(&json!({"lifetimeInMinutes": lifetime})))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_graph_error(&body, "badRequest");
            assert_eq!(
                body["error"]["message"],
                "Invalid LifetimeInMinutes specified. The valid range between 60 and 480."
            );
        }
        let (_, tap) = server.admin(Method::PATCH, TAP_CONFIG, Some(&json!({"@odata.type": TAP_TYPE, "minimumLifetimeInMinutes": 30, "maximumLifetimeInMinutes": 1440}))).await;
        assert_eq!(tap, Value::Null);
        let (status, body) = server
            .admin(Method::POST, &taps(ADELE), Some(&json!({"lifetimeInMinutes": 1441})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["error"]["message"],
            "Invalid LifetimeInMinutes specified. The valid range between 30 and 1440."
        );

        // Unknown users are 404 in the directory's vocabulary; bad bodies 400.
        let (status, body) =
            server.admin(Method::POST, &taps("nobody@contoso.example"), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_graph_error(&body, "Request_ResourceNotFound");
        let (status, body) =
            server.admin(Method::GET, &taps("a0000000-0000-4000-8000-0000000000ff"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_graph_error(&body, "Request_ResourceNotFound");
        for bad in [
            json!({"temporaryAccessPass": "chosen-by-me"}),
            json!({"startDateTime": "tomorrow"}),
            json!({"isUsable": true}),
        ] {
            let (status, body) = server.admin(Method::POST, &taps(ADELE), Some(&bad)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_graph_error(&body, "badRequest");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn a_new_pass_replaces_the_old_and_ends_its_sessions() {
    for db in TestDb::each("a_new_pass_replaces_the_old_and_ends_its_sessions").await {
        let server = TestServer::start(&db).await;
        let state = &server.running.state;
        let first = issue(&server, MEGAN, json!({})).await;
        let first_id = first["id"].as_str().unwrap().to_owned();

        // Sessions as sign-in would make them: one with the pass, one with a password.
        let token_with = |tap: Option<&str>| {
            let token = gatehouse_server::random::token("gh_");
            let session = Session {
                id: gatehouse_server::random::guid(),
                user_id: MEGAN.into(),
                kind: SessionKind::SignIn,
                created_at: T0,
                expires_at: Some(T0 + 60 * MINUTE),
                methods: vec![if tap.is_some() {
                    "temporaryAccessPass".into()
                } else {
                    "password".into()
                }],
                tap_id: tap.map(str::to_owned),
                target: None,
            };
            (token, session)
        };
        let (tap_token, tap_session) = token_with(Some(first_id.as_str()));
        let (pw_token, pw_session) = token_with(None);
        let mut w = state.store.begin().await.unwrap();
        w.insert_session(&secret::hash(&tap_token), &tap_session).await.unwrap();
        w.insert_session(&secret::hash(&pw_token), &pw_session).await.unwrap();
        w.commit(T0, &[], &[]).await.unwrap();
        // Both are live, and now cached.
        assert!(
            gatehouse_server::http::auth::session_for(state, &tap_token).await.unwrap().is_some()
        );
        assert!(
            gatehouse_server::http::auth::session_for(state, &pw_token).await.unwrap().is_some()
        );

        let second = issue(&server, MEGAN, json!({"lifetimeInMinutes": 120})).await;
        assert_ne!(second["id"], first["id"]);
        assert_ne!(second["temporaryAccessPass"], first["temporaryAccessPass"]);
        let (_, list) = server.admin(Method::GET, &taps(MEGAN), None).await;
        let ids: Vec<&str> =
            list["value"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [second["id"].as_str().unwrap()], "only the new pass is listed");
        let (status, _) =
            server.admin(Method::GET, &format!("{}/{first_id}", taps(MEGAN)), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the old id is gone");

        // The old pass's session ended (in the store and in the cache); the other did not.
        assert!(
            gatehouse_server::http::auth::session_for(state, &tap_token).await.unwrap().is_none(),
            "{}",
            db.label()
        );
        assert!(state.store.find_session(&secret::hash(&tap_token)).await.unwrap().is_none());
        assert!(
            gatehouse_server::http::auth::session_for(state, &pw_token).await.unwrap().is_some()
        );

        // Deleting the pass ends its sessions too.
        let second_id = second["id"].as_str().unwrap().to_owned();
        let (token, session) = token_with(Some(second_id.as_str()));
        let mut w = state.store.begin().await.unwrap();
        w.insert_session(&secret::hash(&token), &session).await.unwrap();
        w.commit(T0, &[], &[]).await.unwrap();
        assert!(gatehouse_server::http::auth::session_for(state, &token).await.unwrap().is_some());
        let (status, _) =
            server.admin(Method::DELETE, &format!("{}/{second_id}", taps(MEGAN)), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(gatehouse_server::http::auth::session_for(state, &token).await.unwrap().is_none());
        assert!(
            gatehouse_server::http::auth::session_for(state, &pw_token).await.unwrap().is_some()
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn the_policy_decides_who_may_get_a_pass() {
    for db in TestDb::each("the_policy_decides_who_may_get_a_pass").await {
        let server = TestServer::start(&db).await;
        // Only the travel group (Lee) is included: Adele is outside.
        let scoped = json!({"@odata.type": TAP_TYPE,
            "includeTargets": [{"id": TRAVEL_GROUP, "targetType": "group", "isRegistrationRequired": false}]});
        let (status, _) = server.admin(Method::PATCH, TAP_CONFIG, Some(&scoped)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = server.admin(Method::POST, &taps(ADELE), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {body}", db.label());
        assert_graph_error(&body, "badRequest");
        assert_eq!(body["error"]["message"], NOT_ALLOWED);
        let lee = issue(&server, LEE, json!({})).await;
        assert_eq!(lee["isUsable"], true);

        // Excluding the group wins over including it; Lee's existing pass reads DisabledByPolicy.
        let excluded = json!({"@odata.type": TAP_TYPE, "excludeTargets": [{"id": TRAVEL_GROUP, "targetType": "group"}]});
        let (status, _) = server.admin(Method::PATCH, TAP_CONFIG, Some(&excluded)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = server.admin(Method::POST, &taps(LEE), Some(&json!({}))).await;
        assert_eq!(
            (status, body["error"]["message"].clone()),
            (StatusCode::BAD_REQUEST, json!(NOT_ALLOWED))
        );
        let (_, list) = server.admin(Method::GET, &taps(LEE), None).await;
        assert_eq!(list["value"][0]["methodUsabilityReason"], "DisabledByPolicy");

        // Disabled for everyone.
        let (status, _) = server.admin(Method::PATCH, TAP_CONFIG, Some(&json!({"@odata.type": TAP_TYPE, "state": "disabled", "excludeTargets": [], "includeTargets": [{"id": "all_users", "targetType": "group"}]}))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = server.admin(Method::POST, &taps(ADELE), Some(&json!({}))).await;
        assert_eq!(
            (status, body["error"]["message"].clone()),
            (StatusCode::BAD_REQUEST, json!(NOT_ALLOWED))
        );

        // A policy that makes every pass one-time refuses a multi-use one.
        let once = json!({"@odata.type": TAP_TYPE, "state": "enabled", "isUsableOnce": true});
        let (status, _) = server.admin(Method::PATCH, TAP_CONFIG, Some(&once)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) =
            server.admin(Method::POST, &taps(ADELE), Some(&json!({"isUsableOnce": false}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_graph_error(&body, "badRequest");
        assert_eq!(issue(&server, ADELE, json!({})).await["isUsableOnce"], true);
        // Re-enabled for everyone: Lee's pass, still in its lifetime, works again.
        let (_, list) = server.admin(Method::GET, &taps(LEE), None).await;
        assert_eq!(list["value"][0]["methodUsabilityReason"], "EnabledByPolicy");

        // External guests never get one; internal guests do.
        let (status, body) =
            server.admin(Method::POST, &taps(PAT_EXTERNAL), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_graph_error(&body, "badRequest");
        assert!(body["error"]["message"].as_str().unwrap().contains("external guest"), "{body}");
        issue(&server, LIDIA_INTERNAL_GUEST, json!({})).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn who_may_issue_to_whom() {
    for db in TestDb::each("who_may_issue_to_whom").await {
        let server = TestServer::start(&db).await;
        // An administrator cannot issue a pass to themself, nor delete their own.
        let (status, body) = server.admin(Method::POST, &taps(NESTOR), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}: {body}", db.label());
        assert_graph_error(&body, "Authorization_RequestDenied");

        let auth_admin = token_for(&server, Some(Role::AuthenticationAdministrator)).await;
        // An Authentication Administrator: non-admins yes, admins no.
        let (status, created) =
            server.call(Method::POST, &taps(ADELE), Some(&auth_admin), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let (status, body) =
            server.call(Method::POST, &taps(NESTOR), Some(&auth_admin), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_graph_error(&body, "Authorization_RequestDenied");
        // …and the same for deleting an admin's pass, which the Global Administrator cannot make
        // for themself but another one can.
        let other_ga = token_for(&server, Some(Role::GlobalAdministrator)).await;
        let (status, nestor_tap) =
            server.call(Method::POST, &taps(NESTOR), Some(&other_ga), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{nestor_tap}");
        let path = format!("{}/{}", taps(NESTOR), nestor_tap["id"].as_str().unwrap());
        let (status, _) = server.call(Method::DELETE, &path, Some(&auth_admin), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = server.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "not even the admin themself");
        let (status, _) = server.call(Method::DELETE, &path, Some(&other_ga), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        // A Privileged Authentication Administrator may act on admins.
        let pam = token_for(&server, Some(Role::PrivilegedAuthenticationAdministrator)).await;
        let (status, _) =
            server.call(Method::POST, &taps(NESTOR), Some(&pam), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::CREATED);
        // A Global Reader may read a pass, never create one, and never sees the code.
        let reader = token_for(&server, Some(Role::GlobalReader)).await;
        let (status, list) = server.call(Method::GET, &taps(ADELE), Some(&reader), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(list["value"][0]["temporaryAccessPass"].is_null());
        let (status, _) =
            server.call(Method::POST, &taps(ADELE), Some(&reader), Some(&json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        server.stop().await;
    }
}

#[tokio::test]
async fn the_code_is_never_shown_again_nor_audited() {
    for db in TestDb::each("the_code_is_never_shown_again_nor_audited").await {
        let server = TestServer::start(&db).await;
        let created = issue(&server, ADELE, json!({"isUsableOnce": true})).await;
        let code = created["temporaryAccessPass"].as_str().unwrap().to_owned();
        let id = created["id"].as_str().unwrap().to_owned();
        for path in [
            taps(ADELE),
            format!("{}/{id}", taps(ADELE)),
            format!("/v1.0/users/{ADELE}/authentication/methods"),
            format!("/v1.0/users/{ADELE}/authentication/methods/{id}"),
            "/v1.0/auditLogs/directoryAudits".to_owned(),
        ] {
            let (_, text) = raw(&server, &path).await;
            assert!(!text.contains(&code), "{}: {path} shows the code: {text}", db.label());
        }
        // The audit rows themselves, whatever the log route does with them.
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT activity, body FROM audit_logs")
            .fetch_all(server.running.state.store.pool())
            .await
            .unwrap();
        let issued: Vec<_> = rows
            .iter()
            .filter(|(a, _)| a == "Admin registered temporary access pass method for user")
            .collect();
        assert_eq!(issued.len(), 1, "{rows:?}");
        assert!(issued[0].1.contains(ADELE));
        assert!(rows.iter().all(|(_, body)| !body.contains(&code)));
        // Nor is the code stored: only its hash.
        let stored = server.running.state.store.tap_of(ADELE).await.unwrap().unwrap();
        assert_eq!(stored.secret_hash, secret::hash(&code));
        assert!(!format!("{stored:?}").contains(&stored.secret_hash), "Debug redacts the hash");

        let (status, _) =
            server.admin(Method::DELETE, &format!("{}/{id}", taps(ADELE)), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let rows: Vec<(String,)> = sqlx::query_as("SELECT activity FROM audit_logs")
            .fetch_all(server.running.state.store.pool())
            .await
            .unwrap();
        assert!(rows.iter().any(|(a,)| a == "Admin deleted temporary access pass method for user"));
        server.stop().await;
    }
}

#[tokio::test]
async fn a_users_methods_are_listed_by_kind_without_secrets() {
    for db in TestDb::each("a_users_methods_are_listed_by_kind_without_secrets").await {
        let server = TestServer::start(&db).await;
        // Adele: a password and a verified Authenticator app (the demo seeds both).
        let (status, methods) = server
            .admin(Method::GET, &format!("/v1.0/users/{ADELE}/authentication/methods"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{}: {methods}", db.label());
        let items = methods["value"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{methods}");
        assert_eq!(items[0]["@odata.type"], "#microsoft.graph.passwordAuthenticationMethod");
        assert_eq!(items[0]["id"], "28c10230-6103-485e-b985-444c60001490");
        assert!(items[0]["password"].is_null());
        assert_eq!(items[1]["@odata.type"], "#microsoft.graph.softwareOathAuthenticationMethod");
        assert!(items[1]["secretKey"].is_null());
        let (_, text) = raw(&server, &format!("/v1.0/users/{ADELE}/authentication/methods")).await;
        assert!(!text.contains(gatehouse_server::demo::ADELE_TOTP_SECRET));
        assert!(!text.contains("argon2"), "no password hash");

        let (status, passwords) = server
            .admin(
                Method::GET,
                &format!("/v1.0/users/{ADELE}/authentication/passwordMethods"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(passwords["value"].as_array().unwrap().len(), 1);
        // The external guest has no password here.
        let (_, none) = server
            .admin(Method::GET, &format!("/v1.0/users/{PAT_EXTERNAL}/authentication/methods"), None)
            .await;
        assert_eq!(none["value"], json!([]));

        let oath = format!("/v1.0/users/{ADELE}/authentication/softwareOathMethods");
        let (status, list) = server.admin(Method::GET, &oath, None).await;
        assert_eq!(status, StatusCode::OK);
        let oath_id = list["value"][0]["id"].as_str().unwrap().to_owned();
        let (status, one) = server.admin(Method::GET, &format!("{oath}/{oath_id}"), None).await;
        assert_eq!((status, one["id"].as_str()), (StatusCode::OK, Some(oath_id.as_str())));

        // An Authentication Administrator may remove a non-admin's method; it is audited.
        let auth_admin = token_for(&server, Some(Role::AuthenticationAdministrator)).await;
        let (status, _) = server
            .call(Method::DELETE, &format!("{oath}/{oath_id}"), Some(&auth_admin), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = server.admin(Method::GET, &format!("{oath}/{oath_id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_graph_error(&body, "itemNotFound");
        let (status, _) = server.admin(Method::DELETE, &format!("{oath}/{oath_id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(server.running.state.store.totp_methods_of(ADELE).await.unwrap().is_empty());
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT activity, target_id FROM audit_logs")
                .fetch_all(server.running.state.store.pool())
                .await
                .unwrap();
        assert!(
            rows.contains(&("Admin deleted security info".to_owned(), Some(ADELE.to_owned()))),
            "{rows:?}"
        );
        server.stop().await;
    }
}

/// The sign-in step: of 20 concurrent attempts with one one-time pass, exactly one wins.
#[tokio::test]
async fn consume_tap_has_exactly_one_winner() {
    for db in TestDb::each("consume_tap_has_exactly_one_winner").await {
        let store = Store::open(&db.url).await.unwrap();
        let row = |id: &str, user: &str, once: bool| TapRow {
            id: id.into(),
            user_id: user.into(),
            secret_hash: secret::hash(id),
            created_at: T0,
            start_at: T0,
            lifetime_minutes: 60,
            usable_once: once,
            used_at: None,
        };
        let mut w = store.begin().await.unwrap();
        assert_eq!(w.put_tap(&row("once", "u1", true)).await.unwrap(), None);
        assert_eq!(w.put_tap(&row("multi", "u2", false)).await.unwrap(), None);
        w.commit(T0, &[], &[]).await.unwrap();

        let attempt = |id: &'static str, at: i64| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut w = store.begin().await.unwrap();
                let won = w.consume_tap(id, at).await.unwrap();
                w.commit(at, &[], &[]).await.unwrap();
                won
            })
        };
        let handles: Vec<_> = (0..20).map(|i| attempt("once", T0 + i)).collect();
        let mut winners = 0;
        for h in handles {
            winners += usize::from(h.await.unwrap());
        }
        assert_eq!(winners, 1, "{}", db.label());
        let used = store.tap_of("u1").await.unwrap().unwrap();
        assert!(used.used_at.is_some_and(|t| (T0..T0 + 20).contains(&t)));

        // A multi-use pass is not consumed; a pass that is gone cannot be used.
        let handles: Vec<_> = (0..20).map(|i| attempt("multi", T0 + i)).collect();
        for h in handles {
            assert!(h.await.unwrap());
        }
        assert_eq!(store.tap_of("u2").await.unwrap().unwrap().used_at, None);
        assert!(!attempt("missing", T0).await.unwrap());

        // Replacing returns the old id; the new pass starts unused.
        let mut w = store.begin().await.unwrap();
        assert_eq!(w.put_tap(&row("once-2", "u1", true)).await.unwrap().as_deref(), Some("once"));
        w.commit(T0, &[], &[]).await.unwrap();
        assert!(!attempt("once", T0).await.unwrap(), "the replaced pass");
        assert!(attempt("once-2", T0).await.unwrap());
        let mut w = store.begin().await.unwrap();
        assert!(w.delete_tap("u1", "once-2").await.unwrap());
        assert!(!w.delete_tap("u1", "once-2").await.unwrap());
        w.commit(T0, &[], &[]).await.unwrap();
        assert!(store.tap_of("u1").await.unwrap().is_none());
    }
}
