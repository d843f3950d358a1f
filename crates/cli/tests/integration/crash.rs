//! Killing the server (SIGKILL) in the middle of writes loses nothing it acknowledged: the
//! real binary, real writes over HTTP, on SQLite and on PostgreSQL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::server_support::TestDb;

fn gatehouse(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.args(args).env("GATEHOUSE_LOG", "warn").env_remove("GATEHOUSE_DATABASE_URL");
    cmd
}

fn bootstrap(url: &str) -> String {
    let out =
        gatehouse(&["admin", "bootstrap", "--upn", "admin@crash.test", "--database-url", url])
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts `gatehouse serve` on a free port and returns it with its base URL.
fn serve(url: &str) -> (Child, String) {
    let mut child = gatehouse(&["serve", "--listen", "127.0.0.1:0", "--database-url", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(rest) = line.strip_prefix("Gatehouse is listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

async fn kill_mid_write(db: &TestDb) {
    let token = bootstrap(&db.url);
    let (mut child, base) = serve(&db.url);
    let http = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, token, acked, stop) =
            (http.clone(), base.clone(), token.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let body = json!({"displayName": format!("crash-{w}-{n}"), "mailEnabled": false,
                                  "mailNickname": format!("crash{w}x{n}"), "securityEnabled": true});
                let sent = http.post(format!("{base}/v1.0/groups")).bearer_auth(&token).json(&body).send().await;
                // Only a complete 201 with its body is an acknowledgement.
                let Ok(resp) = sent else { break };
                if resp.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(v) = resp.json::<Value>().await else { break };
                if let Some(id) = v["id"].as_str() {
                    acked.lock().await.push(id.to_owned());
                }
            }
        }));
    }
    // Kill once a good number of writes are acknowledged, with more in flight.
    loop {
        if acked.lock().await.len() >= 40 {
            break;
        }
        tokio::task::yield_now().await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();

    let (mut child, base) = serve(&db.url);
    for id in &acked {
        let resp =
            http.get(format!("{base}/v1.0/groups/{id}")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}: acknowledged group {id} was lost",
            db.label()
        );
    }
    let audits: Value = http
        .get(format!("{base}/v1.0/auditLogs/directoryAudits?$top=999"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let audited = audits["value"].as_array().map_or(0, Vec::len);
    assert!(audited > acked.len(), "{}: every acknowledged write has its audit record", db.label());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_loses_nothing_acknowledged() {
    for db in TestDb::each("sigkill_mid_write_loses_nothing_acknowledged").await {
        kill_mid_write(&db).await;
    }
}
