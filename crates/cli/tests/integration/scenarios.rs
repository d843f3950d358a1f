//! The stories Gatehouse exists for, as data: every case must hold.

use gatehouse_policy::{Case, Snapshot, json, run_case};

use crate::support::{gatehouse, load, repo_root, shared};

fn run_cases(tenant: &std::path::Path, cases: &std::path::Path) -> usize {
    let snapshot = Snapshot::compile(&load(tenant).tenant);
    let text = std::fs::read_to_string(cases).unwrap();
    let mut n = 0;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let case = Case::from_json(&json::parse(line).unwrap(), i + 1).unwrap();
        assert!(case.expect.is_some(), "{}: case without expectations", case.name);
        let result = run_case(&snapshot, &case);
        assert!(result.passed(), "{}: {}", result.name, result.failures.join("; "));
        n += 1;
    }
    n
}

#[test]
fn every_travel_case_holds() {
    let Some(shared) = shared("every_travel_case_holds") else {
        return;
    };
    let travel = shared.join("scenarios/travel");
    assert_eq!(run_cases(&travel.join("tenant"), &travel.join("cases.jsonl")), 9);
}

#[test]
fn every_travel_case_holds_through_the_binary() {
    let Some(shared) = shared("every_travel_case_holds_through_the_binary") else {
        return;
    };
    let travel = shared.join("scenarios/travel");
    let out = gatehouse(
        &[
            "whatif",
            "--tenant",
            travel.join("tenant").to_str().unwrap(),
            "--cases",
            travel.join("cases.jsonl").to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 9);
    assert!(lines.iter().all(|l| l["pass"] == true));
    assert!(String::from_utf8_lossy(&out.stderr).contains("9 passed, 0 failed"));
}

#[test]
fn every_example_case_holds() {
    let contoso = repo_root().join("examples/contoso");
    assert!(run_cases(&contoso.join("tenant"), &contoso.join("cases.jsonl")) >= 20);
    let loaded = load(&contoso.join("tenant"));
    assert!(loaded.warnings.is_empty(), "the example should be lint-clean: {:?}", loaded.warnings);
}

#[test]
fn adele_is_blocked_in_france_until_she_joins_the_travel_group() {
    let Some(shared) = shared("adele_is_blocked_in_france_until_she_joins_the_travel_group") else {
        return;
    };
    let travel = shared.join("scenarios/travel/tenant");
    let request = json::parse(r##"{
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": "a0000000-0000-4000-8000-000000000001"},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": ["00000003-0000-0ff1-ce00-000000000000"]},
        "signInConditions": {"devicePlatform": "windows", "clientAppType": "browser", "country": "FR", "ipAddress": "92.205.185.202",
            "signInRiskLevel": "none", "userRiskLevel": "none", "insiderRiskLevel": "none", "servicePrincipalRiskLevel": "none"}
    }"##).unwrap();
    let request = gatehouse_policy::SignInRequest::from_json(&request).unwrap();
    let mut tenant = load(&travel).tenant;
    let before = Snapshot::compile(&tenant);
    let d = before.evaluate(&request).decide(&Default::default());
    assert!(
        matches!(d.outcome, gatehouse_policy::Outcome::Blocked { ref policies } if policies == &["d0000000-0000-4000-8000-000000000011"])
    );

    // The access package adds her to CA-Internals-Travel: now only MFA is asked for.
    let travel_group =
        tenant.groups.iter_mut().find(|g| g.display_name == "CA-Internals-Travel").unwrap();
    travel_group.members.push("a0000000-0000-4000-8000-000000000001".into());
    let after = Snapshot::compile(&tenant);
    let d = after.evaluate(&request).decide(&Default::default());
    let gatehouse_policy::Outcome::ActionRequired { requirements } = &d.outcome else {
        panic!("{:?}", d.outcome)
    };
    assert_eq!(requirements.len(), 1);
    assert_eq!(requirements[0].unmet, vec![&gatehouse_policy::Control::Mfa]);
    // And once MFA is done, she is in.
    let methods = gatehouse_policy::MethodSet::of(&[
        gatehouse_policy::MethodMode::Password,
        gatehouse_policy::MethodMode::SoftwareOath,
    ]);
    let d = after
        .evaluate(&request)
        .decide(&gatehouse_policy::AuthState { methods, ..Default::default() });
    assert_eq!(d.outcome, gatehouse_policy::Outcome::Granted);
}
