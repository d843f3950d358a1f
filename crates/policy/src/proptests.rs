//! Property tests: invariants that must hold for any tenant, policy set and sign-in.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::decision::{AuthState, Outcome, SignInResult};
use crate::evaluate::Tri;
use crate::model::enums::{METHOD_MODES, MethodSet};
use crate::request::SignInRequest;
use crate::snapshot::Snapshot;
use crate::tenant::{SourceFile, load};

const USERS: usize = 6;
const GROUPS: usize = 5;
const APPS: [&str; 3] = [
    "00000003-0000-0ff1-ce00-000000000000", // SharePoint, in Office365
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
];
const LOCATIONS: [&str; 2] =
    ["c0000000-0000-4000-8000-000000000001", "c0000000-0000-4000-8000-000000000002"];

fn user(i: usize) -> String {
    format!("a0000000-0000-4000-8000-{i:012}")
}

fn group(i: usize) -> String {
    format!("b0000000-0000-4000-8000-{i:012}")
}

fn subset<T: Clone + std::fmt::Debug>(items: Vec<T>) -> impl Strategy<Value = Vec<T>> {
    let n = items.len();
    proptest::collection::vec(any::<bool>(), n).prop_map(move |mask| {
        items.iter().zip(mask).filter(|(_, m)| *m).map(|(i, _)| i.clone()).collect()
    })
}

/// Users (some guests) and groups whose members are users or other groups; cycles allowed.
fn directory() -> impl Strategy<Value = Vec<Value>> {
    let users = proptest::collection::vec((any::<bool>(), any::<bool>()), USERS);
    let groups = proptest::collection::vec(
        (subset((0..USERS).collect()), subset((0..GROUPS).collect())),
        GROUPS,
    );
    (users, groups).prop_map(|(users, groups)| {
        let mut out: Vec<Value> = users
            .iter()
            .enumerate()
            .map(|(i, (guest, invited))| {
                json!({"@odata.type": "#microsoft.graph.user", "id": user(i),
                       "userType": if *guest { "Guest" } else { "Member" },
                       "creationType": if *invited { Value::from("Invitation") } else { Value::Null }})
            })
            .collect();
        for (i, (us, gs)) in groups.iter().enumerate() {
            let members: Vec<Value> = us
                .iter()
                .map(|u| json!({"id": user(*u)}))
                .chain(gs.iter().filter(|g| **g != i).map(|g| json!({"id": group(*g)})))
                .collect();
            out.push(json!({"@odata.type": "#microsoft.graph.group", "id": group(i), "members": members}));
        }
        out.push(json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "id": LOCATIONS[0], "isTrusted": true,
                        "ipRanges": [{"cidrAddress": "203.0.113.0/24"}]}));
        out.push(json!({"@odata.type": "#microsoft.graph.countryNamedLocation", "id": LOCATIONS[1],
                        "countriesAndRegions": ["FR"], "includeUnknownCountriesAndRegions": false}));
        out
    })
}

