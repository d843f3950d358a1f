//! Every public policy set in `../shared/corpus/ca-policies` loads, round-trips losslessly, and
//! decides as the semantics say.

use std::path::{Path, PathBuf};

use gatehouse_policy::tenant::export;
use gatehouse_policy::{SignInRequest, Snapshot, SourceFile, Tri, json};
use serde_json::{Value, json};

use crate::support::{gatehouse, load, shared, sources};

/// Each set (caOptics: each file on its own, as it holds one small tenant per file) with the
/// number of policies and named locations it must load.
fn sets(corpus: &Path) -> Vec<(PathBuf, usize, usize)> {
    let mut out = vec![
        (corpus.join("AlexFilipin__ConditionalAccess"), 59, 0),
        (corpus.join("Clutch2View__nis2-conditional-access-policies"), 22, 5),
        (corpus.join("goodworkaround__conditional-access-starter-pack"), 9, 0),
        (corpus.join("j0eyv__ConditionalAccessBaseline"), 36, 3),
    ];
    let ca = corpus.join("jsa2__caOptics/demodata");
    for (file, policies, locations) in [
        ("example1-2.json", 2, 0),
        ("extreme.json", 6, 0),
        ("extremelyNarrow.json", 6, 0),
        ("extremelyNarrow2.json", 6, 0),
        ("largePol.json", 7, 0),
        ("lotOfGroups.json", 2, 0),
        ("multipleGuestTypes.json", 4, 0),
        ("namedLocations.json", 0, 3),
        ("policies.json", 3, 0),
        ("policies2.json", 3, 0),
        ("testMapping.json", 9, 0),
        ("wLa.json", 7, 0),
        ("withOnePerm.json", 2, 0),
    ] {
        out.push((ca.join(file), policies, locations));
    }
    out
}

#[test]
fn every_corpus_set_loads_with_every_policy_counted() {
    let Some(shared) = shared("every_corpus_set_loads_with_every_policy_counted") else {
        return;
    };
    let corpus = shared.join("corpus/ca-policies");
    let mut total = 0;
    for (path, policies, locations) in sets(&corpus) {
        let loaded = load(&path);
        assert_eq!(loaded.tenant.policies.len(), policies, "{}", path.display());
        assert_eq!(loaded.tenant.named_locations.len(), locations, "{}", path.display());
        total += policies;

        // The binary agrees: no errors, the same counts.
        let out = gatehouse(
            &["policies", "check", "--tenant", path.to_str().unwrap(), "--format", "json"],
            None,
        );
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["policies"], policies);
        assert_eq!(report["namedLocations"], locations);
        assert_eq!(report["errors"].as_array().map(Vec::len), Some(0));
    }
    assert_eq!(total, 59 + 22 + 9 + 36 + 57);
}

#[test]
fn the_json_round_trip_is_lossless() {
    let Some(shared) = shared("the_json_round_trip_is_lossless") else {
        return;
    };
    for (path, _, _) in sets(&shared.join("corpus/ca-policies")) {
        let original = sources(&path);
        let first = load(&path).tenant;
        let exported: Vec<SourceFile> = export(&first)
            .into_iter()
            .map(|(name, v)| SourceFile { name, bytes: serde_json::to_vec_pretty(&v).unwrap() })
            .collect();
        let second = gatehouse_policy::load(&exported).unwrap().tenant;
        assert_eq!(first.policies, second.policies, "{}", path.display());
        assert_eq!(first.named_locations, second.named_locations, "{}", path.display());

        // Every key of every original object survives, value for value; only a missing `id`
        // is added.
        let mut originals: Vec<Value> = Vec::new();
        for file in &original {
            let doc = json::parse(&json::decode_text(&file.bytes).unwrap()).unwrap();
            match doc {
                Value::Array(items) => originals.extend(items),
                Value::Object(ref m) if m.get("value").is_some_and(Value::is_array) => {
                    originals.extend(m["value"].as_array().unwrap().iter().cloned())
                }
                other => originals.push(other),
            }
        }
        let mut exported_objects: Vec<&serde_json::Map<String, Value>> = second
            .policies
            .iter()
            .map(|p| &p.raw)
            .chain(second.named_locations.iter().map(|l| &l.raw))
            .collect();
        assert_eq!(originals.len(), exported_objects.len(), "{}", path.display());
        let same = |o: &serde_json::Map<String, Value>, e: &serde_json::Map<String, Value>| {
            o.iter().all(|(k, v)| e.get(k) == Some(v))
                && e.keys().all(|k| o.contains_key(k) || k == "id")
        };
        for o in &originals {
            let o = o.as_object().unwrap();
            let at = exported_objects.iter().position(|e| same(o, e));
            let at = at.unwrap_or_else(|| {
                panic!("{}: {:?} did not survive", path.display(), o.get("displayName"))
            });
            exported_objects.swap_remove(at);
        }
    }
}

