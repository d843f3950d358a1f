//! Conditional Access over the API: policies, named locations, authentication strengths and
//! What-If on the live snapshot; and several nodes on one PostgreSQL database.

use std::time::Duration;

use gatehouse_core::Change;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server_support::{T0, TestDb, TestServer};

const POLICIES: &str = "/v1.0/identity/conditionalAccess/policies";
const LOCATIONS: &str = "/v1.0/identity/conditionalAccess/namedLocations";
const STRENGTHS: &str = "/v1.0/identity/conditionalAccess/authenticationStrength/policies";
const EVALUATE: &str = "/v1.0/identity/conditionalAccess/evaluate";

const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
const MEGAN: &str = "a0000000-0000-4000-8000-000000000002";
const TRAVEL: &str = "b0000000-0000-4000-8000-000000000003";
const ONBOARDING: &str = "b0000000-0000-4000-8000-000000000005";
const HOME_COUNTRIES: &str = "c0000000-0000-4000-8000-000000000001";
const BOOTSTRAP_STRENGTH: &str = "f5000000-0000-4000-8000-000000000001";
const POLICY_011: &str = "d0000000-0000-4000-8000-000000000011";
const POLICY_012: &str = "d0000000-0000-4000-8000-000000000012";
const SHAREPOINT: &str = "00000003-0000-0ff1-ce00-000000000000";

/// How long a change committed on one node may take to be in force on another. The goal is
/// < 1 s; the deadline leaves room for a loaded 2-core CI machine, and stays below the
/// follower's 5 s safety poll, so passing proves the notification (or reconnect) path.
const ACROSS_NODES: Duration = Duration::from_secs(3);

/// `T0 + ms` as Graph writes it.
fn at(ms: i64) -> String {
    gatehouse_core::time::format(T0 + ms)
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
            }
        })
}

/// A block on all apps for `user`, excluding `CA-Onboarding`.
fn block_policy(name: &str, user: &str) -> Value {
    json!({
        "displayName": name,
        "state": "enabled",
        "conditions": {
            "users": {"includeUsers": [user], "excludeGroups": [ONBOARDING]},
            "applications": {"includeApplications": ["All"]},
            "clientAppTypes": ["all"]
        },
        "grantControls": {"operator": "OR", "builtInControls": ["block"]}
    })
}

/// The README's sign-in: `user` opens SharePoint from `country` in a browser on Windows, with
/// every condition a demo policy uses supplied.
fn signin(user: &str, country: &str, ip: &str) -> Value {
    json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [SHAREPOINT]},
        "signInConditions": {
            "devicePlatform": "windows", "clientAppType": "browser", "country": country, "ipAddress": ip,
            "signInRiskLevel": "none", "userRiskLevel": "none", "insiderRiskLevel": "none",
            "servicePrincipalRiskLevel": "none", "deviceInfo": {}
        }
    })
}

/// The What-If result for one policy.
fn result_for<'a>(results: &'a Value, policy: &str) -> &'a Value {
    results["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == policy)
        .unwrap_or_else(|| panic!("policy {policy} missing from {results}"))
}

fn applying_blocks(results: &Value) -> Vec<String> {
    results["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["policyApplies"] == true && r["state"] == "enabled")
        .filter(|r| {
            r["grantControls"]["builtInControls"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("block")))
        })
        .map(|r| r["displayName"].as_str().unwrap().to_owned())
        .collect()
}

