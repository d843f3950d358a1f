//! The Graph directory API over HTTP (users, groups, membership, managers, roles, service
//! principals, devices), OData on its collections, and the audit and sign-in log readers.
//! Every test runs on SQLite, and on PostgreSQL when `GATEHOUSE_TEST_DATABASE_URL` is set.

use std::collections::BTreeSet;

use gatehouse_core::auth::secret;
use gatehouse_server::session::{Session, SessionKind};
use gatehouse_server::store::SignInLogRow;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server_support::{T0, TestDb, TestServer};

const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
const MEGAN: &str = "a0000000-0000-4000-8000-000000000002";
const LEE: &str = "a0000000-0000-4000-8000-000000000003";
const NESTOR: &str = "a0000000-0000-4000-8000-000000000007";
const ALL_STAFF: &str = "b0000000-0000-4000-8000-000000000001";
const CA_INTERNALS: &str = "b0000000-0000-4000-8000-000000000002";
const TRAVEL: &str = "b0000000-0000-4000-8000-000000000003";
const ONBOARDING: &str = "b0000000-0000-4000-8000-000000000005";
const POLICY_011: &str = "d0000000-0000-4000-8000-000000000011";
const SHAREPOINT: &str = "00000003-0000-0ff1-ce00-000000000000";
const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const GLOBAL_READER: &str = "f2ef992c-3afb-46b9-b7cf-a126ee74c451";
const DEMO_USERS: usize = 11;

fn new_user(upn: &str, name: &str) -> Value {
    json!({
        "accountEnabled": true,
        "displayName": name,
        "mailNickname": upn.split('@').next().unwrap(),
        "userPrincipalName": upn,
        "passwordProfile": {"forceChangePasswordNextSignIn": false, "password": "Correct-Horse-9"}
    })
}

