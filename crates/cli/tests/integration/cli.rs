//! The binary with bad input of every kind: one clear line, a non-zero exit, never a panic.

use serde_json::{Value, json};

use crate::support::{Scratch, gatehouse};

const POLICY: &str = r#"{"id":"p1","displayName":"011-Block","state":"enabled",
  "conditions":{"users":{"includeUsers":["All"]},"applications":{"includeApplications":["All"]}},
  "grantControls":{"operator":"OR","builtInControls":["block"]}}"#;

fn good_request() -> Value {
    json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": "u1"},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": ["a1"]},
        "signInConditions": {}
    })
}

/// Runs whatif on a tenant with one policy file and a request from stdin.
fn whatif(policy: &str, request: &str) -> (i32, String, String) {
    let dir = Scratch::new();
    dir.write("policies/011.json", policy);
    let out = gatehouse(
        &["whatif", "--tenant", dir.0.to_str().unwrap(), "--request", "-"],
        Some(request),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clear_error(code: i32, stderr: &str, needle: &str) {
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(needle),
        "expected `{needle}` in: {stderr}"
    );
}

#[test]
fn a_good_request_works() {
    let (code, stdout, stderr) = whatif(POLICY, &good_request().to_string());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("BLOCKED by \"011-Block\""), "{stdout}");
    assert!(stderr.contains("user `u1` is not in the tenant export"));
}

