//! Entitlement management, rule by rule, through the HTTP API: approvers, escalation and
//! timeouts, concurrent decisions, time zones, provenance of memberships, schedules, package
//! changes reaching assignees, policy ranking, the request lifecycle, custom extensions.

use gatehouse_core::time::parse as at;
use gatehouse_server::clock::ManualClock;
use gatehouse_server::demo::{ADELE, MEGAN, NESTOR, TRAVEL_GROUP};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::governance::{DAY, governance_config};
use crate::governance_support::*;
use crate::server_support::{T0, TestDb, TestServer};

const LEE: &str = "a0000000-0000-4000-8000-000000000003";
const DIEGO: &str = "a0000000-0000-4000-8000-000000000008";

fn manager_stage(extra: Value) -> Value {
    let mut stage = json!({
        "durationBeforeAutomaticDenial": "P3D",
        "isApproverJustificationRequired": false,
        "isEscalationEnabled": false,
        "primaryApprovers": [{"@odata.type": "#microsoft.graph.requestorManager", "managerLevel": 1}],
        "fallbackPrimaryApprovers": [{"@odata.type": "#microsoft.graph.singleUser", "userId": NESTOR}],
    });
    if let (Some(s), Some(e)) = (stage.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"requestApprovalSettings": {"isApprovalRequiredForAdd": true, "isApprovalRequiredForUpdate": true, "stages": [stage]}})
}

async fn request_state(server: &TestServer, id: &str) -> (String, String) {
    let r = get(server, &server.admin_token, &format!("{EM}/assignmentRequests/{id}")).await;
    (r["state"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned())
}

async fn assignments_of(server: &TestServer, package: &str, user: &str) -> Vec<Value> {
    let all = get(server, &server.admin_token, &format!("{EM}/assignments?$filter=accessPackage/id eq '{package}' and target/objectId eq '{user}'")).await;
    all["value"].as_array().unwrap().clone()
}

#[tokio::test]
async fn approvers_are_fixed_when_a_stage_starts_and_a_missing_manager_means_the_fallback() {
    for db in TestDb::each("approvers_are_fixed_when_a_stage_starts").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let group = new_group(&server, "Project Falcon").await;
        let (_, pkg) = package_for_group(&server, "Projects", "Falcon", &group).await;
        let pol = policy(&server, &pkg, manager_stage(json!({}))).await;
        let u1 = new_user(&server, "u1@contoso.example", "User One", Some(MEGAN)).await;
        let u2 = new_user(&server, "u2@contoso.example", "User Two", None).await;
        let (t1, t2) = (token_of(&server, &u1).await, token_of(&server, &u2).await);
        let (megan, lee) = (token_of(&server, MEGAN).await, token_of(&server, LEE).await);

        let (s, r1) = request_self(&server, &t1, &u1, &pkg, &pol, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{r1}");
        let r1 = r1["id"].as_str().unwrap().to_owned();
        // The manager changes after the stage started: the stage keeps the approver it had.
        set_manager(&server, &u1, LEE).await;
        let (path, stage) = stage_of(&server, &megan, &r1).await;
        assert_eq!(stage["assignedToMe"], true);
        let (s, err) = server
            .call(Method::PATCH, &path, Some(&lee), Some(&json!({"reviewResult": "Approve"})))
            .await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "the new manager is not an approver of this stage: {err}"
        );
        let (s, _) = server
            .call(Method::PATCH, &path, Some(&megan), Some(&json!({"reviewResult": "Approve"})))
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(request_state(&server, &r1).await.0, "delivered");

        // No manager at all: the fallback approver decides, from the start.
        let (s, r2) = request_self(&server, &t2, &u2, &pkg, &pol, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{r2}");
        let r2 = r2["id"].as_str().unwrap().to_owned();
        let history = get(&server, &server.admin_token, &format!("{EM}/assignmentRequests/{r2}"))
            .await["history"]
            .clone();
        assert!(history.to_string().contains("fallback approvers decide"), "{history}");
        let (path, stage) = stage_of(&server, &server.admin_token, &r2).await;
        assert_eq!(stage["assignedToMe"], true, "Nestor is the fallback: {stage}");
        let (s, _) = server
            .call(
                Method::PATCH,
                &path,
                Some(&server.admin_token.clone()),
                Some(&json!({"reviewResult": "Deny", "justification": "not this quarter"})),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(request_state(&server, &r2).await, ("denied".to_owned(), "Denied".to_owned()));
        server.stop().await;
    }
}

#[tokio::test]
async fn a_stage_escalates_at_its_time_then_times_out_as_expired() {
    let mut sink = SmtpSink::start("a_stage_escalates_at_its_time_then_times_out_as_expired").await;
    for db in TestDb::each("a_stage_escalates_at_its_time").await {
        let server =
            TestServer::start_with(&db, governance_config(sink.as_ref()), ManualClock::at(T0))
                .await;
        let group = new_group(&server, "Escalations").await;
        let (_, pkg) = package_for_group(&server, "Escalation", "Escalating", &group).await;
        let pol = policy(&server, &pkg, manager_stage(json!({
            "isEscalationEnabled": true, "durationBeforeEscalation": "P1D",
            "escalationApprovers": [{"@odata.type": "#microsoft.graph.singleUser", "userId": LEE}],
        }))).await;
        let u = new_user(&server, "esc@contoso.example", "Escalated User", Some(MEGAN)).await;
        let t = token_of(&server, &u).await;
        let lee = token_of(&server, LEE).await;
        let (s, r) = request_self(&server, &t, &u, &pkg, &pol, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let r = r["id"].as_str().unwrap().to_owned();
        if let Some(sink) = sink.as_mut() {
            sink.next_like("megan@contoso.example", "Action required").await;
        }
        // Lee is not an approver yet.
        let (s, _) = server
            .call(
                Method::GET,
                &format!("{EM}/accessPackageAssignmentApprovals/{r}"),
                Some(&lee),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // A minute short of a day: still not.
        server.clock.advance(DAY - 60_000);
        run_workers(&server).await;
        assert_eq!(request_state(&server, &r).await.1, "PendingApproval");
        server.clock.advance(60_000);
        run_workers(&server).await;
        assert_eq!(
            request_state(&server, &r).await,
            ("pendingApproval".to_owned(), "PendingApprovalEscalated".to_owned())
        );
        let (_, stage) = stage_of(&server, &lee, &r).await;
        assert_eq!(stage["assignedToMe"], true, "{stage}");
        if let Some(sink) = sink.as_mut() {
            sink.next_like(
                "lee@contoso.example",
                "Escalated: approve or deny Escalated User's request",
            )
            .await;
        }

        // Nobody decides: at three days the stage has timed out, even before the worker records
        // it (a late approval is refused); then the request is denied, status Expired, and its
        // requestor told.
        server.clock.set(T0 + 3 * DAY);
        let (path, _) = stage_of(&server, &lee, &r).await;
        let (s, err) = server
            .call(Method::PATCH, &path, Some(&lee), Some(&json!({"reviewResult": "Approve"})))
            .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("GH-EM-042")),
            "{err}"
        );
        assert!(err["error"]["message"].as_str().unwrap().contains("timed out"), "{err}");
        run_workers(&server).await;
        assert_eq!(request_state(&server, &r).await, ("denied".to_owned(), "Expired".to_owned()));
        if let Some(sink) = sink.as_mut() {
            sink.next_like("esc@contoso.example", "Your request for Escalating has expired").await;
        }
        let (path, _) = stage_of(&server, &lee, &r).await;
        let (s, err) = server
            .call(Method::PATCH, &path, Some(&lee), Some(&json!({"reviewResult": "Approve"})))
            .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("GH-EM-042")),
            "{err}"
        );
        server.stop().await;
    }
    if let Some(s) = sink {
        s.stop().await;
    }
}