/// Asserts a Graph error body with this status and code, and returns the message.
fn graph_error(
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    want_code: &str,
) -> String {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["innerError"]["request-id"].is_string(), "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

fn ids(body: &Value) -> Vec<String> {
    body["value"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect()
}

/// Follows `@odata.nextLink` verbatim from `first`, returning every page.
async fn all_pages(server: &TestServer, first: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(url) = next {
        let (status, body) = server.admin(Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        next = body["@odata.nextLink"].as_str().map(str::to_owned);
        if let Some(n) = &next {
            assert!(n.starts_with(&format!("{}/v1.0/", server.base)), "absolute: {n}");
            assert!(n.contains("$skiptoken="), "{n}");
        }
        pages.push(body);
        assert!(pages.len() < 100, "paging does not end");
    }
    pages
}

/// A session token for `user` (as a sign-in would leave), straight into the store.
async fn token_for(server: &TestServer, user: &str) -> String {
    let token = gatehouse_server::random::token("gh_");
    let session = Session {
        id: gatehouse_server::random::guid(),
        user_id: user.into(),
        kind: SessionKind::ApiToken,
        created_at: T0,
        expires_at: None,
        methods: Vec::new(),
        tap_id: None,
        target: None,
    };
    let mut w = server.running.state.store.begin().await.unwrap();
    w.insert_session(&secret::hash(&token), &session).await.unwrap();
    w.commit(T0, &[], &[]).await.unwrap();
    token
}

/// The audit entries naming `target`, newest first.
async fn audits_of(server: &TestServer, target: &str) -> Vec<Value> {
    let url = format!(
        "/v1.0/auditLogs/directoryAudits?$filter=targetResources/any(t:t/id%20eq%20'{target}')"
    );
    let (status, body) = server.admin(Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["value"].as_array().unwrap().clone()
}

/// The activities of `entries`, sorted (writes in one millisecond have no order).
fn activities(entries: &[Value]) -> Vec<&str> {
    let mut out: Vec<&str> =
        entries.iter().map(|e| e["activityDisplayName"].as_str().unwrap()).collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn users_are_created_read_updated_and_deleted() {
    for db in TestDb::each("users_are_created_read_updated_and_deleted").await {
        let server = TestServer::start(&db).await;
        let label = db.label();

        // Create: 201 with the Graph user, no password anywhere.
        let (status, created) = server
            .admin(
                Method::POST,
                "/v1.0/users",
                Some(&new_user("joni@contoso.example", "Joni Sherman")),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {created}");
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["@odata.type"], "#microsoft.graph.user");
        assert!(
            created["@odata.context"].as_str().unwrap().ends_with("/v1.0/$metadata#users/$entity"),
            "{created}"
        );
        assert_eq!(created["userPrincipalName"], "joni@contoso.example");
        assert_eq!(created["userType"], "Member");
        assert_eq!(created["accountEnabled"], true);
        assert!(created["createdDateTime"].is_string());
        assert!(created.get("passwordProfile").is_none(), "{created}");
        assert!(!created.to_string().contains("Correct-Horse-9"));
        let phc = server.running.state.store.password_of(&id).await.unwrap().unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");

        // The same UPN again (any case): 400 naming the property.
        let (status, body) = server
            .admin(Method::POST, "/v1.0/users", Some(&new_user("JONI@contoso.example", "Joni 2")))
            .await;
        let message = graph_error(status, &body, StatusCode::BAD_REQUEST, "Request_BadRequest");
        assert!(
            message.contains("userPrincipalName") && message.contains("already exists"),
            "{message}"
        );

        // Each required property, and the password rules.
        for missing in [
            "accountEnabled",
            "displayName",
            "mailNickname",
            "userPrincipalName",
            "passwordProfile",
        ] {
            let mut body = new_user("x@contoso.example", "X");
            body.as_object_mut().unwrap().remove(missing);
            let (status, err) = server.admin(Method::POST, "/v1.0/users", Some(&body)).await;
            let message = graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
            assert!(message.contains(missing), "{missing}: {message}");
        }
        let mut short = new_user("y@contoso.example", "Y");
        short["passwordProfile"]["password"] = json!("abc");
        let (status, err) = server.admin(Method::POST, "/v1.0/users", Some(&short)).await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest")
                .contains("complexity")
        );
        let mut odd = new_user("z@contoso.example", "Z");
        odd["favouriteColour"] = json!("teal");
        let (status, err) = server.admin(Method::POST, "/v1.0/users", Some(&odd)).await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest")
                .contains("favouriteColour")
        );
        let mut bad_upn = new_user("nodomain", "N");
        bad_upn["userPrincipalName"] = json!("nodomain");
        let (status, err) = server.admin(Method::POST, "/v1.0/users", Some(&bad_upn)).await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");

        // Read by id and by UPN.
        for key in [id.clone(), "Joni@Contoso.example".to_owned()] {
            let (status, body) =
                server.admin(Method::GET, &format!("/v1.0/users/{key}"), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["id"], id.as_str());
        }

        // PATCH: 204, then the change is there; null clears; unknown and read-only refused.
        let patch = json!({"jobTitle": "Marketing Lead", "department": "Marketing", "mail": "joni@contoso.example"});
        let (status, _) =
            server.admin(Method::PATCH, &format!("/v1.0/users/{id}"), Some(&patch)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = server.admin(Method::GET, &format!("/v1.0/users/{id}"), None).await;
        assert_eq!(body["jobTitle"], "Marketing Lead");
        assert_eq!(body["department"], "Marketing");
        let (status, _) = server
            .admin(Method::PATCH, &format!("/v1.0/users/{id}"), Some(&json!({"jobTitle": null})))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = server.admin(Method::GET, &format!("/v1.0/users/{id}"), None).await;
        assert_eq!(body["jobTitle"], Value::Null);
        assert_eq!(body["department"], "Marketing");
        for bad in [
            json!({"displayName": null}),
            json!({"id": ADELE}),
            json!({"accountEnabled": "false"}),
            json!({"userType": "Owner"}),
        ] {
            let (status, err) =
                server.admin(Method::PATCH, &format!("/v1.0/users/{id}"), Some(&bad)).await;
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        }
        let (status, err) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/users/{id}"),
                Some(&json!({"userPrincipalName": "adele@contoso.example"})),
            )
            .await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest")
                .contains("already exists")
        );

        // Delete: 204, then 404 everywhere.
        let (status, _) = server.admin(Method::DELETE, &format!("/v1.0/users/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for path in [
            format!("/v1.0/users/{id}"),
            format!("/v1.0/users/{id}/memberOf"),
            "/v1.0/users/joni@contoso.example".into(),
        ] {
            let (status, err) = server.admin(Method::GET, &path, None).await;
            graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        }
        assert_eq!(server.running.state.store.password_of(&id).await.unwrap(), None);

        // The audit log tells the story, newest first, and never holds the password.
        let entries = audits_of(&server, &id).await;
        assert_eq!(
            activities(&entries),
            vec!["Add user", "Delete user", "Update user", "Update user"],
            "{label}"
        );
        assert!(entries.iter().all(|e| e["category"] == "UserManagement"));
        assert!(entries.iter().all(|e| e["initiatedBy"]["user"]["id"] == NESTOR));
        let (_, everything) =
            server.admin(Method::GET, "/v1.0/auditLogs/directoryAudits?$top=999", None).await;
        assert!(!everything.to_string().contains("Correct-Horse-9"));
        server.stop().await;
    }
}

#[tokio::test]
async fn disabling_an_account_or_resetting_its_password_ends_its_sessions() {
    for db in TestDb::each("disabling_an_account_or_resetting_its_password_ends_its_sessions").await
    {
        let server = TestServer::start(&db).await;
        // Lee holds no role: his token is valid (403, not 401) until his account is disabled.
        let token = token_for(&server, LEE).await;
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/users/{LEE}"),
                Some(&json!({"accountEnabled": false})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // Enabling the account again does not bring the old session back.
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/users/{LEE}"),
                Some(&json!({"accountEnabled": true})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", db.label());

        // A password reset stores a new hash and ends the sessions too.
        let token = token_for(&server, LEE).await;
        let before = server.running.state.store.password_of(LEE).await.unwrap();
        let reset = json!({"passwordProfile": {"password": "Brand-New-Secret-7", "forceChangePasswordNextSignIn": true}});
        let (status, _) =
            server.admin(Method::PATCH, &format!("/v1.0/users/{LEE}"), Some(&reset)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let after = server.running.state.store.password_of(LEE).await.unwrap().unwrap();
        assert_ne!(before.as_deref(), Some(after.as_str()));
        assert!(gatehouse_server::password::verify("Brand-New-Secret-7", &after));
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let entries = audits_of(&server, LEE).await;
        assert_eq!(
            activities(&entries),
            vec!["Disable account", "Reset user password", "Update user"]
        );
        assert!(!entries.iter().any(|e| e.to_string().contains("Brand-New-Secret-7")));
        server.stop().await;
    }
}

#[tokio::test]
async fn groups_and_membership_changes_are_in_force_at_once() {
    for db in TestDb::each("groups_and_membership_changes_are_in_force_at_once").await {
        let server = TestServer::start(&db).await;
        let label = db.label();

        // Create with members bound: 201, members listed with their types.
        let body = json!({
            "displayName": "Project Falcon", "mailEnabled": false, "mailNickname": "falcon",
            "securityEnabled": true, "description": "travellers to Lyon",
            "members@odata.bind": [
                format!("{}/v1.0/directoryObjects/{MEGAN}", server.base),
                format!("https://graph.microsoft.com/v1.0/groups/{ONBOARDING}")
            ]
        });
        let (status, group) = server.admin(Method::POST, "/v1.0/groups", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {group}");
        let gid = group["id"].as_str().unwrap().to_owned();
        assert_eq!(group["@odata.type"], "#microsoft.graph.group");
        assert_eq!(group["groupTypes"], json!([]));
        assert!(group.get("members@odata.bind").is_none());
        let (_, members) = server
            .admin(Method::GET, &format!("/v1.0/groups/{gid}/members?$count=true"), None)
            .await;
        assert_eq!(ids(&members), vec![MEGAN, ONBOARDING]);
        assert_eq!(members["@odata.count"], 2);
        let types: Vec<&str> = members["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["@odata.type"].as_str().unwrap())
            .collect();
        assert_eq!(types, vec!["#microsoft.graph.user", "#microsoft.graph.group"]);
        // Isaiah is in Onboarding, so transitively in the new group.
        let (_, transitive) =
            server.admin(Method::GET, &format!("/v1.0/groups/{gid}/transitiveMembers"), None).await;
        assert!(
            ids(&transitive).contains(&"a0000000-0000-4000-8000-000000000004".to_owned()),
            "{transitive}"
        );

        // Required properties and unsupported group types.
        let (status, err) = server
            .admin(
                Method::POST,
                "/v1.0/groups",
                Some(&json!({"displayName": "x", "mailEnabled": false, "securityEnabled": true})),
            )
            .await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest")
                .contains("mailNickname")
        );
        let dynamic = json!({"displayName": "d", "mailEnabled": false, "mailNickname": "d", "securityEnabled": true, "groupTypes": ["DynamicMembership"]});
        let (status, err) = server.admin(Method::POST, "/v1.0/groups", Some(&dynamic)).await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");

        // Add a member by $ref: 204; again: 400 with Graph's message; itself, or a ghost: refused.
        let add = |id: &str| json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}")});
        let (status, _) = server
            .admin(Method::POST, &format!("/v1.0/groups/{gid}/members/$ref"), Some(&add(ADELE)))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, err) = server
            .admin(Method::POST, &format!("/v1.0/groups/{gid}/members/$ref"), Some(&add(ADELE)))
            .await;
        let message = graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        assert!(message.contains("One or more added object references already exist"), "{message}");
        let (status, err) = server
            .admin(Method::POST, &format!("/v1.0/groups/{gid}/members/$ref"), Some(&add(&gid)))
            .await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let ghost = "a0000000-0000-4000-8000-0000000000ff";
        let (status, err) = server
            .admin(Method::POST, &format!("/v1.0/groups/{gid}/members/$ref"), Some(&add(ghost)))
            .await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        let (status, err) = server
            .admin(
                Method::POST,
                &format!("/v1.0/groups/{gid}/members/$ref"),
                Some(&json!({"id": ADELE})),
            )
            .await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");

        // The README's story: Adele in France is blocked by 011 until she joins CA-Internals-Travel.
        let s = &server;
        let policy_011_applies = move || async move {
            let (status, body) = s
                .admin(
                    Method::POST,
                    "/v1.0/identity/conditionalAccess/evaluate",
                    Some(&adele_in_france()),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["value"].as_array().unwrap().iter().find(|p| p["id"] == POLICY_011).unwrap()["policyApplies"]
                == true
        };
        assert!(policy_011_applies().await, "{label}");
        let (status, _) = server
            .admin(Method::POST, &format!("/v1.0/groups/{TRAVEL}/members/$ref"), Some(&add(ADELE)))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, groups) = server
            .admin(Method::GET, &format!("/v1.0/users/{ADELE}/transitiveMemberOf"), None)
            .await;
        let groups = ids(&groups);
        for g in [TRAVEL, CA_INTERNALS, ALL_STAFF, gid.as_str()] {
            assert!(groups.iter().any(|x| x == g), "{g} in {groups:?}");
        }
        let (_, direct) =
            server.admin(Method::GET, &format!("/v1.0/users/{ADELE}/memberOf"), None).await;
        assert!(!ids(&direct).contains(&ALL_STAFF.to_owned()), "memberOf is direct only");
        assert!(!policy_011_applies().await, "{label}: the next evaluation sees the membership");
        assert!(
            server.running.state.dir().transitive_member_of(ADELE).contains(&TRAVEL.to_owned())
        );

        // Remove: 204, in force at once; removing again is a 404.
        let (status, _) = server
            .admin(Method::DELETE, &format!("/v1.0/groups/{TRAVEL}/members/{ADELE}/$ref"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(policy_011_applies().await);
        let (status, err) = server
            .admin(Method::DELETE, &format!("/v1.0/groups/{TRAVEL}/members/{ADELE}/$ref"), None)
            .await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");

        // PATCH, including members@odata.bind; group memberOf.
        let patch = json!({"description": "Lyon office", "members@odata.bind": [format!("https://x/v1.0/directoryObjects/{LEE}")]});
        let (status, _) =
            server.admin(Method::PATCH, &format!("/v1.0/groups/{gid}"), Some(&patch)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, g) = server
            .admin(Method::GET, &format!("/v1.0/groups/{gid}?$expand=members($select=id)"), None)
            .await;
        assert_eq!(g["description"], "Lyon office");
        let member_ids: Vec<&str> =
            g["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(member_ids, vec![ADELE, MEGAN, LEE, ONBOARDING]);
        let (status, err) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/groups/{gid}"),
                Some(&json!({"isAssignableToRole": true})),
            )
            .await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let (_, of) =
            server.admin(Method::GET, &format!("/v1.0/groups/{ONBOARDING}/memberOf"), None).await;
        assert_eq!(ids(&of), vec![gid.clone()]);

        // Delete (no policy names it): 204, then gone from its members' memberOf.
        let (status, _) = server.admin(Method::DELETE, &format!("/v1.0/groups/{gid}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, err) = server.admin(Method::GET, &format!("/v1.0/groups/{gid}"), None).await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        let (_, of) =
            server.admin(Method::GET, &format!("/v1.0/groups/{ONBOARDING}/memberOf"), None).await;
        assert_eq!(ids(&of), Vec::<String>::new());

        let entries = audits_of(&server, &gid).await;
        assert_eq!(
            activities(&entries),
            vec!["Add group", "Add member to group", "Delete group", "Update group"],
            "{label}"
        );
        server.stop().await;
    }
}

fn adele_in_france() -> Value {
    json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": ADELE},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [SHAREPOINT]},
        "signInConditions": {
            "devicePlatform": "windows", "clientAppType": "browser", "country": "FR", "ipAddress": "198.51.100.77",
            "signInRiskLevel": "none", "userRiskLevel": "none", "insiderRiskLevel": "none",
            "servicePrincipalRiskLevel": "none", "deviceInfo": {}
        }
    })
}

#[tokio::test]
async fn deleting_a_group_a_policy_names_needs_force() {
    for db in TestDb::each("deleting_a_group_a_policy_names_needs_force").await {
        let server = TestServer::start(&db).await;
        let (status, err) =
            server.admin(Method::DELETE, &format!("/v1.0/groups/{TRAVEL}"), None).await;
        let message = graph_error(status, &err, StatusCode::CONFLICT, "conflict");
        assert!(message.contains(POLICY_011) && message.contains("force=true"), "{message}");
        let (status, _) = server.admin(Method::GET, &format!("/v1.0/groups/{TRAVEL}"), None).await;
        assert_eq!(status, StatusCode::OK, "still there");
        let (status, err) =
            server.admin(Method::DELETE, &format!("/v1.0/groups/{TRAVEL}?force=maybe"), None).await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "invalidRequest");
        let (status, _) =
            server.admin(Method::DELETE, &format!("/v1.0/groups/{TRAVEL}?force=true"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{}", db.label());
        let (status, _) = server.admin(Method::GET, &format!("/v1.0/groups/{TRAVEL}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let entries = audits_of(&server, TRAVEL).await;
        assert_eq!(activities(&entries), vec!["Delete group"]);
        let reason = entries[0]["resultReason"].as_str().unwrap();
        assert!(reason.contains("forced") && reason.contains(POLICY_011), "{reason}");
        server.stop().await;
    }
}

#[tokio::test]
async fn paging_follows_next_links_and_sees_every_user_once() {
    for db in TestDb::each("paging_follows_next_links_and_sees_every_user_once").await {
        let server = TestServer::start(&db).await;
        let pages = all_pages(&server, "/v1.0/users?$top=2&$select=id,displayName").await;
        assert_eq!(pages.len(), DEMO_USERS.div_ceil(2), "{}", db.label());
        let seen: Vec<String> = pages.iter().flat_map(ids).collect();
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(seen.len(), DEMO_USERS);
        assert_eq!(unique.len(), DEMO_USERS, "each user exactly once");
        assert!(pages.iter().all(|p| p["value"].as_array().unwrap().len() <= 2));
        // $select survives into the next link.
        assert!(pages[1]["value"][0].get("userPrincipalName").is_none(), "{}", pages[1]);
        assert!(pages[1]["@odata.context"].as_str().unwrap().ends_with("#users(id,displayName)"));

        // Ordered by name, descending, with a filter and a count, across pages.
        let pages = all_pages(&server, "/v1.0/users?$orderby=displayName%20desc&$top=3&$count=true&$filter=userType%20eq%20'Member'").await;
        let names: Vec<String> = pages
            .iter()
            .flat_map(|p| {
                p["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["displayName"].as_str().unwrap().to_owned())
            })
            .collect();
        let mut sorted = names.clone();
        sorted.sort_by_key(|n| std::cmp::Reverse(n.to_lowercase()));
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 9);
        assert!(pages.iter().all(|p| p["@odata.count"] == 9));

        // A user created between pages is seen once or not at all, never twice; none is skipped.
        let (_, first) = server.admin(Method::GET, "/v1.0/users?$top=4", None).await;
        let (status, _) = server
            .admin(Method::POST, "/v1.0/users", Some(&new_user("aaron@contoso.example", "Aaron")))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let mut seen = ids(&first);
        for p in all_pages(&server, first["@odata.nextLink"].as_str().unwrap()).await {
            seen.extend(ids(&p));
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len());
        assert!(seen.len() >= DEMO_USERS);

        // Garbage tokens are a 400, not a 500.
        let (status, err) = server.admin(Method::GET, "/v1.0/users?$skiptoken=bm9wZQ", None).await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "invalidRequest");
        server.stop().await;
    }
}

#[tokio::test]
async fn filters_select_count_and_search_on_collections() {
    for db in TestDb::each("filters_select_count_and_search_on_collections").await {
        let server = TestServer::start(&db).await;
        let s = &server;
        let get = move |path: &str| {
            let path = path.to_owned();
            async move { s.admin(Method::GET, &path, None).await }
        };
        let (status, body) = get("/v1.0/users?$filter=startswith(displayName,'A')").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ids(&body), vec![ADELE, "a0000000-0000-4000-8000-000000000010"]);
        let (_, body) = get("/v1.0/users?$filter=userType%20eq%20'Guest'").await;
        assert_eq!(
            ids(&body),
            vec!["a0000000-0000-4000-8000-000000000006", "a0000000-0000-4000-8000-000000000011"]
        );
        let (_, body) =
            get(&format!("/v1.0/users?$filter=id%20in%20('{LEE}','{ADELE}','nobody')")).await;
        assert_eq!(ids(&body), vec![ADELE, LEE]);
        let (_, body) = get("/v1.0/users?filter=department%20eq%20'sales'%20and%20not%20(jobTitle%20eq%20'Account%20Executive')").await;
        assert_eq!(
            ids(&body),
            vec![
                MEGAN,
                "a0000000-0000-4000-8000-000000000004",
                "a0000000-0000-4000-8000-000000000008"
            ],
            "keys without $, and/not"
        );
        let (_, body) = get("/v1.0/users?$filter=accountEnabled%20eq%20true%20and%20createdDateTime%20ge%202026-01-01T00:00:00Z").await;
        assert_eq!(
            ids(&body),
            vec!["a0000000-0000-4000-8000-000000000004", "a0000000-0000-4000-8000-000000000011"]
        );
        // Form encoding (curl --data-urlencode): `+` is a space, but an offset's sign stays.
        let (_, plus) = get("/v1.0/users?$filter=accountEnabled+eq+true+and+createdDateTime+ge+2026-01-01T00:00:00+00:00").await;
        assert_eq!(
            ids(&plus),
            vec!["a0000000-0000-4000-8000-000000000004", "a0000000-0000-4000-8000-000000000011"],
            "{plus}"
        );
        let (_, body) = get("/v1.0/groups?$filter=securityEnabled%20eq%20true%20and%20startswith(displayName,'CA-Internals')").await;
        assert_eq!(ids(&body), vec![CA_INTERNALS, TRAVEL]);
        let (_, body) = get(&format!(
            "/v1.0/roleManagement/directory/roleAssignments?$filter=principalId%20eq%20'{NESTOR}'"
        ))
        .await;
        assert_eq!(body["value"].as_array().unwrap().len(), 1);
        assert_eq!(body["value"][0]["roleDefinitionId"], GLOBAL_ADMIN);
        let (_, body) =
            get(&format!("/v1.0/servicePrincipals?$filter=appId%20eq%20'{SHAREPOINT}'")).await;
        assert_eq!(body["value"][0]["displayName"], "Office 365 SharePoint Online");

        // A filter on a property the collection does not filter on: 400 naming it.
        let (status, err) = get("/v1.0/users?$filter=usageLocation%20eq%20'GB'").await;
        let message = graph_error(status, &err, StatusCode::BAD_REQUEST, "invalidRequest");
        assert!(message.contains("usageLocation"), "{message}");
        assert_eq!(err["error"]["target"], "usageLocation");
        for bad in [
            "/v1.0/users?$filter=displayName%20eq",
            "/v1.0/users?$format=json",
            "/v1.0/users?$skip=2",
            "/v1.0/users?$top=1000",
            "/v1.0/users?$orderby=jobTitle",
            "/v1.0/users?$expand=owners",
            "/v1.0/users?$search=adele",
            "/v1.0/devices?$filter=model%20eq%20'x'",
        ] {
            let (status, err) = get(bad).await;
            graph_error(status, &err, StatusCode::BAD_REQUEST, "invalidRequest");
        }

        // $select keeps id, @odata.type and the named properties; the context says so.
        let (_, body) = get(&format!("/v1.0/users/{ADELE}?$select=displayName,mail")).await;
        let keys: BTreeSet<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["@odata.context", "@odata.type", "id", "displayName", "mail"])
        );
        assert!(
            body["@odata.context"].as_str().unwrap().ends_with("#users(displayName,mail)/$entity")
        );

        // $count with or without ConsistencyLevel; /$count as text.
        let (_, body) = get("/v1.0/users?$count=true&$top=1").await;
        assert_eq!(body["@odata.count"], DEMO_USERS);
        let (_, body) = server
            .call_with(
                Method::GET,
                "/v1.0/groups?$count=true",
                Some(&server.admin_token),
                None,
                &[("ConsistencyLevel", "eventual")],
            )
            .await;
        assert_eq!(body["@odata.count"], 7);
        let resp = server
            .http
            .get(format!("{}/v1.0/users/$count?$filter=userType%20eq%20'Guest'", server.base))
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), "2");
        let resp = server
            .http
            .get(format!("{}/v1.0/groups/{CA_INTERNALS}/members/$count", server.base))
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), "7");
        let (status, err) = get("/v1.0/users/$count?$top=1").await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "invalidRequest");

        // $search="displayName:…" matches word prefixes.
        let (_, body) = get("/v1.0/users?$search=%22displayName:wil%22").await;
        assert_eq!(ids(&body), vec![NESTOR, "a0000000-0000-4000-8000-000000000010"]);

        // $expand=manager and memberOf on a list and on one user.
        let (_, body) = get(&format!("/v1.0/users?$filter=id%20eq%20'{ADELE}'&$expand=manager($select=displayName)&$select=displayName")).await;
        assert_eq!(
            body["value"][0]["manager"],
            json!({"@odata.type": "#microsoft.graph.user", "id": MEGAN, "displayName": "Megan Bowen"})
        );
        let (_, body) = get(&format!("/v1.0/users/{LEE}?$expand=memberOf")).await;
        let groups: Vec<&str> = body["memberOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap())
            .collect();
        assert_eq!(groups, vec![CA_INTERNALS, TRAVEL]);
        server.stop().await;
    }
}

#[tokio::test]
async fn managers_are_set_read_removed_and_cycles_refused() {
    for db in TestDb::each("managers_are_set_read_removed_and_cycles_refused").await {
        let server = TestServer::start(&db).await;
        let (status, body) =
            server.admin(Method::GET, &format!("/v1.0/users/{ADELE}/manager"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["id"], MEGAN);
        assert_eq!(body["@odata.type"], "#microsoft.graph.user");
        let (_, body) =
            server.admin(Method::GET, &format!("/v1.0/users/{ADELE}/manager/$ref"), None).await;
        assert_eq!(body["@odata.id"], format!("{}/v1.0/directoryObjects/{MEGAN}", server.base));
        let (_, reports) =
            server.admin(Method::GET, &format!("/v1.0/users/{MEGAN}/directReports"), None).await;
        assert_eq!(
            ids(&reports),
            vec![
                ADELE,
                LEE,
                "a0000000-0000-4000-8000-000000000004",
                "a0000000-0000-4000-8000-000000000008",
                "a0000000-0000-4000-8000-000000000011"
            ]
        );

        // Megan reporting to Adele would close a loop: refused. Herself too.
        let link =
            |id: &str| json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/users/{id}")});
        let (status, err) = server
            .admin(Method::PUT, &format!("/v1.0/users/{MEGAN}/manager/$ref"), Some(&link(ADELE)))
            .await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest")
                .contains("cycle")
        );
        let (status, err) = server
            .admin(Method::PUT, &format!("/v1.0/users/{MEGAN}/manager/$ref"), Some(&link(MEGAN)))
            .await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let (status, err) = server
            .admin(Method::PUT, &format!("/v1.0/users/{MEGAN}/manager/$ref"), Some(&link(TRAVEL)))
            .await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let (status, err) = server
            .admin(
                Method::PUT,
                &format!("/v1.0/users/{MEGAN}/manager/$ref"),
                Some(&link("a0000000-0000-4000-8000-0000000000ff")),
            )
            .await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");

        // Remove, then 404; set again (by UPN in the link); the change is in /manager.
        let (status, _) =
            server.admin(Method::DELETE, &format!("/v1.0/users/{ADELE}/manager/$ref"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, err) =
            server.admin(Method::GET, &format!("/v1.0/users/{ADELE}/manager"), None).await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        let (status, err) =
            server.admin(Method::DELETE, &format!("/v1.0/users/{ADELE}/manager/$ref"), None).await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        let (status, _) = server
            .admin(
                Method::PUT,
                &format!("/v1.0/users/{ADELE}/manager/$ref"),
                Some(&link("nestor@contoso.example")),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) =
            server.admin(Method::GET, "/v1.0/users/adele@contoso.example/manager", None).await;
        assert_eq!(body["id"], NESTOR);
        // Now Megan may report to Adele: the old chain is gone.
        let (status, _) = server
            .admin(Method::PUT, &format!("/v1.0/users/{MEGAN}/manager/$ref"), Some(&link(ADELE)))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{}", db.label());
        // A PATCH of the user keeps the manager.
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/users/{ADELE}"),
                Some(&json!({"jobTitle": "Director"})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) =
            server.admin(Method::GET, &format!("/v1.0/users/{ADELE}/manager"), None).await;
        assert_eq!(body["id"], NESTOR);
        // Deleting the manager leaves the report without one.
        let (status, _) = server.admin(Method::DELETE, &format!("/v1.0/users/{ADELE}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) =
            server.admin(Method::GET, &format!("/v1.0/users/{MEGAN}/manager"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        server.stop().await;
    }
}

#[tokio::test]
async fn role_assignments_and_definitions() {
    for db in TestDb::each("role_assignments_and_definitions").await {
        let server = TestServer::start(&db).await;
        let base = "/v1.0/roleManagement/directory";
        let (_, defs) = server.admin(Method::GET, &format!("{base}/roleDefinitions"), None).await;
        let defs = defs["value"].as_array().unwrap();
        assert_eq!(defs.len(), 11);
        assert!(defs.iter().all(|d| d["isBuiltIn"] == true && d["templateId"] == d["id"]));
        let (_, reader) = server
            .admin(Method::GET, &format!("{base}/roleDefinitions/{GLOBAL_READER}"), None)
            .await;
        assert_eq!(reader["displayName"], "Global Reader");

        // Adele holds no role: 403; assigned Global Reader, she reads users.
        let adele = token_for(&server, ADELE).await;
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&adele), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let body = json!({"principalId": ADELE, "roleDefinitionId": GLOBAL_READER, "directoryScopeId": "/"});
        let (status, created) =
            server.admin(Method::POST, &format!("{base}/roleAssignments"), Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["@odata.type"], "#microsoft.graph.unifiedRoleAssignment");
        let aid = created["id"].as_str().unwrap().to_owned();
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&adele), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = server
            .call(Method::POST, &format!("{base}/roleAssignments"), Some(&adele), Some(&body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a reader cannot assign roles");
        let (status, err) =
            server.admin(Method::POST, &format!("{base}/roleAssignments"), Some(&body)).await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let (_, got) = server.admin(Method::GET, &format!("{base}/roleAssignments/{aid}?$expand=principal($select=userPrincipalName),roleDefinition"), None).await;
        assert_eq!(got["principal"]["userPrincipalName"], "adele@contoso.example");
        assert_eq!(got["roleDefinition"]["displayName"], "Global Reader");

        // Unknown principal, unknown role, a group that is not role-assignable, unknown keys.
        for bad in [
            json!({"principalId": "a0000000-0000-4000-8000-0000000000ff", "roleDefinitionId": GLOBAL_READER}),
            json!({"principalId": ADELE, "roleDefinitionId": "00000000-0000-0000-0000-000000000000"}),
            json!({"principalId": TRAVEL, "roleDefinitionId": GLOBAL_READER}),
            json!({"principalId": ADELE, "roleDefinitionId": GLOBAL_READER, "appScopeId": "/"}),
            json!({"roleDefinitionId": GLOBAL_READER}),
        ] {
            let (status, err) =
                server.admin(Method::POST, &format!("{base}/roleAssignments"), Some(&bad)).await;
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        }

        // Delete: 204, and the role is gone on the next request.
        let (status, _) =
            server.admin(Method::DELETE, &format!("{base}/roleAssignments/{aid}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = server.call(Method::GET, "/v1.0/users", Some(&adele), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}", db.label());
        let (status, err) =
            server.admin(Method::GET, &format!("{base}/roleAssignments/{aid}"), None).await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");

        // The last tenant-wide Global Administrator assignment stays.
        let (_, gas) = server
            .admin(
                Method::GET,
                &format!("{base}/roleAssignments?$filter=roleDefinitionId%20eq%20'{GLOBAL_ADMIN}'"),
                None,
            )
            .await;
        let gas: Vec<Value> = gas["value"].as_array().unwrap().clone();
        assert_eq!(gas.len(), 3);
        let (nestor, others): (Vec<Value>, Vec<Value>) =
            gas.into_iter().partition(|a| a["principalId"] == NESTOR);
        for a in &others {
            let (status, _) = server
                .admin(
                    Method::DELETE,
                    &format!("{base}/roleAssignments/{}", a["id"].as_str().unwrap()),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        let (status, err) = server
            .admin(
                Method::DELETE,
                &format!("{base}/roleAssignments/{}", nestor[0]["id"].as_str().unwrap()),
                None,
            )
            .await;
        graph_error(status, &err, StatusCode::CONFLICT, "conflict");

        let entries = audits_of(&server, ADELE).await;
        assert_eq!(activities(&entries), vec!["Add member to role", "Remove member from role"]);
        assert!(entries.iter().all(|e| e["category"] == "RoleManagement"));
        server.stop().await;
    }
}

#[tokio::test]
async fn service_principals_applications_devices_and_directory_objects() {
    for db in TestDb::each("service_principals_applications_devices_and_directory_objects").await {
        let server = TestServer::start(&db).await;
        let app_id = "f1000000-0000-4000-8000-0000000000aa";
        let (status, sp) = server
            .admin(
                Method::POST,
                "/v1.0/servicePrincipals",
                Some(
                    &json!({"appId": app_id.to_uppercase(), "displayName": "Contoso Travel Desk"}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{sp}");
        let sid = sp["id"].as_str().unwrap().to_owned();
        assert_eq!(sp["appId"], app_id);
        assert_eq!(sp["@odata.type"], "#microsoft.graph.servicePrincipal");
        let (status, err) = server
            .admin(Method::POST, "/v1.0/servicePrincipals", Some(&json!({"appId": app_id})))
            .await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest")
                .contains("appId")
        );
        let (status, err) = server
            .admin(Method::POST, "/v1.0/servicePrincipals", Some(&json!({"appId": "travel"})))
            .await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/servicePrincipals/{sid}"),
                Some(&json!({"displayName": "Travel Desk", "tags": ["travel"]})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, err) = server
            .admin(
                Method::PATCH,
                &format!("/v1.0/servicePrincipals/{sid}"),
                Some(&json!({"appId": SHAREPOINT})),
            )
            .await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let (_, apps) = server
            .admin(
                Method::GET,
                &format!("/v1.0/applications?$filter=appId%20eq%20'{app_id}'"),
                None,
            )
            .await;
        assert_eq!(apps["value"][0]["displayName"], "Travel Desk");
        assert_eq!(apps["value"][0]["@odata.type"], "#microsoft.graph.application");
        let (status, app) =
            server.admin(Method::GET, &format!("/v1.0/applications/{app_id}"), None).await;
        assert_eq!((status, app["id"].as_str()), (StatusCode::OK, Some(sid.as_str())));

        // A policy that names the app: deleting its service principal needs force.
        let policy = json!({
            "displayName": "Travel desk: block", "state": "enabledForReportingButNotEnforced",
            "conditions": {
                "users": {"includeUsers": ["All"]},
                "applications": {"includeApplications": [app_id]},
                "clientAppTypes": ["all"]
            },
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}
        });
        let (status, created_policy) = server
            .admin(Method::POST, "/v1.0/identity/conditionalAccess/policies", Some(&policy))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created_policy}");
        let (status, err) =
            server.admin(Method::DELETE, &format!("/v1.0/servicePrincipals/{sid}"), None).await;
        let message = graph_error(status, &err, StatusCode::CONFLICT, "conflict");
        assert!(message.contains("Travel desk: block"), "{message}");
        let (status, _) = server
            .admin(Method::DELETE, &format!("/v1.0/servicePrincipals/{sid}?force=true"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) =
            server.admin(Method::GET, &format!("/v1.0/applications/{app_id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, sharepoint) = server
            .admin(
                Method::GET,
                &format!("/v1.0/servicePrincipals?$filter=appId%20eq%20'{SHAREPOINT}'"),
                None,
            )
            .await;
        let sharepoint_id = sharepoint["value"][0]["id"].as_str().unwrap().to_owned();

        // Devices: create with extension attributes, filter, patch (merging), delete.
        let device = json!({
            "deviceId": "e5000000-0000-4000-8000-000000000142", "displayName": "CONTOSO-LT-0142",
            "operatingSystem": "Windows", "operatingSystemVersion": "10.0.26100", "isCompliant": true,
            "isManaged": true, "trustType": "azuread", "extensionAttributes": {"extensionAttribute1": "Finance"}
        });
        let (status, d) = server.admin(Method::POST, "/v1.0/devices", Some(&device)).await;
        assert_eq!(status, StatusCode::CREATED, "{d}");
        let did = d["id"].as_str().unwrap().to_owned();
        assert_eq!(d["trustType"], "AzureAd");
        assert_eq!(d["extensionAttributes"]["extensionAttribute1"], "Finance");
        assert_eq!(d["extensionAttributes"]["extensionAttribute15"], Value::Null);
        let (status, err) = server.admin(Method::POST, "/v1.0/devices", Some(&device)).await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest")
                .contains("deviceId")
        );
        let (status, err) = server.admin(Method::POST, "/v1.0/devices", Some(&json!({"deviceId": "e5000000-0000-4000-8000-000000000143", "displayName": "x", "operatingSystem": "iOS", "extensionAttributes": {"extensionAttribute16": "no"}}))).await;
        graph_error(status, &err, StatusCode::BAD_REQUEST, "Request_BadRequest");
        let patch =
            json!({"isCompliant": false, "extensionAttributes": {"extensionAttribute2": "Kiosk"}});
        let (status, _) =
            server.admin(Method::PATCH, &format!("/v1.0/devices/{did}"), Some(&patch)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, list) = server
            .admin(
                Method::GET,
                "/v1.0/devices?$filter=isCompliant%20eq%20false%20and%20trustType%20eq%20'AzureAd'",
                None,
            )
            .await;
        assert_eq!(ids(&list), vec![did.clone()]);
        assert_eq!(list["value"][0]["extensionAttributes"]["extensionAttribute1"], "Finance");
        assert_eq!(list["value"][0]["extensionAttributes"]["extensionAttribute2"], "Kiosk");

        // directoryObjects: one route, every kind, typed.
        for (id, kind) in [
            (ADELE.to_owned(), "user"),
            (TRAVEL.to_owned(), "group"),
            (sharepoint_id.clone(), "servicePrincipal"),
            (did.clone(), "device"),
        ] {
            let (status, o) =
                server.admin(Method::GET, &format!("/v1.0/directoryObjects/{id}"), None).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(o["@odata.type"], format!("#microsoft.graph.{kind}"));
        }
        // A device may be a group member.
        let (status, _) = server
            .admin(
                Method::POST,
                &format!("/v1.0/groups/{TRAVEL}/members/$ref"),
                Some(&json!({"@odata.id": format!("https://x/v1.0/directoryObjects/{did}")})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = server.admin(Method::DELETE, &format!("/v1.0/devices/{did}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{}", db.label());
        let (_, members) =
            server.admin(Method::GET, &format!("/v1.0/groups/{TRAVEL}/members"), None).await;
        assert_eq!(ids(&members), vec![LEE], "a deleted device leaves its groups");
        let (status, err) =
            server.admin(Method::GET, &format!("/v1.0/directoryObjects/{did}"), None).await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        assert_eq!(
            activities(&audits_of(&server, &did).await),
            vec!["Add device", "Add member to group", "Delete device", "Update device"]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_and_filters() {
    for db in TestDb::each("the_audit_log_pages_newest_first_and_filters").await {
        let server = TestServer::start(&db).await;
        // Seven writes, some in the same millisecond (ties break by id), some later.
        let add = |id: &str| json!({"@odata.id": format!("https://x/v1.0/directoryObjects/{id}")});
        for (i, user) in [ADELE, MEGAN, LEE].iter().enumerate() {
            server.clock.advance(if i == 1 { 0 } else { 1_000 });
            let (status, _) = server
                .admin(
                    Method::POST,
                    &format!("/v1.0/groups/{ONBOARDING}/members/$ref"),
                    Some(&add(user)),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        for user in [ADELE, MEGAN, LEE, NESTOR] {
            let (status, _) = server
                .admin(
                    Method::PATCH,
                    &format!("/v1.0/users/{user}"),
                    Some(&json!({"officeLocation": "Lyon"})),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        let pages = all_pages(&server, "/v1.0/auditLogs/directoryAudits?$top=2").await;
        let entries: Vec<Value> =
            pages.iter().flat_map(|p| p["value"].as_array().unwrap().clone()).collect();
        assert!(pages.len() >= 4, "{}: {} pages", db.label(), pages.len());
        let unique: BTreeSet<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(unique.len(), entries.len(), "each entry once");
        assert_eq!(entries.len(), 8, "7 writes and the demo seed");
        let times: Vec<i64> = entries
            .iter()
            .map(|e| gatehouse_core::time::parse(e["activityDateTime"].as_str().unwrap()).unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
        assert_eq!(entries.last().unwrap()["activityDisplayName"], "Seed demo tenant");

        // Filters on category, activity, actor, time and target; combined; paged.
        let s = &server;
        let count = move |path: String| async move {
            let pages = all_pages(s, &path).await;
            pages.iter().map(|p| p["value"].as_array().unwrap().len()).sum::<usize>()
        };
        assert_eq!(
            count(
                "/v1.0/auditLogs/directoryAudits?$filter=category%20eq%20'GroupManagement'".into()
            )
            .await,
            3
        );
        assert_eq!(count("/v1.0/auditLogs/directoryAudits?$filter=activityDisplayName%20eq%20'Update%20user'&$top=1".into()).await, 4);
        assert_eq!(count(format!("/v1.0/auditLogs/directoryAudits?$filter=initiatedBy/user/id%20eq%20'{NESTOR}'&$top=3")).await, 7);
        let since = gatehouse_core::time::format(T0 + 2_000);
        assert_eq!(
            count(format!(
                "/v1.0/auditLogs/directoryAudits?$filter=activityDateTime%20ge%20{since}&$top=2"
            ))
            .await,
            5
        );
        let since_sdk = since.replace('Z', "%2B00:00");
        assert_eq!(
            count(format!(
                "/v1.0/auditLogs/directoryAudits?$filter=activityDateTime%20ge%20'{since_sdk}'"
            ))
            .await,
            5
        );
        // Megan is the first target of her membership and of her update.
        assert_eq!(count(format!("/v1.0/auditLogs/directoryAudits?$filter=targetResources/any(t:t/id%20eq%20'{MEGAN}')")).await, 2);
        // Onboarding is the second target of each membership.
        assert_eq!(count(format!("/v1.0/auditLogs/directoryAudits?$filter=targetResources/any(t:t/id%20eq%20'{ONBOARDING}')%20and%20not%20(activityDisplayName%20eq%20'x')&$top=1")).await, 3);

        // One entry by id; unknown ids and unfilterable properties.
        let id = entries[0]["id"].as_str().unwrap();
        let (status, one) =
            server.admin(Method::GET, &format!("/v1.0/auditLogs/directoryAudits/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["id"], id);
        let (status, err) =
            server.admin(Method::GET, "/v1.0/auditLogs/directoryAudits/nope", None).await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "itemNotFound");
        for bad in [
            "/v1.0/auditLogs/directoryAudits?$filter=loggedByService%20eq%20'x'",
            "/v1.0/auditLogs/directoryAudits?$filter=activityDateTime%20ge%20'soon'",
            "/v1.0/auditLogs/directoryAudits?$count=true",
            "/v1.0/auditLogs/directoryAudits?$orderby=activityDateTime",
            "/v1.0/auditLogs/directoryAudits?$skiptoken=WyJhIiwiYiJd",
        ] {
            let (status, err) = server.admin(Method::GET, bad, None).await;
            graph_error(status, &err, StatusCode::BAD_REQUEST, "invalidRequest");
        }
        // Reading the logs is for report readers, not for every directory reader.
        let lee = token_for(&server, LEE).await;
        let (status, _) =
            server.call(Method::GET, "/v1.0/auditLogs/directoryAudits", Some(&lee), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        server.stop().await;
    }
}

#[tokio::test]
async fn the_signin_log_pages_newest_first_and_filters() {
    for db in TestDb::each("the_signin_log_pages_newest_first_and_filters").await {
        let server = TestServer::start(&db).await;
        // Rows as the sign-in engine writes them: seven attempts, two sharing an instant.
        let store = &server.running.state.store;
        let mut w = store.begin().await.unwrap();
        let rows = [
            (0, ADELE, "adele@contoso.example", 0, "success"),
            (1_000, ADELE, "adele@contoso.example", 50126, "notApplied"),
            (2_000, MEGAN, "megan@contoso.example", 0, "success"),
            (2_000, LEE, "lee@contoso.example", 53003, "failure"),
            (3_000, ADELE, "adele@contoso.example", 53003, "failure"),
            (4_000, LEE, "lee@contoso.example", 0, "success"),
            (5_000, MEGAN, "Megan@Contoso.example", 0, "notApplied"),
        ];
        let mut ids_in_order = Vec::new();
        for (i, (at, user, upn, code, ca)) in rows.iter().enumerate() {
            let id = format!("5{i:07}-0000-4000-8000-000000000000");
            ids_in_order.push(id.clone());
            let body = json!({
                "id": id, "createdDateTime": gatehouse_core::time::format(T0 + at), "userId": user,
                "userPrincipalName": upn, "appId": SHAREPOINT, "ipAddress": "203.0.113.5",
                "status": {"errorCode": code, "failureReason": null}, "conditionalAccessStatus": ca,
                "appliedConditionalAccessPolicies": []
            });
            let row = SignInLogRow {
                id,
                created_at: T0 + at,
                user_id: Some((*user).into()),
                upn: Some((*upn).into()),
                app_id: Some(SHAREPOINT.into()),
                error_code: *code,
                ca_status: (*ca).into(),
                body,
            };
            w.insert_signin_log(&row).await.unwrap();
        }
        w.commit(T0, &[], &[]).await.unwrap();

        let pages = all_pages(&server, "/v1.0/auditLogs/signIns?$top=3").await;
        assert_eq!(pages.len(), 3, "{}", db.label());
        let seen: Vec<String> = pages.iter().flat_map(ids).collect();
        // Newest first; the tie at +2s breaks by id, descending.
        let mut expected = ids_in_order.clone();
        expected.reverse();
        assert_eq!(seen, expected);

        let s = &server;
        let filtered = move |q: &str| {
            let url = format!("/v1.0/auditLogs/signIns?$filter={q}&$top=2");
            async move { all_pages(s, &url).await.iter().flat_map(ids).collect::<Vec<String>>() }
        };
        let id = |i: usize| ids_in_order[i].clone();
        assert_eq!(filtered(&format!("userId%20eq%20'{ADELE}'")).await, vec![id(4), id(1), id(0)]);
        assert_eq!(
            filtered("userPrincipalName%20eq%20'megan@contoso.example'").await,
            vec![id(6), id(2)]
        );
        assert_eq!(filtered("status/errorCode%20eq%2053003").await, vec![id(4), id(3)]);
        assert_eq!(
            filtered("status/errorCode%20ne%200%20and%20conditionalAccessStatus%20eq%20'failure'")
                .await,
            vec![id(4), id(3)]
        );
        let from = gatehouse_core::time::format(T0 + 2_000);
        let to = gatehouse_core::time::format(T0 + 4_000);
        assert_eq!(
            filtered(&format!("createdDateTime%20ge%20{from}%20and%20createdDateTime%20lt%20{to}"))
                .await,
            vec![id(4), id(3), id(2)]
        );
        assert_eq!(
            filtered(&format!(
                "appId%20eq%20'{SHAREPOINT}'%20and%20conditionalAccessStatus%20in%20('notApplied')"
            ))
            .await,
            vec![id(6), id(1)]
        );
        assert_eq!(filtered("startswith(userPrincipalName,'LEE')").await, vec![id(5), id(3)]);

        let (status, one) = server
            .admin(Method::GET, &format!("/v1.0/auditLogs/signIns/{}?$select=status", id(3)), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["status"]["errorCode"], 53003);
        assert!(one.get("userId").is_none());
        let (status, err) = server.admin(Method::GET, "/v1.0/auditLogs/signIns/nope", None).await;
        graph_error(status, &err, StatusCode::NOT_FOUND, "itemNotFound");
        let (status, err) = server
            .admin(Method::GET, "/v1.0/auditLogs/signIns?$filter=ipAddress%20eq%20'1.2.3.4'", None)
            .await;
        assert!(
            graph_error(status, &err, StatusCode::BAD_REQUEST, "invalidRequest")
                .contains("ipAddress")
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn bad_input_gets_graph_errors_never_a_500() {
    for db in TestDb::each("bad_input_gets_graph_errors_never_a_500").await {
        let server = TestServer::start(&db).await;
        for (path, method) in [
            ("/v1.0/users", Method::POST),
            ("/v1.0/groups", Method::POST),
            (&*format!("/v1.0/users/{ADELE}"), Method::PATCH),
            (&*format!("/v1.0/groups/{TRAVEL}/members/$ref"), Method::POST),
            ("/v1.0/devices", Method::POST),
            ("/v1.0/roleManagement/directory/roleAssignments", Method::POST),
        ] {
            let resp = server
                .http
                .request(method.clone(), format!("{}{path}", server.base))
                .bearer_auth(&server.admin_token)
                .header("content-type", "application/json")
                .body("{\"displayName\": ")
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            graph_error(status, &body, StatusCode::BAD_REQUEST, "badRequest");
            let (status, body) =
                server.admin(method, path, Some(&json!(["not", "an", "object"]))).await;
            graph_error(status, &body, StatusCode::BAD_REQUEST, "badRequest");
        }
        let ghost = "a0000000-0000-4000-8000-0000000000ff";
        for path in [
            format!("/v1.0/users/{ghost}"),
            format!("/v1.0/users/{ghost}/manager"),
            format!("/v1.0/users/{ghost}/directReports"),
            format!("/v1.0/groups/{ghost}"),
            format!("/v1.0/groups/{ghost}/members"),
            format!("/v1.0/groups/{ghost}/transitiveMembers"),
            format!("/v1.0/servicePrincipals/{ghost}"),
            format!("/v1.0/applications/{ghost}"),
            format!("/v1.0/devices/{ghost}"),
            format!("/v1.0/directoryObjects/{ghost}"),
            format!("/v1.0/roleManagement/directory/roleAssignments/{ghost}"),
            format!("/v1.0/roleManagement/directory/roleDefinitions/{ghost}"),
        ] {
            let (status, body) = server.admin(Method::GET, &path, None).await;
            graph_error(status, &body, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        }
        for (method, path) in [
            (Method::PATCH, format!("/v1.0/users/{ghost}")),
            (Method::DELETE, format!("/v1.0/users/{ghost}")),
            (Method::PATCH, format!("/v1.0/groups/{ghost}")),
            (Method::DELETE, format!("/v1.0/groups/{ghost}")),
            (Method::DELETE, format!("/v1.0/devices/{ghost}")),
            (Method::DELETE, format!("/v1.0/servicePrincipals/{ghost}")),
            (Method::DELETE, format!("/v1.0/roleManagement/directory/roleAssignments/{ghost}")),
        ] {
            let (status, body) = server.admin(method, &path, Some(&json!({}))).await;
            graph_error(status, &body, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
        }
        // Hostile filters are bounded, not fatal.
        let deep =
            format!("/v1.0/users?$filter={}id%20eq%20'x'{}", "(".repeat(200), ")".repeat(200));
        let (status, body) = server.admin(Method::GET, &deep, None).await;
        graph_error(status, &body, StatusCode::BAD_REQUEST, "invalidRequest");
        let (status, body) =
            server.admin(Method::GET, "/v1.0/users?$filter=displayName%20eq%20'%ZZ'", None).await;
        graph_error(status, &body, StatusCode::BAD_REQUEST, "badRequest");
        // No token: 401 with the Graph body.
        let (status, body) = server.call(Method::GET, "/v1.0/users", None, None).await;
        graph_error(status, &body, StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken");
        server.stop().await;
    }
}
