//! Microsoft's Python Graph SDK against a running Gatehouse (`tests/python/graph_sdk_smoke.py`).
//! `.ci/run` provides the interpreter with msgraph-sdk in `GATEHOUSE_TEST_PYTHON`.

use reqwest::Method;
use serde_json::json;

use crate::server_support::{TestDb, TestServer};

#[tokio::test]
async fn the_python_graph_sdk_works_against_gatehouse() {
    let Ok(python) = std::env::var("GATEHOUSE_TEST_PYTHON") else {
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"skipped the_python_graph_sdk_works_against_gatehouse: GATEHOUSE_TEST_PYTHON is not set (source scripts/test-env.sh)\n",
        );
        return;
    };
    for db in TestDb::each("the_python_graph_sdk_works_against_gatehouse").await {
        let server = TestServer::start(&db).await;
        // One sign-in, so the log the SDK lists is not empty.
        let (_, flow) = server
            .call(
                Method::POST,
                "/signin/begin",
                None,
                Some(&json!({
                    "username": "megan@contoso.example",
                    "target": {"appId": "00000003-0000-0ff1-ce00-000000000000"}
                })),
            )
            .await;
        let path = format!("/signin/{}/password", flow["flowId"].as_str().unwrap());
        let body =
            json!({"flowToken": flow["flowToken"], "password": gatehouse_server::demo::PASSWORD});
        server.call(Method::POST, &path, None, Some(&body)).await;

        let script = crate::support::repo_root().join("tests/python/graph_sdk_smoke.py");
        let out = tokio::process::Command::new(&python)
            .arg(&script)
            .env("GATEHOUSE_BASE_URL", format!("{}/v1.0", server.base))
            .env("GATEHOUSE_TOKEN", &server.admin_token)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: the SDK script failed\n{stdout}\n{stderr}", db.label());
        assert!(stdout.contains("all checks passed"), "{stdout}");
        server.stop().await;
    }
}