#[tokio::test]
async fn many_simultaneous_approvals_make_one_decision_and_one_assignment() {
    for db in TestDb::each("many_simultaneous_approvals").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let approvers = new_group(&server, "Approvers").await;
        let mut tokens = Vec::new();
        for i in 0..5 {
            let a = new_user(
                &server,
                &format!("approver{i}@contoso.example"),
                &format!("Approver {i}"),
                None,
            )
            .await;
            let (s, b) = server
                .admin(
                    Method::POST,
                    &format!("/v1.0/groups/{approvers}/members/$ref"),
                    Some(
                        &json!({"@odata.id": format!("{}/v1.0/directoryObjects/{a}", server.base)}),
                    ),
                )
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
            tokens.push(token_of(&server, &a).await);
        }
        let group = new_group(&server, "Race").await;
        let (_, pkg) = package_for_group(&server, "Races", "Race", &group).await;
        let pol = policy(&server, &pkg, manager_stage(json!({
            "primaryApprovers": [{"@odata.type": "#microsoft.graph.groupMembers", "groupId": approvers}],
        }))).await;
        for round in 0..3 {
            let u =
                new_user(&server, &format!("racer{round}@contoso.example"), "Racer", None).await;
            let t = token_of(&server, &u).await;
            let (s, r) = request_self(&server, &t, &u, &pkg, &pol, json!({})).await;
            assert_eq!(s, StatusCode::CREATED, "{r}");
            let r = r["id"].as_str().unwrap().to_owned();
            let (path, _) = stage_of(&server, &tokens[0], &r).await;
            let mut tries = Vec::new();
            for (i, tok) in tokens.iter().enumerate() {
                for k in 0..4 {
                    let verdict = if (i + k) % 2 == 0 { "Approve" } else { "Deny" };
                    let (http, url, tok, body) = (
                        server.http.clone(),
                        format!("{}{path}", server.base),
                        tok.clone(),
                        json!({"reviewResult": verdict}),
                    );
                    tries.push(tokio::spawn(async move {
                        let resp =
                            http.patch(url).bearer_auth(tok).json(&body).send().await.unwrap();
                        (resp.status(), verdict)
                    }));
                }
            }
            let mut wins = Vec::new();
            for t in tries {
                let (status, verdict) = t.await.unwrap();
                match status {
                    StatusCode::NO_CONTENT => wins.push(verdict),
                    StatusCode::CONFLICT => {}
                    other => panic!("{}: an approval answered {other}", db.label()),
                }
            }
            assert_eq!(wins.len(), 1, "{}: exactly one decision wins: {wins:?}", db.label());
            let (state, _) = request_state(&server, &r).await;
            let assignments = assignments_of(&server, &pkg, &u).await;
            match wins[0] {
                "Approve" => {
                    assert_eq!(state, "delivered");
                    assert_eq!(assignments.len(), 1, "{assignments:?}");
                    assert!(is_member(&server, &group, &u).await);
                }
                _ => {
                    assert_eq!(state, "denied");
                    assert!(assignments.is_empty(), "{assignments:?}");
                }
            }
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn dates_are_read_in_the_policys_time_zone_across_daylight_saving() {
    for db in TestDb::each("dates_in_the_policys_time_zone").await {
        // Wednesday 25 March 2026, 10:00 GMT; British Summer Time starts on Sunday the 29th.
        let start = at("2026-03-25T10:00:00Z").unwrap();
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(start)).await;
        let group = new_group(&server, "Zones").await;
        let (_, pkg) = package_for_group(&server, "Zones", "A week", &group).await;
        let week = policy(
            &server,
            &pkg,
            json!({"displayName": "A week in London", "timeZone": "Europe/London"}),
        )
        .await;
        let adele = token_of(&server, ADELE).await;
        let (s, r) = request_self(&server, &adele, ADELE, &pkg, &week, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let a = assignments_of(&server, &pkg, ADELE).await;
        // Seven calendar days in London: the same wall-clock time, which is 167 hours later.
        assert_eq!(a[0]["schedule"]["expiration"]["endDateTime"], "2026-04-01T09:00:00Z", "{a:?}");

        // "Expires on 31 July" is the end of that day in London (BST), not midnight UTC.
        let (_, pkg2) = package_for_group(&server, "Zones 2", "Until July", &group).await;
        let july = policy(&server, &pkg2, json!({"displayName": "Until 31 July", "timeZone": "Europe/London", "expiration": {"type": "afterDateTime", "endDateTime": "2026-07-31"}})).await;
        let got =
            get(&server, &server.admin_token, &format!("{EM}/assignmentPolicies/{july}")).await;
        assert_eq!(got["expiration"]["endDateTime"], "2026-07-31T23:00:00Z", "{got}");
        assert_eq!(got["timeZone"], "Europe/London");
        let (s, r) = request_self(&server, &adele, ADELE, &pkg2, &july, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let a = assignments_of(&server, &pkg2, ADELE).await;
        assert_eq!(a[0]["schedule"]["expiration"]["endDateTime"], "2026-07-31T23:00:00Z");
        // A requestor may choose an end date within the policy's, read in the same zone.
        let (_, pkg3) = package_for_group(&server, "Zones 3", "Chosen", &group).await;
        let chosen = policy(&server, &pkg3, json!({"timeZone": "America/New_York", "expiration": {"type": "afterDuration", "duration": "P30D"}})).await;
        let (s, r) = request_self(&server, &adele, ADELE, &pkg3, &chosen, json!({"schedule": {"expiration": {"type": "afterDateTime", "endDateTime": "2026-04-05"}}})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let a = assignments_of(&server, &pkg3, ADELE).await;
        assert_eq!(
            a[0]["schedule"]["expiration"]["endDateTime"], "2026-04-06T04:00:00Z",
            "midnight after 5 April in New York (EDT)"
        );
        let (s, err) = request_self(
            &server,
            &token_of(&server, LEE).await,
            LEE,
            &pkg3,
            &chosen,
            json!({"schedule": {"expiration": {"type": "afterDuration", "duration": "P31D"}}}),
        )
        .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("GH-EM-024")),
            "{err}"
        );
        // A zone that does not exist is refused.
        let (s, err) = server.admin(Method::POST, &format!("{EM}/assignmentPolicies"), Some(&json!({"displayName": "x", "timeZone": "Mars/Olympus", "accessPackage": {"id": pkg}}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("IANA"), "{err}");
        server.stop().await;
    }
}

#[tokio::test]
async fn direct_members_keep_their_membership_and_two_packages_are_counted() {
    for db in TestDb::each("membership_provenance").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        // Lee is a direct member of the travel persona before any package.
        let (_, travel) =
            package_for_group(&server, "Persona", "Travel persona", TRAVEL_GROUP).await;
        let pol = policy(&server, &travel, json!({})).await;
        let lee = token_of(&server, LEE).await;
        let (s, r) = request_self(
            &server,
            &lee,
            LEE,
            &travel,
            &pol,
            json!({"schedule": {"expiration": {"type": "afterDuration", "duration": "P1D"}}}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        server.clock.advance(DAY);
        run_workers(&server).await;
        assert_eq!(assignments_of(&server, &travel, LEE).await[0]["state"], "expired");
        assert!(
            is_member(&server, TRAVEL_GROUP, LEE).await,
            "the direct membership outlives the package"
        );

        // Two packages grant the same group: it is left only when the last one ends.
        let group = new_group(&server, "Shared").await;
        let (_, a) = package_for_group(&server, "Shared A", "A", &group).await;
        let (_, b) = package_for_group(&server, "Shared B", "B", &group).await;
        let (pa, pb) = (policy(&server, &a, json!({})).await, policy(&server, &b, json!({})).await);
        let adele = token_of(&server, ADELE).await;
        let one_day =
            json!({"schedule": {"expiration": {"type": "afterDuration", "duration": "P1D"}}});
        let two_days =
            json!({"schedule": {"expiration": {"type": "afterDuration", "duration": "P2D"}}});
        assert_eq!(
            request_self(&server, &adele, ADELE, &a, &pa, one_day).await.0,
            StatusCode::CREATED
        );
        assert_eq!(
            request_self(&server, &adele, ADELE, &b, &pb, two_days).await.0,
            StatusCode::CREATED
        );
        assert!(is_member(&server, &group, ADELE).await);
        // Removing her by hand is refused: the membership is the packages'.
        let (s, err) = server
            .admin(Method::DELETE, &format!("/v1.0/groups/{group}/members/{ADELE}/$ref"), None)
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("access package"), "{err}");
        server.clock.advance(DAY);
        assert!(is_member(&server, &group, ADELE).await, "B still grants it");
        server.clock.advance(DAY);
        assert!(!is_member(&server, &group, ADELE).await, "the last grant ended");
        run_workers(&server).await;
        assert!(!is_member(&server, &group, ADELE).await);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_future_start_is_in_force_at_its_instant() {
    for db in TestDb::each("a_future_start").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let group = new_group(&server, "Later").await;
        let (_, pkg) = package_for_group(&server, "Later", "Later", &group).await;
        let pol = policy(&server, &pkg, json!({})).await;
        let adele = token_of(&server, ADELE).await;
        let start = gatehouse_core::time::format(T0 + 2 * DAY);
        let (s, r) = request_self(&server, &adele, ADELE, &pkg, &pol, json!({"schedule": {"startDateTime": start, "expiration": {"type": "afterDuration", "duration": "P3D"}}})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert_eq!(
            (r["state"].as_str(), r["status"].as_str()),
            (Some("scheduled"), Some("PendingNotBefore")),
            "{r}"
        );
        let id = r["id"].as_str().unwrap().to_owned();
        server.clock.set(T0 + 2 * DAY - 1);
        assert!(!is_member(&server, &group, ADELE).await);
        server.clock.set(T0 + 2 * DAY);
        assert!(
            is_member(&server, &group, ADELE).await,
            "in force at the start, before any worker runs"
        );
        run_workers(&server).await;
        assert_eq!(request_state(&server, &id).await.0, "delivered");
        let a = assignments_of(&server, &pkg, ADELE).await;
        assert_eq!(a[0]["schedule"]["startDateTime"], start);
        assert_eq!(
            a[0]["schedule"]["expiration"]["endDateTime"],
            gatehouse_core::time::format(T0 + 5 * DAY)
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn adding_or_removing_a_role_reaches_every_assignee() {
    for db in TestDb::each("roles_reach_every_assignee").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let (g1, g2) = (new_group(&server, "First").await, new_group(&server, "Second").await);
        let (catalog, pkg) = package_for_group(&server, "Roles", "Two groups", &g1).await;
        add_resource(&server, &catalog, &g2).await;
        let pol = policy(&server, &pkg, json!({})).await;
        for u in [ADELE, DIEGO] {
            let t = token_of(&server, u).await;
            assert_eq!(
                request_self(&server, &t, u, &pkg, &pol, json!({})).await.0,
                StatusCode::CREATED
            );
        }
        let rs = add_group_role(&server, &pkg, &g2).await;
        for u in [ADELE, DIEGO] {
            assert!(is_member(&server, &g2, u).await, "{u} gets the new role");
        }
        let scopes = get(
            &server,
            &server.admin_token,
            &format!("{EM}/accessPackages/{pkg}/resourceRoleScopes"),
        )
        .await;
        let first =
            scopes["value"].as_array().unwrap().iter().find(|s| s["id"] != rs["id"]).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
        let (s, _) = server
            .admin(
                Method::DELETE,
                &format!("{EM}/accessPackages/{pkg}/resourceRoleScopes/{first}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        for u in [ADELE, DIEGO] {
            assert!(!is_member(&server, &g1, u).await, "{u} loses the removed role");
            assert!(is_member(&server, &g2, u).await);
        }
        // A resource a package still uses cannot leave its catalog.
        let (s, err) = server.admin(Method::POST, &format!("{EM}/resourceRequests"), Some(&json!({"requestType": "adminRemove", "resource": {"originId": g2, "originSystem": "AadGroup"}, "catalog": {"id": catalog}}))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{err}");
        server.stop().await;
    }
}

#[tokio::test]
async fn the_most_specific_policy_is_the_one_offered() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
    let group = new_group(&server, "Ranked").await;
    let (_, pkg) = package_for_group(&server, "Ranking", "Ranked", &group).await;
    let specific = policy(&server, &pkg, json!({"displayName": "Adele only", "allowedTargetScope": "specificDirectoryUsers",
        "specificAllowedTargets": [{"@odata.type": "#microsoft.graph.singleUser", "userId": ADELE}]})).await;
    let general = policy(&server, &pkg, json!({"displayName": "Everyone, approved", "requestApprovalSettings": manager_stage(json!({}))["requestApprovalSettings"].clone()})).await;
    let adele = token_of(&server, ADELE).await;
    let diego = token_of(&server, DIEGO).await;
    let offered = |v: Value| -> Vec<String> {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["policyId"].as_str().unwrap().to_owned())
            .collect()
    };
    let path = format!("{EM}/accessPackages/{pkg}/getApplicablePolicyRequirements");
    assert_eq!(
        offered(server.call(Method::POST, &path, Some(&adele), None).await.1),
        [specific.as_str()]
    );
    assert_eq!(
        offered(server.call(Method::POST, &path, Some(&diego), None).await.1),
        [general.as_str()]
    );
    let (s, err) = request_self(&server, &adele, ADELE, &pkg, &general, json!({})).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("GH-EM-033")),
        "{err}"
    );
    assert!(err["error"]["message"].as_str().unwrap().contains("Adele only"), "{err}");
    // Without a policy id, the one offered is used.
    let body = json!({"requestType": "userAdd", "justification": "x", "assignment": {"accessPackageId": pkg}});
    let (s, r) = server
        .call(Method::POST, &format!("{EM}/assignmentRequests"), Some(&adele), Some(&body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["assignment"]["assignmentPolicyId"], specific);
    // Someone else cannot be targeted with a self request.
    let body = json!({"requestType": "userAdd", "justification": "x", "assignment": {"targetId": ADELE, "accessPackageId": pkg, "assignmentPolicyId": general}});
    let (s, err) = server
        .call(Method::POST, &format!("{EM}/assignmentRequests"), Some(&diego), Some(&body))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    server.stop().await;
}

#[tokio::test]
async fn requests_can_be_canceled_extended_and_removed() {
    for db in TestDb::each("request_lifecycle").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let group = new_group(&server, "Lifecycle").await;
        let (_, pkg) = package_for_group(&server, "Lifecycle", "Lifecycle", &group).await;
        let pol = policy(&server, &pkg, json!({"requestApprovalSettings": {"isApprovalRequiredForAdd": true, "isApprovalRequiredForUpdate": false,
            "stages": manager_stage(json!({}))["requestApprovalSettings"]["stages"].clone()}})).await;
        let adele = token_of(&server, ADELE).await;
        let diego = token_of(&server, DIEGO).await;
        let megan = token_of(&server, MEGAN).await;
        let (_, r) = request_self(&server, &adele, ADELE, &pkg, &pol, json!({})).await;
        let r = r["id"].as_str().unwrap().to_owned();
        // Not hers to cancel; then she cancels it, and may ask again.
        let (s, _) = server
            .call(Method::POST, &format!("{EM}/assignmentRequests/{r}/cancel"), Some(&diego), None)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = server
            .call(Method::POST, &format!("{EM}/assignmentRequests/{r}/cancel"), Some(&adele), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(
            request_state(&server, &r).await,
            ("canceled".to_owned(), "Canceled".to_owned())
        );
        let (s, _) = server
            .call(Method::POST, &format!("{EM}/assignmentRequests/{r}/cancel"), Some(&adele), None)
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (_, r2) = request_self(&server, &adele, ADELE, &pkg, &pol, json!({})).await;
        let r2 = r2["id"].as_str().unwrap().to_owned();
        let (path, _) = stage_of(&server, &megan, &r2).await;
        assert_eq!(
            server
                .call(Method::PATCH, &path, Some(&megan), Some(&json!({"reviewResult": "Approve"})))
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        let a = assignments_of(&server, &pkg, ADELE).await[0].clone();
        let aid = a["id"].as_str().unwrap().to_owned();
        let end = at(a["schedule"]["expiration"]["endDateTime"].as_str().unwrap()).unwrap();

        // Extending (no approval needed for updates here): a later end, the same assignment.
        server.clock.advance(3 * DAY);
        let body = json!({"requestType": "userUpdate", "assignment": {"id": aid}, "schedule": {"expiration": {"type": "afterDuration", "duration": "P7D"}}});
        let (s, u) = server
            .call(Method::POST, &format!("{EM}/assignmentRequests"), Some(&adele), Some(&body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        assert_eq!(u["state"], "delivered", "{u}");
        let a = assignments_of(&server, &pkg, ADELE).await[0].clone();
        assert_eq!(a["id"], aid);
        assert_eq!(
            at(a["schedule"]["expiration"]["endDateTime"].as_str().unwrap()).unwrap(),
            server.clock_now() + 7 * DAY
        );
        assert!(at(a["schedule"]["expiration"]["endDateTime"].as_str().unwrap()).unwrap() > end);
        // The old end passes: still a member (the expiry moved with the extension).
        server.clock.set(end + 1);
        run_workers(&server).await;
        assert!(is_member(&server, &group, ADELE).await);

        // She removes her own access: out of the group at once.
        let body = json!({"requestType": "userRemove", "assignment": {"id": aid}});
        let (s, rm) = server
            .call(Method::POST, &format!("{EM}/assignmentRequests"), Some(&adele), Some(&body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{rm}");
        assert!(!is_member(&server, &group, ADELE).await);
        assert_eq!(assignments_of(&server, &pkg, ADELE).await[0]["state"], "expired");
        // A denied or canceled request can be deleted; a delivered one cannot.
        assert_eq!(
            server.admin(Method::DELETE, &format!("{EM}/assignmentRequests/{r}"), None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            server.admin(Method::DELETE, &format!("{EM}/assignmentRequests/{r2}"), None).await.0,
            StatusCode::CONFLICT
        );
        // Reprocess is for failed deliveries only.
        let (s, err) = server
            .admin(Method::POST, &format!("{EM}/assignmentRequests/{r2}/reprocess"), None)
            .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("GH-EM-045")),
            "{err}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn custom_extensions_are_signed_retried_and_can_hold_a_request() {
    use gatehouse_server::governance::webhook;
    for db in TestDb::each("custom_extensions").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let mut hook = Receiver::start(vec![500]).await;
        let group = new_group(&server, "Hooked").await;
        let (catalog, pkg) = package_for_group(&server, "Hooks", "Hooked", &group).await;
        let ext_body = json!({
            "@odata.type": "#microsoft.graph.accessPackageAssignmentRequestWorkflowExtension",
            "displayName": "Ticketing",
            "endpointConfiguration": {"@odata.type": "#microsoft.graph.httpRequestEndpoint", "targetUrl": hook.url},
            "authenticationConfiguration": {"@odata.type": "#microsoft.graph.azureAdPopTokenAuthentication"},
            "callbackConfiguration": {"@odata.type": "#microsoft.graph.customExtensionCallbackConfiguration", "durationBeforeTimeout": "PT1H"},
        });
        let (s, ext) = server
            .admin(
                Method::POST,
                &format!("{EM}/catalogs/{catalog}/customWorkflowExtensions"),
                Some(&ext_body),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{ext}");
        let secret = ext["signingSecret"].as_str().unwrap().to_owned();
        assert_eq!(
            ext["callbackConfiguration"]["timeoutDuration"], "PT1H",
            "the docs' name is read, the schema's served"
        );
        let got = get(
            &server,
            &server.admin_token,
            &format!(
                "{EM}/catalogs/{catalog}/customWorkflowExtensions/{}",
                ext["id"].as_str().unwrap()
            ),
        )
        .await;
        assert!(got.get("signingSecret").is_none(), "the secret is shown once: {got}");
        let pol = policy(&server, &pkg, json!({"customExtensionStageSettings": [{"stage": "assignmentRequestCreated", "customExtension": {"id": ext["id"]}}]})).await;

        let adele = token_of(&server, ADELE).await;
        let (s, r) = request_self(&server, &adele, ADELE, &pkg, &pol, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert_eq!(
            (r["state"].as_str(), r["status"].as_str()),
            (Some("submitted"), Some("WaitingForCallback")),
            "{r}"
        );
        let rid = r["id"].as_str().unwrap().to_owned();
        // The first call fails (500); it is retried after a second, with the same event id.
        run_workers(&server).await;
        let (h1, _) = hook.next().await;
        server.clock.advance(1_000);
        run_workers(&server).await;
        let (h2, body) = hook.next().await;
        assert_eq!(h1.get(webhook::EVENT_ID_HEADER), h2.get(webhook::EVENT_ID_HEADER));
        let sig = h2.get(webhook::SIGNATURE_HEADER).unwrap().to_str().unwrap();
        webhook::verify(&secret, sig, &body, server.clock_now()).unwrap();
        let payload: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            payload["type"],
            "microsoft.graph.accessPackageCustomExtensionStage.assignmentRequestCreated"
        );
        assert_eq!(payload["data"]["accessPackageAssignmentRequestId"], rid);
        assert_eq!(
            payload["data"]["callbackUriPath"],
            format!("/identityGovernance/entitlementManagement/assignmentRequests/{rid}/resume")
        );
        assert_eq!(payload["data"]["requestor"]["displayName"], "Adele Vance");
        assert!(!is_member(&server, &group, ADELE).await, "held until the callback");

        // The callback, signed; a forged one is refused.
        let resume = json!({"source": "ticketing", "type": "microsoft.graph.accessPackageCustomExtensionStage.assignmentRequestCreated",
            "data": {"@odata.type": "#microsoft.graph.accessPackageAssignmentRequestCallbackData", "stage": "assignmentRequestCreated",
                     "customExtensionStageInstanceId": payload["data"]["customExtensionStageInstanceId"], "customExtensionStageInstanceDetail": "ticket 42"}});
        let bytes = serde_json::to_vec(&resume).unwrap();
        let url = format!("{}{EM}/assignmentRequests/{rid}/resume", server.base);
        let forged = webhook::sign("not the secret", server.clock_now(), &bytes);
        let resp = server
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(webhook::SIGNATURE_HEADER, forged)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let resp = server
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(webhook::SIGNATURE_HEADER, webhook::sign(&secret, server.clock_now(), &bytes))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(is_member(&server, &group, ADELE).await);
        let r = get(&server, &adele, &format!("{EM}/assignmentRequests/{rid}")).await;
        assert_eq!(r["customExtensionCalloutInstances"][0]["status"], "callbackReceived", "{r}");
        assert_eq!(r["customExtensionCalloutInstances"][0]["detail"], "ticket 42");
        // Replaying the callback does nothing more.
        let resp = server
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(webhook::SIGNATURE_HEADER, webhook::sign(&secret, server.clock_now(), &bytes))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CONFLICT);

        // No callback within the hour: the request fails.
        let diego = token_of(&server, DIEGO).await;
        let (_, r) = request_self(&server, &diego, DIEGO, &pkg, &pol, json!({})).await;
        let rid = r["id"].as_str().unwrap().to_owned();
        run_workers(&server).await;
        hook.next().await;
        server.clock.advance(3_600_000);
        run_workers(&server).await;
        let r = get(&server, &server.admin_token, &format!("{EM}/assignmentRequests/{rid}")).await;
        assert_eq!(r["state"], "denied", "{r}");
        assert_eq!(r["customExtensionCalloutInstances"][0]["status"], "callbackTimedOut");
        server.stop().await;
    }
}

#[tokio::test]
async fn automatic_policies_follow_the_group_they_target() {
    for db in TestDb::each("automatic_policies").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let (source, target) =
            (new_group(&server, "Engineers").await, new_group(&server, "Wiki editors").await);
        let (_, pkg) = package_for_group(&server, "Auto", "Wiki", &target).await;
        let add =
            |u: &str| json!({"@odata.id": format!("{}/v1.0/directoryObjects/{u}", server.base)});
        for u in [ADELE, DIEGO] {
            assert_eq!(
                server
                    .admin(
                        Method::POST,
                        &format!("/v1.0/groups/{source}/members/$ref"),
                        Some(&add(u))
                    )
                    .await
                    .0,
                StatusCode::NO_CONTENT
            );
        }
        policy(&server, &pkg, json!({
            "displayName": "Engineers, automatically",
            "allowedTargetScope": "specificDirectoryUsers",
            "specificAllowedTargets": [{"@odata.type": "#microsoft.graph.groupMembers", "groupId": source}],
            "automaticRequestSettings": {"requestAccessForAllowedTargets": true, "removeAccessWhenTargetLeavesAllowedTargets": true, "gracePeriodBeforeAccessRemoval": "P1D"},
            "expiration": {"type": "noExpiration"},
            "requestorSettings": {"enableTargetsToSelfAddAccess": false},
        })).await;
        run_workers(&server).await;
        for u in [ADELE, DIEGO] {
            assert!(
                is_member(&server, &target, u).await,
                "{}: {u} assigned automatically",
                db.label()
            );
            let a = assignments_of(&server, &pkg, u).await;
            assert_eq!(a.len(), 1, "{a:?}");
        }
        let reqs = get(
            &server,
            &server.admin_token,
            &format!("{EM}/assignmentRequests?$filter=requestType eq 'systemAdd'"),
        )
        .await;
        assert_eq!(reqs["value"].as_array().unwrap().len(), 2, "{reqs}");
        // Running again changes nothing.
        run_workers(&server).await;
        assert_eq!(assignments_of(&server, &pkg, ADELE).await.len(), 1);

        // Diego leaves the group: his access goes after the one-day grace period.
        assert_eq!(
            server
                .admin(Method::DELETE, &format!("/v1.0/groups/{source}/members/{DIEGO}/$ref"), None)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        run_workers(&server).await;
        assert!(is_member(&server, &target, DIEGO).await, "within the grace period");
        server.clock.advance(DAY);
        run_workers(&server).await;
        assert!(!is_member(&server, &target, DIEGO).await, "removed after the grace period");
        assert_eq!(assignments_of(&server, &pkg, DIEGO).await[0]["state"], "expired");
        // Back in the group: assigned again.
        assert_eq!(
            server
                .admin(
                    Method::POST,
                    &format!("/v1.0/groups/{source}/members/$ref"),
                    Some(&add(DIEGO))
                )
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        run_workers(&server).await;
        assert!(is_member(&server, &target, DIEGO).await);
        assert!(is_member(&server, &target, ADELE).await);
        server.stop().await;
    }
}

#[tokio::test]
async fn owners_app_roles_sponsors_and_deletions() {
    for db in TestDb::each("owners_app_roles_sponsors").await {
        let server =
            TestServer::start_with(&db, governance_config(None), ManualClock::at(T0)).await;
        let group = new_group(&server, "Owned").await;
        let (catalog, pkg) = package_for_group(&server, "Mixed", "Mixed roles", &group).await;
        // The group's Owner role too.
        let (s, b) = server
            .admin(
                Method::POST,
                &format!("{EM}/accessPackages/{pkg}/resourceRoleScopes"),
                Some(&json!({
            "role": {"originId": format!("Owner_{group}"), "originSystem": "AadGroup"},
            "scope": {"originId": group, "originSystem": "AadGroup", "isRootScope": true}})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        // An application with an app role users can hold.
        let role_id = "7a0c4f1e-5b2d-4e3a-9c8b-1d2e3f4a5b6c";
        let (s, sp) = server.admin(Method::POST, "/v1.0/servicePrincipals", Some(&json!({
            "appId": "f1000000-0000-4000-8000-0000000000ee", "displayName": "Travel Desk",
            "appRoles": [{"id": role_id, "displayName": "Traveller", "value": "Traveller", "allowedMemberTypes": ["User"], "isEnabled": true, "description": "Books trips"}]}))).await;
        assert_eq!(s, StatusCode::CREATED, "{sp}");
        let sp = sp["id"].as_str().unwrap().to_owned();
        let (s, b) = server.admin(Method::POST, &format!("{EM}/resourceRequests"), Some(&json!({"requestType": "adminAdd", "resource": {"originId": sp, "originSystem": "AadApplication"}, "catalog": {"id": catalog}}))).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let roles = get(
            &server,
            &server.admin_token,
            &format!(
                "{EM}/catalogs/{catalog}/resourceRoles?$filter=originSystem eq 'AadApplication'"
            ),
        )
        .await;
        let names: Vec<&str> = roles["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["displayName"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "Default Access and Traveller: {roles}");
        assert!(names.contains(&"Traveller") && names.contains(&"Default Access"));
        let (s, b) = server
            .admin(
                Method::POST,
                &format!("{EM}/accessPackages/{pkg}/resourceRoleScopes"),
                Some(&json!({
            "role": {"originId": role_id, "originSystem": "AadApplication"},
            "scope": {"originId": sp, "originSystem": "AadApplication", "isRootScope": true}})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, err) = server.admin(Method::POST, &format!("{EM}/accessPackages/{pkg}/resourceRoleScopes"), Some(&json!({
            "role": {"originId": "00000000-0000-4000-8000-00000000beef", "originSystem": "AadApplication"},
            "scope": {"originId": sp, "originSystem": "AadApplication", "isRootScope": true}}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "an app role the application does not have: {err}");

        // Approval by the target's sponsors.
        let guestish =
            new_user(&server, "visitor@contoso.example", "Visiting Engineer", None).await;
        let add_sponsor = json!({"@odata.id": format!("{}/v1.0/users/{LEE}", server.base)});
        assert_eq!(
            server
                .admin(
                    Method::POST,
                    &format!("/v1.0/users/{guestish}/sponsors/$ref"),
                    Some(&add_sponsor)
                )
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        let sponsors =
            get(&server, &server.admin_token, &format!("/v1.0/users/{guestish}/sponsors")).await;
        assert_eq!(sponsors["value"][0]["id"], LEE, "{sponsors}");
        let pol = policy(
            &server,
            &pkg,
            manager_stage(json!({
                "primaryApprovers": [{"@odata.type": "#microsoft.graph.targetUserSponsors"}],
            })),
        )
        .await;
        let t = token_of(&server, &guestish).await;
        let (s, r) = request_self(&server, &t, &guestish, &pkg, &pol, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let lee = token_of(&server, LEE).await;
        let (path, _) = stage_of(&server, &lee, r["id"].as_str().unwrap()).await;
        assert_eq!(
            server
                .call(Method::PATCH, &path, Some(&lee), Some(&json!({"reviewResult": "Approve"})))
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        assert!(is_member(&server, &group, &guestish).await);
        let owners =
            get(&server, &server.admin_token, &format!("/v1.0/groups/{group}/owners")).await;
        assert_eq!(owners["value"][0]["id"], guestish, "{owners}");
        let held = get(
            &server,
            &server.admin_token,
            &format!("/v1.0/users/{guestish}/appRoleAssignments"),
        )
        .await;
        assert_eq!(held["value"][0]["appRoleId"], role_id, "{held}");
        let to = get(
            &server,
            &server.admin_token,
            &format!("/v1.0/servicePrincipals/{sp}/appRoleAssignedTo"),
        )
        .await;
        assert_eq!(to["value"][0]["principalId"], guestish);

        // The group cannot be deleted while it is a catalog resource.
        let (s, err) = server.admin(Method::DELETE, &format!("/v1.0/groups/{group}"), None).await;
        assert_eq!(s, StatusCode::CONFLICT, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("adminRemove"), "{err}");
        // Deleting the user ends their assignment in the same step.
        assert_eq!(
            server.admin(Method::DELETE, &format!("/v1.0/users/{guestish}"), None).await.0,
            StatusCode::NO_CONTENT
        );
        let a = assignments_of(&server, &pkg, &guestish).await;
        assert_eq!(a[0]["state"], "expired", "{a:?}");
        let owners =
            get(&server, &server.admin_token, &format!("/v1.0/groups/{group}/owners")).await;
        assert!(owners["value"].as_array().unwrap().is_empty());
        server.stop().await;
    }
}
