//! Fuzzes the tenant loader: bytes -> `load` -> `Snapshot::compile` -> evaluate one fixed sign-in.
//!
//! The input is one or more documents separated by the line `--8<--` (the seeds from
//! `seed.sh` join a whole tenant export this way, so policies meet users, groups and named
//! locations). Each document is handed to the loader as its own `SourceFile`, bytes untouched
//! (UTF-16, BOMs and invalid UTF-8 all reach the decoder).
#![no_main]

use std::sync::OnceLock;

use gatehouse_policy::json;
use gatehouse_policy::{AuthState, SignInRequest, Snapshot, SourceFile, load};
use libfuzzer_sys::fuzz_target;

/// Separates documents in one fuzz input.
const SEPARATOR: &[u8] = b"\n--8<--\n";
/// More files than this add nothing the fuzzer cannot reach with fewer.
const MAX_FILES: usize = 16;

/// A sign-in that touches every condition: a user of the travel scenario, Office 365 Exchange,
/// a Windows browser in France on a registered but non-compliant device, with risk and a
/// device-code transfer.
const REQUEST: &str = r##"{
  "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": "a0000000-0000-4000-8000-000000000001"},
  "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": ["00000002-0000-0ff1-ce00-000000000000"]},
  "signInConditions": {
    "devicePlatform": "windows", "clientAppType": "browser", "country": "FR", "ipAddress": "203.0.113.7",
    "signInRiskLevel": "medium", "userRiskLevel": "low", "servicePrincipalRiskLevel": "none", "insiderRiskLevel": "minor",
    "authenticationFlow": {"transferMethod": "deviceCodeFlow"},
    "deviceInfo": {
      "deviceId": "AAAAAAAA-0000-1111-2222-BBBBBBBBBBBB", "displayName": "CONTOSO-Laptop-042",
      "operatingSystem": "Windows", "operatingSystemVersion": "10.0.22631", "manufacturer": "Microsoft Corporation",
      "model": "Surface Laptop 5", "enrollmentProfileName": "Autopilot Corp", "extensionAttribute1": "SAW",
      "deviceOwnership": "Company", "isCompliant": false, "trustType": "AzureAD", "profileType": "RegisteredDevice",
      "mdmAppId": "0000000a-0000-0000-c000-000000000000", "physicalIds": ["[ZTDId]:abc"], "systemLabels": []
    }
  },
  "appliedPoliciesOnly": false
}"##;

fn request() -> &'static SignInRequest {
    static REQ: OnceLock<SignInRequest> = OnceLock::new();
    REQ.get_or_init(|| {
        let value = json::parse(REQUEST).unwrap_or_else(|e| panic!("fixture request: {e}"));
        SignInRequest::from_json(&value)
            .unwrap_or_else(|e| panic!("fixture request: {}: {}", e.path, e.message))
    })
}

fn split(data: &[u8]) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut rest = data;
    while files.len() + 1 < MAX_FILES {
        let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) else {
            break;
        };
        let (head, tail) = rest.split_at(at);
        files.push(head);
        rest = &tail[SEPARATOR.len()..];
    }
    files.push(rest);
    files
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| SourceFile { name: format!("fuzz/{i}.json"), bytes: bytes.to_vec() })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let files = split(data);
    // Rendering every diagnostic exercises their Display (paths, labels, messages).
    let loaded = match load(&files) {
        Ok(loaded) => loaded,
        Err(e) => {
            for d in e.errors.iter().chain(&e.warnings) {
                let _ = d.to_string();
            }
            return;
        }
    };
    for w in &loaded.warnings {
        let _ = w.to_string();
    }
    let snapshot = Snapshot::compile(&loaded.tenant);
    let evaluation = snapshot.evaluate(request());
    let _ = evaluation.decide(&AuthState::default());
    let _ = evaluation.to_graph_json();
});