fn request(user: &str, app: &str, client: &str) -> SignInRequest {
    SignInRequest::from_json(&json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [app]},
        "signInConditions": {"devicePlatform": "windows", "clientAppType": client, "country": "FI",
            "ipAddress": "198.51.100.7", "signInRiskLevel": "none", "userRiskLevel": "none",
            "insiderRiskLevel": "none", "servicePrincipalRiskLevel": "none", "deviceInfo": {}}
    }))
    .unwrap()
}

fn applies(snapshot: &Snapshot, r: &SignInRequest, name_prefix: &str) -> Tri {
    let e = snapshot.evaluate(r);
    let (_, a) = e
        .policies()
        .find(|(p, _)| p.display_name.starts_with(name_prefix))
        .unwrap_or_else(|| panic!("no policy named {name_prefix}…"));
    a.applies
}

const SOMEONE: &str = "5e000000-0000-4000-8000-000000000001";
const SHAREPOINT: &str = "00000003-0000-0ff1-ce00-000000000000";
const OTHER_APP: &str = "12345678-0000-4000-8000-000000000000";

#[test]
fn corpus_policies_decide_as_the_semantics_say() {
    let Some(shared) = shared("corpus_policies_decide_as_the_semantics_say") else {
        return;
    };
    let corpus = shared.join("corpus/ca-policies");

    // A legacy-authentication block (exported from a real tenant, UTF-16 originally).
    let j0eyv = Snapshot::compile(&load(&corpus.join("j0eyv__ConditionalAccessBaseline")).tenant);
    assert_eq!(
        applies(&j0eyv, &request(SOMEONE, SHAREPOINT, "exchangeActiveSync"), "CA002"),
        Tri::Yes
    );
    assert_eq!(applies(&j0eyv, &request(SOMEONE, SHAREPOINT, "browser"), "CA002"), Tri::No);

    // caOptics: the Office365 suite, and excluding the legacy "all guests" value.
    let wla = Snapshot::compile(&load(&corpus.join("jsa2__caOptics/demodata/wLa.json")).tenant);
    assert_eq!(
        applies(&wla, &request(SOMEONE, SHAREPOINT, "browser"), "Handle Office 365"),
        Tri::Yes
    );
    assert_eq!(
        applies(&wla, &request(SOMEONE, OTHER_APP, "browser"), "Handle Office 365"),
        Tri::No
    );
    assert_eq!(applies(&wla, &request(SOMEONE, OTHER_APP, "other"), "CA003"), Tri::Yes);
    assert_eq!(applies(&wla, &request(SOMEONE, OTHER_APP, "other"), "CA005"), Tri::No);

    // A user-action policy hits the action, never an app sign-in.
    let gwa = Snapshot::compile(
        &load(&corpus.join("goodworkaround__conditional-access-starter-pack")).tenant,
    );
    let action = SignInRequest::from_json(&json!({
        "signInIdentity": {"userId": SOMEONE},
        "signInContext": {"@odata.type": "#microsoft.graph.userActionContext", "userAction": "registerSecurityInformation"},
        "signInConditions": {"clientAppType": "browser"}
    }))
    .unwrap();
    assert_eq!(applies(&gwa, &action, "User action - Block register security info"), Tri::Yes);
    assert_eq!(
        applies(
            &gwa,
            &request(SOMEONE, SHAREPOINT, "browser"),
            "User action - Block register security info"
        ),
        Tri::No
    );

    // Templates with `clientAppTypes: ["All"]` (capital A) mean every client.
    let alex = Snapshot::compile(&load(&corpus.join("AlexFilipin__ConditionalAccess")).tenant);
    let e = alex.evaluate(&request(SOMEONE, SHAREPOINT, "browser"));
    assert_eq!(e.results.len(), 59);
}

#[test]
fn what_if_runs_on_every_corpus_set() {
    let Some(shared) = shared("what_if_runs_on_every_corpus_set") else {
        return;
    };
    let scratch = crate::support::Scratch::new();
    let req = scratch.write(
        "req.json",
        serde_json::to_vec(&json!({
            "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": SOMEONE},
            "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [SHAREPOINT]},
            "signInConditions": {"devicePlatform": "iOS", "clientAppType": "mobileAppsAndDesktopClients", "country": "US"}
        }))
        .unwrap(),
    );
    for (path, policies, _) in sets(&shared.join("corpus/ca-policies")) {
        let out = gatehouse(
            &[
                "whatif",
                "--tenant",
                path.to_str().unwrap(),
                "--request",
                req.to_str().unwrap(),
                "--format",
                "json",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let results = v["value"].as_array().unwrap();
        assert_eq!(results.len(), policies, "{}", path.display());
        for r in results {
            assert!(r["policyApplies"].is_boolean());
            assert!(r["analysisReasons"].is_string());
            assert!(r["id"].is_string() && r["displayName"].is_string());
        }
        // The unknown user is called out on stderr.
        if policies > 0 {
            assert!(String::from_utf8_lossy(&out.stderr).contains("not in the tenant export"));
        }
        let text = gatehouse(
            &["whatif", "--tenant", path.to_str().unwrap(), "--request", req.to_str().unwrap()],
            None,
        );
        assert!(text.status.success());
        assert!(String::from_utf8_lossy(&text.stdout).contains("Outcome:"));
    }
}