fn policy(id: usize) -> impl Strategy<Value = Value> {
    let users = (
        subset(vec![
            "All".to_owned(),
            "None".into(),
            "GuestsOrExternalUsers".into(),
            user(0),
            user(1),
            user(2),
        ]),
        subset(vec![user(1), user(3), "GuestsOrExternalUsers".into()]),
        subset((0..GROUPS).map(group).collect()),
        subset((0..GROUPS).map(group).collect()),
    );
    let apps = (
        prop_oneof![
            Just(vec!["All"]),
            Just(vec!["Office365"]),
            Just(vec![APPS[1]]),
            Just(vec![APPS[1], APPS[2]])
        ],
        subset(vec![APPS[0], APPS[2]]),
    );
    let conditions = (
        prop_oneof![
            Just(Value::Null),
            Just(json!({"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]})),
            Just(json!({"includeLocations": [LOCATIONS[1]]}))
        ],
        prop_oneof![
            Just(Value::Null),
            Just(json!({"includePlatforms": ["all"], "excludePlatforms": ["windows"]})),
            Just(json!({"includePlatforms": ["iOS", "android"]}))
        ],
        prop_oneof![
            Just(json!(["all"])),
            Just(json!(["exchangeActiveSync", "other"])),
            Just(json!(["browser"]))
        ],
        prop_oneof![Just(json!([])), Just(json!(["high"])), Just(json!(["medium", "high"]))],
    );
    let grant =
        (subset(vec!["block", "mfa", "compliantDevice", "domainJoinedDevice"]), any::<bool>());
    let state =
        prop_oneof![Just("enabled"), Just("enabledForReportingButNotEnforced"), Just("disabled")];
    (users, apps, conditions, grant, state).prop_map(
        move |((iu, eu, ig, eg), (ia, ea), (loc, plat, clients, risk), (controls, and), state)| {
            json!({
                "@odata.type": "#microsoft.graph.conditionalAccessPolicy",
                "id": format!("d0000000-0000-4000-8000-{id:012}"),
                "displayName": format!("policy {id}"),
                "state": state,
                "conditions": {
                    "users": {"includeUsers": iu, "excludeUsers": eu, "includeGroups": ig, "excludeGroups": eg},
                    "applications": {"includeApplications": ia, "excludeApplications": ea},
                    "locations": loc, "platforms": plat, "clientAppTypes": clients, "signInRiskLevels": risk
                },
                "grantControls": {"operator": if and { "AND" } else { "OR" }, "builtInControls": controls}
            })
        },
    )
}

fn policies() -> impl Strategy<Value = Vec<Value>> {
    (1usize..8).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>())
}

fn request() -> impl Strategy<Value = SignInRequest> {
    (
        0..USERS,
        proptest::sample::select(APPS.to_vec()),
        proptest::sample::select(vec!["windows", "iOS", "android", "macOS"]),
        proptest::sample::select(vec!["browser", "mobileAppsAndDesktopClients", "exchangeActiveSync", "other"]),
        proptest::sample::select(vec![("GB", "81.2.69.160"), ("FR", "92.205.185.202"), ("GB", "203.0.113.7")]),
        proptest::sample::select(vec!["none", "low", "medium", "high"]),
        any::<bool>(),
    )
        .prop_map(|(u, app, platform, client, (country, ip), risk, compliant)| {
            let body = json!({
                "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user(u)},
                "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [app]},
                "signInConditions": {"devicePlatform": platform, "clientAppType": client, "country": country,
                    "ipAddress": ip, "signInRiskLevel": risk, "userRiskLevel": "none",
                    "deviceInfo": {"isCompliant": compliant}}
            });
            SignInRequest::from_json(&body).unwrap_or_default()
        })
}

fn methods() -> impl Strategy<Value = AuthState> {
    subset(METHOD_MODES.iter().map(|(_, m)| *m).collect())
        .prop_map(|m| AuthState { methods: MethodSet::of(&m), ..AuthState::default() })
}

fn compile(dir: &[Value], policies: &[Value]) -> Snapshot {
    let all: Vec<Value> = dir.iter().chain(policies).cloned().collect();
    let bytes = json!({"value": all}).to_string().into_bytes();
    let loaded =
        load(&[SourceFile { name: "t.json".into(), bytes }]).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::compile(&loaded.tenant)
}

/// The outcome with requirements as a sorted list, so that order does not matter.
fn canonical(o: Outcome) -> Outcome {
    match o {
        Outcome::Blocked { mut policies } => {
            policies.sort();
            Outcome::Blocked { policies }
        }
        Outcome::ActionRequired { mut requirements } => {
            requirements.sort_by(|a, b| a.policy_id.cmp(b.policy_id));
            Outcome::ActionRequired { requirements }
        }
        Outcome::Granted => Outcome::Granted,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn exclusion_always_wins(dir in directory(), p in policy(0), r in request(), via_group in any::<bool>()) {
        let crate::request::Identity::User { user_id, .. } = &r.identity else { unreachable!() };
        let mut p = p;
        if via_group {
            // A fresh group holding just this user, excluded.
            let mut dir = dir.clone();
            dir.push(json!({"@odata.type": "#microsoft.graph.group", "id": group(99), "members": [{"id": user_id}]}));
            p["conditions"]["users"]["excludeGroups"].as_array_mut().unwrap().push(json!(group(99)));
            let s = compile(&dir, &[p]);
            prop_assert_eq!(s.evaluate(&r).results[0].applies, Tri::No);
        } else {
            p["conditions"]["users"]["excludeUsers"].as_array_mut().unwrap().push(json!(user_id));
            let s = compile(&dir, &[p]);
            prop_assert_eq!(s.evaluate(&r).results[0].applies, Tri::No);
        }
    }

    #[test]
    fn block_always_wins(dir in directory(), ps in policies(), r in request(), auth in methods()) {
        let mut ps = ps;
        ps.push(json!({"id": "block-all", "displayName": "block", "state": "enabled",
            "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}}));
        let s = compile(&dir, &ps);
        let d = s.evaluate(&r).decide(&auth);
        let blocked_by_it = matches!(d.outcome, Outcome::Blocked { ref policies } if policies.contains(&"block-all"));
        prop_assert!(blocked_by_it, "outcome: {:?}", d.outcome);
    }

    #[test]
    fn results_do_not_depend_on_policy_order(dir in directory(), ps in policies(), r in request(), auth in methods(), k in 0usize..8) {
        let s1 = compile(&dir, &ps);
        let mut shuffled = ps.clone();
        shuffled.reverse();
        let len = shuffled.len();
        shuffled.rotate_left(k % len);
        let s2 = compile(&dir, &shuffled);
        let e1 = s1.evaluate(&r);
        let e2 = s2.evaluate(&r);
        let mut a1: Vec<_> = e1.policies().map(|(p, a)| (p.id.clone(), a)).collect();
        let mut a2: Vec<_> = e2.policies().map(|(p, a)| (p.id.clone(), a)).collect();
        a1.sort_by(|x, y| x.0.cmp(&y.0));
        a2.sort_by(|x, y| x.0.cmp(&y.0));
        prop_assert_eq!(a1, a2);
        prop_assert_eq!(canonical(e1.decide(&auth).outcome), canonical(e2.decide(&auth).outcome));
    }

    #[test]
    fn report_only_and_disabled_policies_never_change_the_outcome(
        dir in directory(), ps in policies(), extra in policy(50), off in any::<bool>(), r in request(), auth in methods()
    ) {
        let (s1, s2);
        s1 = compile(&dir, &ps);
        let before = s1.evaluate(&r).decide(&auth).outcome;
        let mut extra = extra;
        extra["state"] = json!(if off { "disabled" } else { "enabledForReportingButNotEnforced" });
        let mut with = ps.clone();
        with.push(extra);
        s2 = compile(&dir, &with);
        let after = s2.evaluate(&r).decide(&auth).outcome;
        prop_assert_eq!(canonical(before), canonical(after));
    }

    #[test]
    fn what_if_equals_the_live_decision(dir in directory(), ps in policies(), r in request(), auth in methods()) {
        let s = compile(&dir, &ps);
        let e = s.evaluate(&r);
        let graph = e.to_graph_json();
        let d = e.decide(&auth);
        let value = graph["value"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(value.len(), d.results.len());
        for (w, live) in value.iter().zip(d.policies()) {
            let applied_live = !matches!(live.result,
                SignInResult::NotApplied | SignInResult::ReportOnlyNotApplied | SignInResult::NotEnabled);
            prop_assert_eq!(w["policyApplies"].as_bool(), Some(applied_live));
            prop_assert_eq!(w["id"].as_str(), Some(live.id));
        }
        prop_assert_eq!(e.blocked(), d.is_blocked());
    }

    #[test]
    fn the_what_if_text_is_the_what_if_json(dir in directory(), ps in policies(), r in request()) {
        let s = compile(&dir, &ps);
        let e = s.evaluate(&r);
        let mut json = e.to_graph_json();
        if let Some(o) = json.as_object_mut() {
            o.insert("@odata.context".into(), "ctx".into());
        }
        let text: serde_json::Value = serde_json::from_str(&e.to_graph_text("ctx")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(text, json);
    }

    #[test]
    fn evaluation_is_deterministic(dir in directory(), ps in policies(), r in request(), auth in methods()) {
        let s = compile(&dir, &ps);
        prop_assert_eq!(s.evaluate(&r).decide(&auth), s.evaluate(&r).decide(&auth));
    }
}
