//! Entitlement management through the HTTP API: the travel story end to end, on SQLite and on
//! PostgreSQL, with a real SMTP server receiving the mails.

use gatehouse_server::clock::ManualClock;
use gatehouse_server::demo::{ADELE, ADELE_TOTP_SECRET, MEGAN_TOTP_SECRET, TRAVEL_GROUP};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::governance_support::{
    EM, FRANCE, SmtpSink, get, graph_session, is_member, run_workers, sign_in,
};
use crate::server_support::{T0, TestDb, TestServer, config};

const EXPENSES: &str = "f1000000-0000-4000-8000-000000000001";
pub const DAY: i64 = 86_400_000;

pub fn governance_config(sink: Option<&SmtpSink>) -> gatehouse_server::Config {
    let mut c = config();
    c.mail.smtp_url = sink.map(SmtpSink::url);
    c.mail.from = "Gatehouse <gatehouse@contoso.example>".into();
    c.governance.time_zone = "Europe/London".into();
    c.governance.insecure_webhook_hosts = vec!["127.0.0.1".into()];
    c
}

/// What the administrator posts to build the package: the catalog, the group as its resource,
/// the package, its member role, the policy. Returns (catalog, package, policy).
pub async fn build_travel_package(
    server: &TestServer,
    catalog_name: &str,
) -> (String, String, String) {
    let (s, catalog) = server
        .admin(
            Method::POST,
            &format!("{EM}/catalogs"),
            Some(&json!({"displayName": catalog_name, "description": "Business travel"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{catalog}");
    let catalog = catalog["id"].as_str().unwrap().to_owned();
    let (s, rr) = server
        .admin(
            Method::POST,
            &format!("{EM}/resourceRequests"),
            Some(&json!({
                "requestType": "adminAdd",
                "resource": {"originId": TRAVEL_GROUP, "originSystem": "AadGroup"},
                "catalog": {"id": catalog},
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rr}");
    assert_eq!(rr["state"], "delivered");
    let (s, pkg) = server
        .admin(
            Method::POST,
            &format!("{EM}/accessPackages"),
            Some(&json!({"displayName": "Internals Travelling", "catalog": {"id": catalog}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pkg}");
    let pkg = pkg["id"].as_str().unwrap().to_owned();
    let roles = get(server, &server.admin_token, &format!("{EM}/catalogs/{catalog}/resourceRoles?$filter=originSystem eq 'AadGroup' and resource/originId eq '{TRAVEL_GROUP}'&$expand=resource")).await;
    let member = roles["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["displayName"] == "Member")
        .unwrap()
        .clone();
    assert_eq!(member["originId"], format!("Member_{TRAVEL_GROUP}"));
    let (s, rs) = server
        .admin(Method::POST, &format!("{EM}/accessPackages/{pkg}/resourceRoleScopes"), Some(&json!({
            "role": {"originId": member["originId"], "originSystem": "AadGroup", "resource": {"id": member["resource"]["id"]}},
            "scope": {"originId": TRAVEL_GROUP, "originSystem": "AadGroup", "isRootScope": true},
        })))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rs}");

    // Manager approval with nobody to fall back on could reach nobody: refused, saying why.
    let mut policy = gatehouse_server::demo::travel_policy(&pkg);
    policy["requestApprovalSettings"]["stages"][0]["fallbackPrimaryApprovers"] = json!([]);
    let (s, err) =
        server.admin(Method::POST, &format!("{EM}/assignmentPolicies"), Some(&policy)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "GH-EM-012");
    assert!(err["error"]["message"].as_str().unwrap().contains("fallback approver"), "{err}");

    let policy = gatehouse_server::demo::travel_policy(&pkg);
    let (s, created) =
        server.admin(Method::POST, &format!("{EM}/assignmentPolicies"), Some(&policy)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["expiration"]["duration"], "P7D");
    assert_eq!(
        created["requestApprovalSettings"]["stages"][0]["fallbackPrimaryApprovers"][0]["description"],
        "Nestor Wilke"
    );
    (catalog, pkg, created["id"].as_str().unwrap().to_owned())
}

pub fn answers() -> Value {
    json!([
        {"@odata.type": "#microsoft.graph.accessPackageAnswerString", "value": "FR",
         "answeredQuestion": {"@odata.type": "#microsoft.graph.accessPackageMultipleChoiceQuestion", "id": gatehouse_server::demo::COUNTRY_QUESTION}},
        {"@odata.type": "#microsoft.graph.accessPackageAnswerString", "value": "TR-2026",
         "answeredQuestion": {"@odata.type": "#microsoft.graph.accessPackageTextInputQuestion", "id": gatehouse_server::demo::TRIP_QUESTION}},
    ])
}

pub fn user_add(pkg: &str, policy: &str, answers: Value) -> Value {
    json!({
        "requestType": "userAdd",
        "justification": "Customer workshop in Paris",
        "assignment": {"targetId": ADELE, "assignmentPolicyId": policy, "accessPackageId": pkg},
        "answers": answers,
    })
}

#[tokio::test]
async fn the_travel_story_through_the_api() {
    let Some(mut sink) = SmtpSink::start("the_travel_story_through_the_api").await else { return };
    for db in TestDb::each("the_travel_story_through_the_api").await {
        let server =
            TestServer::start_with(&db, governance_config(Some(&sink)), ManualClock::at(T0)).await;
        let label = db.label();
        let (_, pkg, policy) = build_travel_package(&server, "Business travel").await;

        // Adele, in France without the travel persona, is blocked by 011.
        let (_, blocked) = sign_in(
            &server,
            "adele@contoso.example",
            json!({"appId": EXPENSES}),
            Some(FRANCE),
            Some(ADELE_TOTP_SECRET),
        )
        .await;
        assert_eq!(blocked["error"]["code"], "53003", "{label}: {blocked}");

        // From home she signs in to Graph and finds the package among those she may request.
        let adele = graph_session(&server, "adele@contoso.example", ADELE_TOTP_SECRET).await;
        let offered = get(
            &server,
            &adele,
            &format!("{EM}/accessPackages/filterByCurrentUser(on='allowedRequestor')"),
        )
        .await;
        assert!(
            offered["value"].as_array().unwrap().iter().any(|p| p["id"] == pkg),
            "{label}: {offered}"
        );
        let reqs = server
            .call(
                Method::POST,
                &format!("{EM}/accessPackages/{pkg}/getApplicablePolicyRequirements"),
                Some(&adele),
                None,
            )
            .await
            .1;
        assert_eq!(reqs["value"][0]["policyId"], policy, "{reqs}");
        assert_eq!(reqs["value"][0]["questions"].as_array().unwrap().len(), 2);

        // Bad answers are refused with what is wrong.
        let mut wrong = answers();
        wrong[1]["value"] = json!("2026");
        let (s, err) = server
            .call(
                Method::POST,
                &format!("{EM}/assignmentRequests"),
                Some(&adele),
                Some(&user_add(&pkg, &policy, wrong)),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["code"], "GH-EM-021");
        assert!(err["error"]["message"].as_str().unwrap().contains("^TR-[0-9]{4}$"), "{err}");
        let mut no_reason = user_add(&pkg, &policy, answers());
        no_reason["justification"] = Value::Null;
        let (s, err) = server
            .call(Method::POST, &format!("{EM}/assignmentRequests"), Some(&adele), Some(&no_reason))
            .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("GH-EM-022")),
            "{err}"
        );
        let (s, err) = server
            .call(
                Method::POST,
                &format!("{EM}/assignmentRequests"),
                Some(&adele),
                Some(&user_add(&pkg, &policy, json!([]))),
            )
            .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("GH-EM-020")),
            "{err}"
        );

        // She requests it; the answer says it waits for approval.
        let key = [("Idempotency-Key", "adele-trip-1")];
        let (s, request) = server
            .call_with(
                Method::POST,
                &format!("{EM}/assignmentRequests"),
                Some(&adele),
                Some(&user_add(&pkg, &policy, answers())),
                &key,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{label}: {request}");
        assert_eq!(request["state"], "pendingApproval", "{request}");
        assert_eq!(request["status"], "PendingApproval");
        let rid = request["id"].as_str().unwrap().to_owned();
        // The client repeats its POST (a lost answer): it gets the same request.
        let (s, again) = server
            .call_with(
                Method::POST,
                &format!("{EM}/assignmentRequests"),
                Some(&adele),
                Some(&user_add(&pkg, &policy, answers())),
                &key,
            )
            .await;
        assert_eq!((s, again["id"].as_str()), (StatusCode::CREATED, Some(rid.as_str())));
        // A second request without the key is refused and names the first.
        let (s, dup) = server
            .call(
                Method::POST,
                &format!("{EM}/assignmentRequests"),
                Some(&adele),
                Some(&user_add(&pkg, &policy, answers())),
            )
            .await;
        assert_eq!(
            (s, dup["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("GH-EM-034")),
            "{dup}"
        );
        assert!(dup["error"]["message"].as_str().unwrap().contains(&rid));

        // Megan, her manager, gets the mail with Adele's answers.
        let (mail, _) = sink.next_to("megan@contoso.example").await;
        assert_eq!(
            mail.subject,
            "Action required: approve or deny Adele Vance's request for Internals Travelling",
            "{label}"
        );
        assert!(
            mail.body.contains("Which country are you travelling to?: France"),
            "{}",
            mail.body
        );
        assert!(
            mail.body.contains("Travel request number (TR- and four digits): TR-2026"),
            "{}",
            mail.body
        );
        assert!(mail.body.contains("Customer workshop in Paris"));
        assert!(mail.body.contains(&rid));
        assert!(
            mail.message_id.ends_with("@gatehouse>"),
            "the outbox row's id: {}",
            mail.message_id
        );

        // Adele cannot approve her own request; Megan sees it and approves.
        let (s, _) = server
            .call(
                Method::GET,
                &format!("{EM}/accessPackageAssignmentApprovals/{rid}"),
                Some(&adele),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "an approval is for its approvers");
        let megan = graph_session(&server, "megan@contoso.example", MEGAN_TOTP_SECRET).await;
        let mine = get(
            &server,
            &megan,
            &format!("{EM}/accessPackageAssignmentApprovals/filterByCurrentUser(on='approver')"),
        )
        .await;
        let approval =
            mine["value"].as_array().unwrap().iter().find(|a| a["id"] == rid).unwrap().clone();
        assert_eq!(approval["stages"][0]["assignedToMe"], true);
        assert_eq!(approval["stages"][0]["status"], "InProgress");
        let stage_id = approval["stages"][0]["id"].as_str().unwrap().to_owned();
        let stage_path = format!("{EM}/accessPackageAssignmentApprovals/{rid}/stages/{stage_id}");
        let (s, err) = server
            .call(
                Method::PATCH,
                &stage_path,
                Some(&adele),
                Some(&json!({"reviewResult": "Approve"})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
        assert_eq!(err["error"]["code"], "GH-EM-040");
        let approved_at = server.clock_now();
        let (s, body) = server
            .call(
                Method::PATCH,
                &stage_path,
                Some(&megan),
                Some(&json!({"reviewResult": "Approve", "justification": "Enjoy Paris"})),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
        // A second decision is too late.
        let (s, _) = server
            .call(Method::PATCH, &stage_path, Some(&megan), Some(&json!({"reviewResult": "Deny"})))
            .await;
        assert_eq!(s, StatusCode::CONFLICT);

        // Delivered: the request, the assignment, and the group membership, at once.
        let r = get(&server, &adele, &format!("{EM}/assignmentRequests/{rid}")).await;
        assert_eq!(
            (r["state"].as_str(), r["status"].as_str()),
            (Some("delivered"), Some("Delivered")),
            "{r}"
        );
        let history: Vec<&str> = r["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap())
            .collect();
        assert_eq!(history, ["Accepted", "PendingApproval", "Delivered"], "{r}");
        let mine =
            get(&server, &adele, &format!("{EM}/assignments/filterByCurrentUser(on='target')"))
                .await;
        let asg = mine["value"][0].clone();
        assert_eq!(asg["state"], "delivered", "{mine}");
        let end = gatehouse_core::time::parse(
            asg["schedule"]["expiration"]["endDateTime"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(
            end,
            approved_at + 7 * DAY,
            "7 days after the approval (no clock change in December)"
        );
        assert!(
            is_member(&server, TRAVEL_GROUP, ADELE).await,
            "{label}: Adele is in CA-Internals-Travel"
        );
        let (mail, _) = sink.next_to("adele@contoso.example").await;
        assert_eq!(mail.subject, "You now have access to Internals Travelling");

        // The same sign-in from France now only asks for MFA, and succeeds with it.
        let (_, challenge) = sign_in(
            &server,
            "adele@contoso.example",
            json!({"appId": EXPENSES}),
            Some(FRANCE),
            None,
        )
        .await;
        assert_eq!(challenge["status"], "challenge", "{label}: {challenge}");
        let (_, done) = sign_in(
            &server,
            "adele@contoso.example",
            json!({"appId": EXPENSES}),
            Some(FRANCE),
            Some(ADELE_TOTP_SECRET),
        )
        .await;
        assert_eq!(done["status"], "success", "{label}: {done}");

        // A day before the end, the reminder.
        server.clock.set(end - DAY);
        run_workers(&server).await;
        let (mail, _) = sink.next_to("adele@contoso.example").await;
        assert_eq!(mail.subject, "Your access to Internals Travelling ends in 1 day", "{label}");

        // At the end, access ends at once, before any worker runs: blocked from France again.
        server.clock.set(end);
        let (_, blocked) = sign_in(
            &server,
            "adele@contoso.example",
            json!({"appId": EXPENSES}),
            Some(FRANCE),
            Some(ADELE_TOTP_SECRET),
        )
        .await;
        assert_eq!(blocked["error"]["code"], "53003", "{label}: {blocked}");
        assert!(!is_member(&server, TRAVEL_GROUP, ADELE).await);
        let a = get(
            &server,
            &server.admin_token,
            &format!("{EM}/assignments/{}", asg["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(a["state"], "expired", "reads check validity: {a}");
        // The worker records it and tells her.
        run_workers(&server).await;
        let (mail, _) = sink.next_to("adele@contoso.example").await;
        assert_eq!(mail.subject, "Your access to Internals Travelling has ended", "{label}");
        let a = get(
            &server,
            &server.admin_token,
            &format!("{EM}/assignments/{}", asg["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(
            (a["state"].as_str(), a["expiredDateTime"].as_str()),
            (Some("expired"), Some(gatehouse_core::time::format(end).as_str())),
            "{a}"
        );

        // Every step is in the audit log.
        let audits = get(
            &server,
            &server.admin_token,
            "/v1.0/auditLogs/directoryAudits?$filter=category eq 'EntitlementManagement'&$top=200",
        )
        .await;
        let activities: Vec<&str> = audits["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["activityDisplayName"].as_str().unwrap())
            .collect();
        for want in [
            "Create catalog",
            "Create access package assignment policy",
            "Create access package assignment request",
            "Approve access package assignment request",
            "Create access package assignment",
            "Access package assignment expired",
        ] {
            assert!(activities.contains(&want), "{label}: no `{want}` in {activities:?}");
        }
        server.stop().await;
    }
    sink.stop().await;
}