#[test]
fn bad_policies_are_refused_with_file_policy_and_path() {
    let cases = [
        ("{\"id\":", "policies/011.json: unexpected end of JSON"),
        (
            &POLICY.replace(r#""includeUsers":["All"]"#, r#""includeUsers":"All""#),
            r#"policies/011.json: policy "011-Block": conditions.users.includeUsers: expected an array, found a string"#,
        ),
        (
            &POLICY.replace(r#""users":{"#, r#""locations":{"includeLocations":["x"]},"users":{"#).replace("\"id\":\"p1\",", "\"id\":\"p1\",\"x\":1,"),
            "",
        ),
        (
            &POLICY.replace(r#""clientAppTypes""#, "").replace(r#""users":{"#, r#""devices":{"deviceFilter":{"mode":"include","rule":"device.trustType -eq"}},"users":{"#),
            "conditions.devices.deviceFilter.rule: invalid device filter",
        ),
        (&format!("{}{}", "[".repeat(5000), "]".repeat(5000)), "policies/011.json: invalid JSON"),
        (&POLICY.replace("enabled", "on"), "state: `on` is not a valid policy state"),
    ];
    for (policy, needle) in cases {
        let (code, _, stderr) = whatif(policy, &good_request().to_string());
        if needle.is_empty() {
            // A dangling location reference is a warning, not an error.
            assert_eq!(code, 0, "{stderr}");
        } else {
            assert_clear_error(code, &stderr, needle);
            assert!(stderr.contains("the tenant was refused"), "{stderr}");
        }
    }
}

#[test]
fn bad_cidr_in_a_named_location_is_refused() {
    let dir = Scratch::new();
    dir.write("policies/011.json", POLICY);
    dir.write(
        "namedLocations.json",
        r##"{"value":[{"@odata.type":"#microsoft.graph.ipNamedLocation","id":"l1","displayName":"HQ","ipRanges":[{"cidrAddress":"203.0.113.0/33"}]}]}"##,
    );
    let out = gatehouse(&["policies", "check", "--tenant", dir.0.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#"namedLocations.json: named location "HQ": ipRanges[0].cidrAddress: `203.0.113.0/33` is not an IPv4 or IPv6 range in CIDR notation"#), "{stdout}");
}

#[test]
fn bad_requests_get_one_clear_line() {
    let mut missing = good_request();
    missing.as_object_mut().unwrap().remove("signInContext");
    let mut bad_ip = good_request();
    bad_ip["signInConditions"]["ipAddress"] = json!("10.0.0.300");
    let mut bad_platform = good_request();
    bad_platform["signInConditions"]["devicePlatform"] = json!("amiga");
    let mut typo = good_request();
    typo["signInCondition"] = json!({});
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "request (stdin): unexpected end of JSON"),
        ("not json".into(), "request (stdin): invalid JSON"),
        (missing.to_string(), "request (stdin): signInContext: is required"),
        (
            bad_ip.to_string(),
            "request (stdin): signInConditions.ipAddress: `10.0.0.300` is not an IP address",
        ),
        (
            bad_platform.to_string(),
            "request (stdin): signInConditions.devicePlatform: `amiga` is not a valid device platform",
        ),
        (typo.to_string(), "request (stdin): signInCondition: unknown property"),
        ("[".repeat(300_000), "the request is larger than"),
        (format!("{}1{}", "[".repeat(1000), "]".repeat(1000)), "request (stdin): invalid JSON"),
    ];
    for (request, needle) in cases {
        let (code, _, stderr) = whatif(POLICY, &request);
        assert_clear_error(code, &stderr, needle);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn missing_paths_and_empty_folders_are_clear_errors() {
    let out = gatehouse(&["policies", "check", "--tenant", "/nonexistent/tenant"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: cannot read tenant `/nonexistent/tenant`")
    );
    let dir = Scratch::new();
    let out = gatehouse(&["policies", "check", "--tenant", dir.0.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no *.json files"));
}

#[test]
fn utf16_exports_with_a_bom_load() {
    let dir = Scratch::new();
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(POLICY.encode_utf16().flat_map(u16::to_le_bytes));
    dir.write("policy.json", bytes);
    let out = gatehouse(
        &["policies", "check", "--tenant", dir.0.to_str().unwrap(), "--format", "json"],
        None,
    );
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["policies"], 1);
    // "Blocks all users and excludes nobody" is the lock-out warning.
    assert!(report["warnings"].as_array().unwrap().iter().any(|w| w["code"] == "GH-LINT-003"));
}

#[test]
fn cases_files_report_one_line_per_case_and_fail_the_run_on_a_miss() {
    let dir = Scratch::new();
    dir.write("tenant/policy.json", POLICY);
    let pass = json!({"name": "blocked", "request": good_request(), "expect": {"applies": ["p1"], "exact": true, "blocked": true}});
    let fail = json!({"name": "not blocked?", "request": good_request(), "expect": {"applies": [], "blocked": false}});
    let cases = dir.write("cases.jsonl", format!("{pass}\n\n{fail}\n{}\n", good_request()));
    let tenant = dir.0.join("tenant");
    let out = gatehouse(
        &[
            "whatif",
            "--tenant",
            tenant.to_str().unwrap(),
            "--cases",
            cases.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["pass"], true);
    assert_eq!(lines[1]["pass"], false);
    assert!(
        lines[1]["failures"][0]
            .as_str()
            .unwrap()
            .contains("expected blocked=false, got blocked=true")
    );
    // A bare request runs and is not checked: `pass` is null, never a vacuous true.
    assert_eq!(lines[2]["pass"], Value::Null);
    assert_eq!(lines[2]["applies"], json!(["p1"]));

    let broken =
        dir.write("broken.jsonl", format!("{pass}\n{{\"name\": \"x\", \"request\": {{}}}}\n"));
    let out = gatehouse(
        &["whatif", "--tenant", tenant.to_str().unwrap(), "--cases", broken.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("broken.jsonl:2: request.signInIdentity: is required")
    );
}

#[test]
fn mistakes_in_a_cases_file_cannot_pass_silently() {
    let dir = Scratch::new();
    dir.write("tenant/policy.json", POLICY);
    let tenant = dir.0.join("tenant");
    let run = |name: &str, text: String| {
        let cases = dir.write(name, text);
        gatehouse(
            &["whatif", "--tenant", tenant.to_str().unwrap(), "--cases", cases.to_str().unwrap()],
            None,
        )
    };
    let typo = json!({"name": "x", "request": good_request(), "expected": {"blocked": false}});
    let out = run("typo.jsonl", format!("{typo}\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("typo.jsonl:1: expected: unknown property")
    );
    let inner = json!({"name": "x", "request": good_request(), "expect": {"apply": ["p1"]}});
    let out = run("inner.jsonl", format!("{inner}\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expect.apply: unknown property"));
    let vacuous = json!({"name": "x", "request": good_request(), "expect": {}});
    let out = run("vacuous.jsonl", format!("{vacuous}\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expect: checks nothing"));
    let out = run("empty.jsonl", "\n\n".into());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cases in the file"));
    let out = run("bare.jsonl", format!("{}\n", good_request()));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("RAN   line 1 (no expectations; outcome: blocked)")
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 passed, 0 failed, 1 not checked"));
}

#[test]
fn an_undecided_policy_is_reported_with_what_it_needs_not_as_the_outcome() {
    let dir = Scratch::new();
    let legacy_block = POLICY
        .replace(r#""users":{"#, r#""clientAppTypes":["exchangeActiveSync","other"],"users":{"#);
    dir.write("policies/011.json", legacy_block);
    let out = gatehouse(
        &["whatif", "--tenant", dir.0.to_str().unwrap(), "--request", "-"],
        Some(&good_request().to_string()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Outcome: ALLOWED"), "{stdout}");
    assert!(stdout.contains("Undetermined: \"011-Block\" would block if it applies; supply signInConditions.clientAppType"), "{stdout}");
}

#[test]
fn linked_folders_are_read_and_special_files_refused() {
    let dir = Scratch::new();
    dir.write("real/policies/011.json", POLICY);
    std::fs::create_dir_all(dir.0.join("tenant")).unwrap();
    std::os::unix::fs::symlink(dir.0.join("real/policies"), dir.0.join("tenant/policies")).unwrap();
    let tenant = dir.0.join("tenant");
    let out = gatehouse(
        &["policies", "check", "--tenant", tenant.to_str().unwrap(), "--format", "json"],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["policies"], 1, "a linked folder of policies must not be skipped");

    // A link back to the top is a loop: each real folder and file is read once, so the loop
    // ends and nothing is counted twice.
    std::os::unix::fs::symlink(&tenant, dir.0.join("tenant/loop")).unwrap();
    let out = gatehouse(
        &["policies", "check", "--tenant", tenant.to_str().unwrap(), "--format", "json"],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["policies"], 1);

    // A FIFO would block for ever.
    let fifo_dir = Scratch::new();
    fifo_dir.write("a.json", POLICY);
    let fifo = fifo_dir.0.join("b.json");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let out = gatehouse(&["policies", "check", "--tenant", fifo_dir.0.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not a regular file"));
    }
}

#[test]
fn a_huge_line_in_a_cases_file_is_refused_without_reading_it_all() {
    let dir = Scratch::new();
    dir.write("tenant/policy.json", POLICY);
    let cases = dir.write("cases.jsonl", "x".repeat(2 * 1024 * 1024));
    let tenant = dir.0.join("tenant");
    let out = gatehouse(
        &["whatif", "--tenant", tenant.to_str().unwrap(), "--cases", cases.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cases.jsonl:1: the line is longer than 256 KiB")
    );
}

#[test]
fn a_reader_that_goes_away_is_not_a_crash() {
    use std::io::Read;
    // More output than a pipe buffers (64 KiB), so the writer really meets a closed pipe.
    let dir = Scratch::new();
    let policies: Vec<Value> = (0..400)
        .map(|i| {
            let mut p: Value = serde_json::from_str(POLICY).unwrap();
            p["id"] = json!(format!("p{i}"));
            p["displayName"] = json!(format!("{i:03} {}", "x".repeat(200)));
            p
        })
        .collect();
    dir.write("tenant/policies.json", json!({"value": policies}).to_string());
    let request = dir.write("request.json", good_request().to_string());
    let tenant = dir.0.join("tenant");
    let (tenant, request) = (tenant.to_str().unwrap(), request.to_str().unwrap());
    for args in [
        vec!["whatif", "--tenant", tenant, "--request", request, "--format", "json"],
        vec!["whatif", "--tenant", tenant, "--request", request],
        vec!["policies", "check", "--tenant", tenant, "--format", "json"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte, then hang up, as `| head -c1` would.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 1];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.code().is_some_and(|c| c <= 1), "{args:?}: {:?} {stderr}", out.status);
    }
}

#[test]
fn links_fanning_out_to_the_same_folder_are_walked_once() {
    let dir = Scratch::new();
    dir.write("tenant/level0/p.json", POLICY);
    // Each level links four times to the next: a naive walk would visit 4^12 folders.
    for level in 0..12 {
        let here = dir.0.join(format!("tenant/level{level}"));
        let next = dir.0.join(format!("tenant/level{}", level + 1));
        std::fs::create_dir_all(&next).unwrap();
        for k in 0..4 {
            std::os::unix::fs::symlink(&next, here.join(format!("to{k}"))).unwrap();
        }
    }
    let tenant = dir.0.join("tenant");
    let out = gatehouse(
        &["policies", "check", "--tenant", tenant.to_str().unwrap(), "--format", "json"],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["policies"], 1);
}