async fn evaluate(server: &TestServer, body: &Value) -> Value {
    let (status, results) = server.admin(Method::POST, EVALUATE, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    results
}

/// Adds `member` to `group` through the directory API (`POST /groups/{id}/members/$ref`), as
/// the node's administrator; the answer comes once the write is acknowledged.
async fn add_member(server: &TestServer, group: &str, member: &str) {
    add_member_on(
        server.http.clone(),
        server.base.clone(),
        server.admin_token.clone(),
        group,
        member,
    )
    .await;
}

async fn add_member_on(
    http: reqwest::Client,
    base: String,
    token: String,
    group: &str,
    member: &str,
) {
    let body = json!({"@odata.id": format!("{base}/v1.0/directoryObjects/{member}")});
    let resp = http
        .post(format!("{base}/v1.0/groups/{group}/members/$ref"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{}", resp.text().await.unwrap_or_default());
}

fn assert_bad_request(status: StatusCode, body: &Value, path: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "badRequest", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{path}: ")),
        "the message should name `{path}`: {message}"
    );
    assert_eq!(body["error"]["target"], path, "{body}");
}

#[tokio::test]
async fn policies_are_created_read_updated_and_deleted_with_graph_status_codes() {
    for db in TestDb::each("policies_crud").await {
        let server = TestServer::start(&db).await;
        let mut body = block_policy("Block Megan", MEGAN);
        // Unknown and beta fields survive: the engine keeps the raw object.
        body["templateId"] = json!("c7503427-338e-4c5e-902d-abe252abfb43");
        body["conditions"]["insiderRiskLevels"] = json!("elevated");
        body["id"] = json!("not-mine-to-choose");
        // The Python SDK types every nested object.
        body["@odata.type"] = json!("#microsoft.graph.conditionalAccessPolicy");
        body["conditions"]["@odata.type"] = json!("#microsoft.graph.conditionalAccessConditionSet");
        body["conditions"]["users"]["@odata.type"] =
            json!("#microsoft.graph.conditionalAccessUsers");
        let (status, created) = server.admin(Method::POST, POLICIES, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{}: {created}", db.label());
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(is_guid(&id), "{id}");
        assert_eq!(created["createdDateTime"], at(0));
        assert_eq!(created["modifiedDateTime"], at(0));
        assert_eq!(created["templateId"], "c7503427-338e-4c5e-902d-abe252abfb43");
        assert_eq!(created["conditions"]["insiderRiskLevels"], "elevated");
        assert!(
            created["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/$metadata#identity/conditionalAccess/policies/$entity")
        );

        let (status, got) = server.admin(Method::GET, &format!("{POLICIES}/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, created);
        let (status, got) =
            server.admin(Method::GET, &format!("{POLICIES}/{}", id.to_uppercase()), None).await;
        assert_eq!(
            (status, &got["id"]),
            (StatusCode::OK, &json!(id)),
            "ids compare case-insensitively"
        );

        // The list is the demo's 16 policies plus this one; OData filters on name, state and id.
        let (status, list) = server.admin(Method::GET, POLICIES, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["value"].as_array().unwrap().len(), 17);
        let (_, list) = server
            .admin(
                Method::GET,
                &format!("{POLICIES}?$filter=displayName%20eq%20'Block%20Megan'"),
                None,
            )
            .await;
        assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["value"][0]["id"], json!(id));
        let (_, list) = server.admin(Method::GET, &format!("{POLICIES}?$filter=state%20eq%20'enabledForReportingButNotEnforced'&$count=true"), None).await;
        assert_eq!(list["@odata.count"], 2, "{list}");
        let (_, list) = server
            .admin(
                Method::GET,
                &format!("{POLICIES}?$filter=id%20eq%20'{id}'&$select=displayName"),
                None,
            )
            .await;
        assert_eq!(
            list["value"],
            json!([{"id": id, "@odata.type": "#microsoft.graph.conditionalAccessPolicy", "displayName": "Block Megan"}])
        );
        let (status, err) = server
            .admin(Method::GET, &format!("{POLICIES}?$filter=grantControls%20eq%20'x'"), None)
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalidRequest"))
        );

        // Paging: every policy exactly once across pages of 8.
        let mut seen = Vec::new();
        let mut next = Some(format!("{POLICIES}?$top=8"));
        while let Some(url) = next {
            let (status, page) = server.admin(Method::GET, &url, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(
                page["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_str().unwrap().to_owned()),
            );
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
        }
        assert_eq!(seen.len(), 17);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, seen);

        // PATCH: `conditions` merges per condition; `grantControls` is replaced whole.
        server.clock.advance(60_000);
        let patch = json!({
            "state": "disabled",
            "conditions": {"locations": {"includeLocations": ["All"], "excludeLocations": [HOME_COUNTRIES]}},
            "grantControls": {"builtInControls": ["mfa"]},
            "createdDateTime": "1999-01-01T00:00:00Z"
        });
        let (status, body) =
            server.admin(Method::PATCH, &format!("{POLICIES}/{id}"), Some(&patch)).await;
        assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
        let (_, got) = server.admin(Method::GET, &format!("{POLICIES}/{id}"), None).await;
        assert_eq!(got["state"], "disabled");
        assert_eq!(
            got["conditions"]["users"]["includeUsers"],
            json!([MEGAN]),
            "conditions not sent are kept"
        );
        assert_eq!(got["conditions"]["insiderRiskLevels"], "elevated");
        assert_eq!(got["conditions"]["locations"]["excludeLocations"], json!([HOME_COUNTRIES]));
        assert_eq!(
            got["grantControls"],
            json!({"builtInControls": ["mfa"]}),
            "grantControls is replaced whole"
        );
        assert_eq!(got["createdDateTime"], at(0), "read-only properties are ignored");
        assert_eq!(got["modifiedDateTime"], at(60_000));
        // `null` clears one condition.
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("{POLICIES}/{id}"),
                Some(&json!({"conditions": {"locations": null}})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, got) = server.admin(Method::GET, &format!("{POLICIES}/{id}"), None).await;
        assert_eq!(got["conditions"]["locations"], Value::Null);
        assert_eq!(got["conditions"]["users"]["includeUsers"], json!([MEGAN]));

        let (status, body) = server.admin(Method::DELETE, &format!("{POLICIES}/{id}"), None).await;
        assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
        for method in [Method::GET, Method::DELETE, Method::PATCH] {
            let body = (method == Method::PATCH).then(|| json!({"state": "enabled"}));
            let (status, err) =
                server.admin(method.clone(), &format!("{POLICIES}/{id}"), body.as_ref()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} after delete");
            assert_eq!(err["error"]["code"], "itemNotFound");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn invalid_policies_are_refused_with_the_json_path_and_nothing_is_stored() {
    for db in TestDb::each("policy_validation").await {
        let server = TestServer::start(&db).await;
        let with = |f: &dyn Fn(&mut Value)| {
            let mut p = block_policy("Bad", MEGAN);
            f(&mut p);
            p
        };
        let unknown = "e0000000-0000-4000-8000-00000000dead";
        let cases: Vec<(Value, &str)> = vec![
            (with(&|p| p["state"] = json!("on")), "state"),
            (
                with(&|p| p["grantControls"]["builtInControls"] = json!(["superControl"])),
                "grantControls.builtInControls[0]",
            ),
            (with(&|p| p["grantControls"]["operator"] = json!("XOR")), "grantControls.operator"),
            (
                with(&|p| p["conditions"]["users"]["includeUsers"] = json!("All")),
                "conditions.users.includeUsers",
            ),
            (
                with(&|p| p["conditions"]["clientAppTypes"] = json!(["fax"])),
                "conditions.clientAppTypes[0]",
            ),
            (
                with(
                    &|p| p["conditions"]["devices"] = json!({"deviceFilter": {"mode": "include", "rule": "device.model -like \"x\""}}),
                ),
                "conditions.devices.deviceFilter.rule",
            ),
            (
                with(&|p| {
                    p.as_object_mut().unwrap().remove("conditions");
                }),
                "conditions",
            ),
            (
                with(&|p| {
                    p.as_object_mut().unwrap().remove("displayName");
                }),
                "displayName",
            ),
            (
                with(&|p| p["@odata.type"] = json!("#microsoft.graph.ipNamedLocation")),
                "@odata.type",
            ),
            // References to objects that do not exist.
            (
                with(&|p| p["conditions"]["users"]["excludeGroups"] = json!([unknown])),
                "conditions.users.excludeGroups",
            ),
            (
                with(&|p| p["conditions"]["users"]["includeUsers"] = json!([unknown])),
                "conditions.users.includeUsers",
            ),
            (
                with(&|p| p["conditions"]["users"]["includeRoles"] = json!([unknown])),
                "conditions.users.includeRoles",
            ),
            (
                with(&|p| {
                    p["conditions"]["locations"] =
                        json!({"includeLocations": ["All"], "excludeLocations": [unknown]})
                }),
                "conditions.locations.excludeLocations",
            ),
            (
                with(&|p| {
                    p["grantControls"] =
                        json!({"operator": "OR", "authenticationStrength": {"id": unknown}})
                }),
                "grantControls.authenticationStrength.id",
            ),
            // Entra refuses MFA together with a strength.
            (
                with(
                    &|p| p["grantControls"] = json!({"operator": "AND", "builtInControls": ["mfa"], "authenticationStrength": {"id": "00000000-0000-0000-0000-000000000002"}}),
                ),
                "grantControls",
            ),
        ];
        for (body, path) in &cases {
            let (status, err) = server.admin(Method::POST, POLICIES, Some(body)).await;
            assert_bad_request(status, &err, path);
        }
        let msg = |status: StatusCode, err: &Value| {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            err["error"]["message"].as_str().unwrap().to_owned()
        };
        let (status, err) = server.admin(Method::POST, POLICIES, Some(&cases[9].0)).await;
        assert!(msg(status, &err).contains(unknown), "the message names the missing id: {err}");
        // Special values are not references; the built-in strengths and roles exist.
        let good = with(&|p| {
            p["conditions"]["users"] = json!({"includeUsers": ["All"], "excludeUsers": ["GuestsOrExternalUsers"],
                "excludeRoles": ["62e90394-69f5-4237-9190-012177145e10"], "excludeGroups": [ONBOARDING]});
            p["conditions"]["locations"] = json!({"includeLocations": ["All"], "excludeLocations": ["AllTrusted", HOME_COUNTRIES]});
            p["grantControls"] = json!({"operator": "OR", "authenticationStrength": {"id": "00000000-0000-0000-0000-000000000004"}});
            p["state"] = json!("enabledForReportingButNotEnforced");
        });
        let (status, created) = server.admin(Method::POST, POLICIES, Some(&good)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap();

        // Malformed bodies are Graph 400s too.
        let resp = server
            .http
            .post(format!("{}{POLICIES}", server.base))
            .bearer_auth(&server.admin_token)
            .header("content-type", "application/json")
            .body("{\"displayName\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let (status, err) =
            server.admin(Method::POST, POLICIES, Some(&json!(["not", "an", "object"]))).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("badRequest"))
        );

        // A PATCH is validated after merging; a refused one changes nothing.
        let (status, err) = server
            .admin(Method::PATCH, &format!("{POLICIES}/{id}"), Some(&json!({"state": "sometimes"})))
            .await;
        assert_bad_request(status, &err, "state");
        let (status, err) = server
            .admin(
                Method::PATCH,
                &format!("{POLICIES}/{id}"),
                Some(&json!({"conditions": {"users": {"includeGroups": [unknown]}}})),
            )
            .await;
        assert_bad_request(status, &err, "conditions.users.includeGroups");
        let (_, got) = server.admin(Method::GET, &format!("{POLICIES}/{id}"), None).await;
        assert_eq!(got, created);

        let (_, list) = server.admin(Method::GET, &format!("{POLICIES}?$count=true"), None).await;
        assert_eq!(list["@odata.count"], 17, "only the valid policy was stored");
        server.stop().await;
    }
}

#[tokio::test]
async fn named_locations_are_typed_validated_and_patched_with_their_type() {
    for db in TestDb::each("named_locations").await {
        let server = TestServer::start(&db).await;
        let ip = json!({
            "@odata.type": "#microsoft.graph.ipNamedLocation",
            "displayName": "Branch office",
            "isTrusted": false,
            "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "192.0.2.0/24"}, {"cidrAddress": "2001:db8:2000::/48"}]
        });
        // Validation names the path.
        let mut untyped = ip.clone();
        untyped.as_object_mut().unwrap().remove("@odata.type");
        let (status, err) = server.admin(Method::POST, LOCATIONS, Some(&untyped)).await;
        assert_bad_request(status, &err, "@odata.type");
        for (cidr, path) in [
            ("192.0.2.0/33", "ipRanges[0].cidrAddress"),
            ("10.0.0.0/8", "ipRanges[0].cidrAddress"),
            ("banana", "ipRanges[0].cidrAddress"),
        ] {
            let mut bad = ip.clone();
            bad["ipRanges"][0]["cidrAddress"] = json!(cidr);
            let (status, err) = server.admin(Method::POST, LOCATIONS, Some(&bad)).await;
            assert_bad_request(status, &err, path);
        }
        let mut empty = ip.clone();
        empty["ipRanges"] = json!([]);
        let (status, err) = server.admin(Method::POST, LOCATIONS, Some(&empty)).await;
        assert_bad_request(status, &err, "ipRanges");
        let country = json!({"@odata.type": "microsoft.graph.countryNamedLocation", "displayName": "Nordics", "countriesAndRegions": ["NO", "SE", "FIN"]});
        let (status, err) = server.admin(Method::POST, LOCATIONS, Some(&country)).await;
        assert_bad_request(status, &err, "countriesAndRegions[2]");
        let compliant = json!({"@odata.type": "#microsoft.graph.compliantNetworkNamedLocation", "displayName": "GSA", "compliantNetworkType": "allTenantCompliantNetworks"});
        let (status, err) = server.admin(Method::POST, LOCATIONS, Some(&compliant)).await;
        assert_bad_request(status, &err, "@odata.type");

        // Created: typed, ranges typed, server-owned fields set.
        let (status, created) = server.admin(Method::POST, LOCATIONS, Some(&ip)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let ip_id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["@odata.type"], "#microsoft.graph.ipNamedLocation");
        assert_eq!(created["ipRanges"][1]["@odata.type"], "#microsoft.graph.iPv6CidrRange");
        assert_eq!(created["createdDateTime"], at(0));
        let mut country = country.clone();
        country["countriesAndRegions"] = json!(["NO", "SE", "FI"]);
        let (status, created) = server.admin(Method::POST, LOCATIONS, Some(&country)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(
            created["@odata.type"], "#microsoft.graph.countryNamedLocation",
            "the type is stored with its #"
        );
        let country_id = created["id"].as_str().unwrap().to_owned();

        // The list is polymorphic: every item says its type.
        let (status, list) = server.admin(Method::GET, LOCATIONS, None).await;
        assert_eq!(status, StatusCode::OK);
        let items = list["value"].as_array().unwrap();
        assert_eq!(items.len(), 5, "the demo's three and two new");
        for item in items {
            let t = item["@odata.type"].as_str().unwrap();
            assert!(
                t == "#microsoft.graph.ipNamedLocation"
                    || t == "#microsoft.graph.countryNamedLocation",
                "{item}"
            );
        }
        let (_, list) = server
            .admin(
                Method::GET,
                &format!("{LOCATIONS}?$filter=startswith(displayName,'Branch')"),
                None,
            )
            .await;
        assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");

        // PATCH needs the type, and the same type.
        let path = format!("{LOCATIONS}/{ip_id}");
        let (status, err) =
            server.admin(Method::PATCH, &path, Some(&json!({"isTrusted": true}))).await;
        assert_bad_request(status, &err, "@odata.type");
        let (status, err) = server
            .admin(Method::PATCH, &path, Some(&json!({"@odata.type": "#microsoft.graph.countryNamedLocation", "countriesAndRegions": ["FR"]})))
            .await;
        assert_bad_request(status, &err, "@odata.type");
        let (status, err) = server
            .admin(Method::PATCH, &path, Some(&json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "ipRanges": [{"cidrAddress": "1.2.3.4/40"}]})))
            .await;
        assert_bad_request(status, &err, "ipRanges[0].cidrAddress");
        server.clock.advance(1_000);
        let (status, _) = server
            .admin(Method::PATCH, &path, Some(&json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "isTrusted": true, "displayName": "Branch (trusted)"})))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, got) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (got["isTrusted"].clone(), got["displayName"].clone()),
            (json!(true), json!("Branch (trusted)"))
        );
        assert_eq!(got["ipRanges"].as_array().unwrap().len(), 2, "properties not sent are kept");
        assert_eq!(got["modifiedDateTime"], at(1_000));

        for id in [&ip_id, &country_id] {
            let (status, _) =
                server.admin(Method::DELETE, &format!("{LOCATIONS}/{id}"), None).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            let (status, _) = server.admin(Method::GET, &format!("{LOCATIONS}/{id}"), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn deleting_a_named_location_a_policy_uses_is_409_naming_the_policies_unless_forced() {
    for db in TestDb::each("location_conflict").await {
        let server = TestServer::start(&db).await;
        let path = format!("{LOCATIONS}/{HOME_COUNTRIES}");
        let (status, err) = server.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        assert_eq!(err["error"]["code"], "conflict");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("011-Global-AllApps-UnapprovedLocation-Block"), "{message}");
        assert!(message.contains(POLICY_012), "{message}");
        let (status, _) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "a refused delete deletes nothing");
        let (status, err) =
            server.admin(Method::DELETE, &format!("{path}?force=maybe"), None).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalidRequest"))
        );

        let (status, _) = server.admin(Method::DELETE, &format!("{path}?force=true"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Forcing leaves the policies as they were: the id now matches no sign-in.
        let (_, p011) = server.admin(Method::GET, &format!("{POLICIES}/{POLICY_011}"), None).await;
        assert_eq!(p011["conditions"]["locations"]["excludeLocations"], json!([HOME_COUNTRIES]));
        // …and an unrelated edit of such a policy is not refused for the dangling id.
        let (status, err) = server
            .admin(
                Method::PATCH,
                &format!("{POLICIES}/{POLICY_011}"),
                Some(&json!({"displayName": "011 renamed"})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
        server.stop().await;
    }
}

#[tokio::test]
async fn built_in_strengths_are_read_only_and_custom_ones_are_managed() {
    for db in TestDb::each("strengths").await {
        let server = TestServer::start(&db).await;
        let (status, list) = server.admin(Method::GET, STRENGTHS, None).await;
        assert_eq!(status, StatusCode::OK);
        let items = list["value"].as_array().unwrap();
        let ids: Vec<&str> = items.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "00000000-0000-0000-0000-000000000002",
                "00000000-0000-0000-0000-000000000003",
                "00000000-0000-0000-0000-000000000004",
                BOOTSTRAP_STRENGTH
            ]
        );
        assert_eq!(items[2]["policyType"], "builtIn");
        assert_eq!(items[2]["displayName"], "Phishing-resistant MFA");
        assert_eq!(
            items[2]["allowedCombinations"],
            json!(["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"])
        );
        assert_eq!(items[3]["policyType"], "custom");
        for item in items {
            assert_eq!(item["@odata.type"], "#microsoft.graph.authenticationStrengthPolicy");
        }
        let (_, builtins) = server
            .admin(Method::GET, &format!("{STRENGTHS}?$filter=policyType%20eq%20'builtIn'"), None)
            .await;
        assert_eq!(builtins["value"].as_array().unwrap().len(), 3);
        let (status, alias) =
            server.admin(Method::GET, "/v1.0/policies/authenticationStrengthPolicies", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(alias["value"], list["value"], "the /policies alias lists the same strengths");

        // Built-ins cannot be changed or deleted.
        let mfa = format!("{STRENGTHS}/00000000-0000-0000-0000-000000000002");
        let (status, got) = server.admin(Method::GET, &mfa, None).await;
        assert_eq!((status, got["policyType"].as_str()), (StatusCode::OK, Some("builtIn")));
        for (method, body) in
            [(Method::PATCH, Some(json!({"displayName": "Mine now"}))), (Method::DELETE, None)]
        {
            let (status, err) = server.admin(method.clone(), &mfa, body.as_ref()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method}");
            assert_eq!(err["error"]["code"], "badRequest");
            assert!(err["error"]["message"].as_str().unwrap().contains("built-in"), "{err}");
        }
        let (_, again) = server.admin(Method::GET, &mfa, None).await;
        assert_eq!(again, got);

        // A custom strength: validated by the engine, read-only fields set by the server.
        let body = json!({"displayName": "Keys only", "policyType": "builtIn", "allowedCombinations": ["fido2", "password,carrierPigeon"]});
        let (status, err) = server.admin(Method::POST, STRENGTHS, Some(&body)).await;
        assert_bad_request(status, &err, "allowedCombinations[1]");
        let (status, err) = server
            .admin(
                Method::POST,
                STRENGTHS,
                Some(&json!({"displayName": "Nothing", "allowedCombinations": []})),
            )
            .await;
        assert_bad_request(status, &err, "allowedCombinations");
        let body = json!({"displayName": "Keys only", "policyType": "builtIn", "allowedCombinations": ["fido2"]});
        let (status, created) = server.admin(Method::POST, STRENGTHS, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["policyType"], "custom", "policyType is read-only");
        assert_eq!(created["requirementsSatisfied"], "mfa");
        let id = created["id"].as_str().unwrap().to_owned();
        let path = format!("{STRENGTHS}/{id}");
        let (status, _) = server.admin(Method::PATCH, &path, Some(&json!({"description": "FIDO2 keys", "allowedCombinations": ["fido2", "windowsHelloForBusiness"]}))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, got) = server.admin(Method::GET, &path, None).await;
        assert_eq!(got["allowedCombinations"], json!(["fido2", "windowsHelloForBusiness"]));
        assert_eq!(got["description"], "FIDO2 keys");

        // In use by a policy: 409 until forced.
        let mut policy = block_policy("Keys for Megan", MEGAN);
        policy["grantControls"] = json!({"operator": "OR", "authenticationStrength": {"id": id}});
        let (status, p) = server.admin(Method::POST, POLICIES, Some(&policy)).await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        let (status, err) = server.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(err["error"]["message"].as_str().unwrap().contains("Keys for Megan"), "{err}");
        let (status, err) =
            server.admin(Method::DELETE, &format!("{STRENGTHS}/{BOOTSTRAP_STRENGTH}"), None).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "the demo's policy 021 uses the bootstrap strength: {err}"
        );
        let (status, _) = server.admin(Method::DELETE, &format!("{path}?force=true"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        server.stop().await;
    }
}

#[tokio::test]
async fn evaluate_tells_the_travel_story_on_the_live_directory() {
    for db in TestDb::each("evaluate_travel").await {
        let server = TestServer::start(&db).await;
        // Adele in France, not in the travel group: 011 blocks.
        let france = signin(ADELE, "FR", "198.51.100.23");
        let results = evaluate(&server, &france).await;
        let p011 = result_for(&results, POLICY_011);
        assert_eq!(
            (p011["policyApplies"].clone(), p011["analysisReasons"].clone()),
            (json!(true), json!("notSet"))
        );
        assert_eq!(p011["grantControls"]["builtInControls"], json!(["block"]));
        assert_eq!(p011["@odata.type"], "#microsoft.graph.whatIfAnalysisResult");
        assert_eq!(applying_blocks(&results), ["011-Global-AllApps-UnapprovedLocation-Block"]);
        assert!(results["@odata.context"].as_str().unwrap().starts_with(&server.base));
        // At home nothing blocks.
        let home = signin(ADELE, "GB", "203.0.113.10");
        assert!(applying_blocks(&evaluate(&server, &home).await).is_empty());

        // Added to CA-Internals-Travel: 011 no longer applies (she is excluded), and 012 (the
        // travel group's own rule) excludes France.
        add_member(&server, TRAVEL, ADELE).await;
        let results = evaluate(&server, &france).await;
        assert_eq!(result_for(&results, POLICY_011)["policyApplies"], false);
        assert_eq!(result_for(&results, POLICY_011)["analysisReasons"], "users");
        assert_eq!(result_for(&results, POLICY_012)["policyApplies"], false);
        assert_eq!(result_for(&results, POLICY_012)["analysisReasons"], "location");
        assert!(applying_blocks(&results).is_empty(), "{results}");
        // …but from the US the travel rule blocks her.
        let us = signin(ADELE, "US", "192.0.2.10");
        assert_eq!(
            applying_blocks(&evaluate(&server, &us).await),
            ["012-Internals-Travel-AllApps-UnapprovedLocation-Block"]
        );

        // `appliedPoliciesOnly` lists only the policies that apply.
        let mut only = france.clone();
        only["appliedPoliciesOnly"] = json!(true);
        let results = evaluate(&server, &only).await;
        assert!(
            results["value"].as_array().unwrap().iter().all(|r| r["policyApplies"] == true),
            "{results}"
        );

        // Bad requests name the path.
        let mut bad = france.clone();
        bad["signInConditions"]["devicePlatform"] = json!("toaster");
        let (status, err) = server.admin(Method::POST, EVALUATE, Some(&bad)).await;
        assert_bad_request(status, &err, "signInConditions.devicePlatform");
        let mut bad = france.clone();
        bad["signInConditions"]["countryCode"] = json!("FR");
        let (status, err) = server.admin(Method::POST, EVALUATE, Some(&bad)).await;
        assert_bad_request(status, &err, "signInConditions.countryCode");
        let (status, err) = server.admin(Method::POST, EVALUATE, Some(&json!({}))).await;
        assert_bad_request(status, &err, "signInIdentity");
        let (status, err) = server
            .admin(
                Method::POST,
                EVALUATE,
                Some(&signin("e0000000-0000-4000-8000-00000000dead", "FR", "198.51.100.23")),
            )
            .await;
        assert_bad_request(status, &err, "signInIdentity.userId");
        server.stop().await;
    }
}

#[tokio::test]
async fn an_acknowledged_write_is_in_force_for_the_next_evaluation() {
    for db in TestDb::each("live_snapshot").await {
        let server = TestServer::start(&db).await;
        let megan = signin(MEGAN, "GB", "203.0.113.10");
        assert!(applying_blocks(&evaluate(&server, &megan).await).is_empty());

        // A new block policy: the very next evaluation sees it.
        let (status, created) =
            server.admin(Method::POST, POLICIES, Some(&block_policy("Block Megan", MEGAN))).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(applying_blocks(&evaluate(&server, &megan).await), ["Block Megan"]);

        // Megan joins the group the policy excludes: the next evaluation no longer blocks.
        add_member(&server, ONBOARDING, MEGAN).await;
        let results = evaluate(&server, &megan).await;
        assert!(applying_blocks(&results).is_empty(), "{results}");
        assert_eq!(result_for(&results, &id)["analysisReasons"], "users");

        // Report-only through PATCH: listed as applying, never enforced.
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("{POLICIES}/{id}"),
                Some(&json!({"conditions": {"users": {"includeUsers": [ADELE]}}})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let adele = signin(ADELE, "GB", "203.0.113.10");
        assert_eq!(applying_blocks(&evaluate(&server, &adele).await), ["Block Megan"]);
        let (status, _) = server
            .admin(
                Method::PATCH,
                &format!("{POLICIES}/{id}"),
                Some(&json!({"state": "enabledForReportingButNotEnforced"})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(applying_blocks(&evaluate(&server, &adele).await).is_empty());

        // Deleting it is in force at once too.
        let (status, _) = server
            .admin(Method::PATCH, &format!("{POLICIES}/{id}"), Some(&json!({"state": "enabled"})))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(applying_blocks(&evaluate(&server, &adele).await), ["Block Megan"]);
        let (status, _) = server.admin(Method::DELETE, &format!("{POLICIES}/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(applying_blocks(&evaluate(&server, &adele).await).is_empty());
        server.stop().await;
    }
}

/// Waits until `check` holds on a node, polling every 10 ms, for at most `deadline`.
async fn within<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(deadline, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: not within {deadline:?}");
}

async fn blocks_on(server: &TestServer, body: &Value, policy: &str) -> bool {
    let (status, results) = server.admin(Method::POST, EVALUATE, Some(body)).await;
    status == StatusCode::OK && applying_blocks(&results).iter().any(|n| n == policy)
}

#[tokio::test]
async fn two_nodes_on_one_postgres_database_see_each_others_changes() {
    let Some(db) =
        TestDb::postgres("two_nodes_on_one_postgres_database_see_each_others_changes").await
    else {
        return;
    };
    let a = TestServer::start(&db).await;
    // The second node finds the store seeded and gets its own administrator token.
    let b = TestServer::start(&db).await;
    let megan = signin(MEGAN, "GB", "203.0.113.10");
    assert!(!blocks_on(&b, &megan, "Block Megan").await);

    // A policy created through A is in force on B, which learns of it by LISTEN/NOTIFY.
    let (status, created) =
        a.admin(Method::POST, POLICIES, Some(&block_policy("Block Megan", MEGAN))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();
    within(ACROSS_NODES, "a policy created on A blocks on B", || {
        blocks_on(&b, &megan, "Block Megan")
    })
    .await;
    let (status, mut got) = b.admin(Method::GET, &format!("{POLICIES}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let mut created = created;
    // Each node names itself in `@odata.context`; the object is the same.
    got.as_object_mut().unwrap().remove("@odata.context");
    created.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(got, created);

    // A write through B is in force on A.
    add_member(&b, ONBOARDING, MEGAN).await;
    within(ACROSS_NODES, "a membership added on B is in force on A", || async {
        !blocks_on(&a, &megan, "Block Megan").await
    })
    .await;

    // The notification connections drop (a PostgreSQL restart, a proxy timeout): the
    // followers reconnect, and a change made afterwards still reaches the other node.
    let admin_url = std::env::var("GATEHOUSE_TEST_DATABASE_URL").unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await.unwrap();
    let db_name = db.url.rsplit('/').next().unwrap().to_owned();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = $1",
    )
    .bind(&db_name)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(killed.len() >= 2, "both nodes listen: {killed:?}");
    let (status, _) = a.admin(Method::DELETE, &format!("{POLICIES}/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    within(ACROSS_NODES, "a delete on A after the connections dropped reaches B", || async {
        b.admin(Method::GET, &format!("{POLICIES}/{id}"), None).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    // And the followers listen again: the next change arrives by notification too.
    let (status, created) = b
        .admin(
            Method::POST,
            POLICIES,
            Some(&block_policy("Block Megan again", "a0000000-0000-4000-8000-000000000003")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();
    within(ACROSS_NODES, "a policy created on B after reconnecting reaches A", || async {
        a.admin(Method::GET, &format!("{POLICIES}/{id}"), None).await.0 == StatusCode::OK
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_two_nodes_lose_and_reorder_nothing() {
    let Some(db) =
        TestDb::postgres("concurrent_writers_on_two_nodes_lose_and_reorder_nothing").await
    else {
        return;
    };
    let a = TestServer::start(&db).await;
    let b = TestServer::start(&db).await;
    // 20 new users, then each added to CA-Onboarding at once: 10 through A, 10 through B.
    let users: Vec<String> = (0..20).map(|i| format!("e0000000-0000-4000-8000-{i:012}")).collect();
    let changes: Vec<Change> = users
        .iter()
        .map(|id| Change::PutUser {
            user: json!({"id": id, "userPrincipalName": format!("{id}@contoso.example"), "displayName": id, "accountEnabled": true})
                .as_object()
                .unwrap()
                .clone(),
            manager: None,
        })
        .collect();
    let w = a.running.state.store.begin().await.unwrap();
    let before = w.commit(T0, &changes, &[]).await.unwrap();
    a.running.state.sync().await.unwrap();

    let mut writes = tokio::task::JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        let (http, base, token) = (node.http.clone(), node.base.clone(), node.admin_token.clone());
        let user = user.clone();
        writes.spawn(async move { add_member_on(http, base, token, ONBOARDING, &user).await });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap();
    }

    let store = a.running.state.store.clone();
    let last = store.version().await.unwrap();
    assert_eq!(last, before + 20, "one version per write, none lost");
    let mut conn = store_conn(&db).await;
    let versions: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM changes WHERE version > $1 ORDER BY version")
            .bind(before)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let versions: Vec<i64> = versions.into_iter().map(|(v,)| v).collect();
    assert_eq!(versions, ((before + 1)..=last).collect::<Vec<_>>(), "the change log has no gaps");

    for (name, node) in [("A", &a), ("B", &b)] {
        within(ACROSS_NODES, &format!("node {name} applies every write"), || async {
            node.running.state.applied_version() == last
        })
        .await;
    }
    let members = |s: &TestServer| {
        let mut m = s.running.state.dir().members(ONBOARDING).to_vec();
        m.sort();
        m
    };
    let (on_a, on_b) = (members(&a), members(&b));
    assert_eq!(on_a, on_b, "both nodes' directories agree");
    for user in &users {
        assert!(on_a.contains(user), "{user} is a member on both nodes");
    }
    // And both agree with the database.
    let fresh = store.load_directory().await.unwrap();
    let mut stored: Vec<String> =
        fresh.tenant.groups.iter().find(|g| g.id == ONBOARDING).unwrap().members.clone();
    stored.sort();
    assert_eq!(stored, on_a);
    a.stop().await;
    b.stop().await;
}

async fn store_conn(db: &TestDb) -> sqlx::PgConnection {
    <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap()
}
