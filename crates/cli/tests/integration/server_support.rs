//! Running Gatehouse servers in tests: a fresh database per test (a temporary SQLite file, or a
//! randomly named PostgreSQL database dropped afterwards), the demo tenant, a manual clock.

use std::sync::Arc;

use gatehouse_server::clock::ManualClock;
use gatehouse_server::geo::Geo;
use gatehouse_server::serve::{Running, start};
use gatehouse_server::store::Store;
use gatehouse_server::{Config, demo};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;

/// 2025-12-01T09:00:00Z: a Monday morning in London.
pub const T0: i64 = 1_764_579_600_000;

pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.path().join("gatehouse.db").display());
        TestDb { url, _dir: Some(dir), pg: None }
    }

    /// A new database on the server `GATEHOUSE_TEST_DATABASE_URL` names, or `None` (with a note).
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let Ok(admin) = std::env::var("GATEHOUSE_TEST_DATABASE_URL") else {
            use std::io::Write;
            let note =
                format!("skipped {test} on PostgreSQL: GATEHOUSE_TEST_DATABASE_URL is not set\n");
            let _ = std::io::stderr().write_all(note.as_bytes());
            return None;
        };
        let name = format!("gh_test_{}", gatehouse_server::random::guid().replace('-', ""));
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        Some(TestDb { url: format!("{base}/{name}"), _dir: None, pg: Some((admin, name)) })
    }

    /// SQLite always; PostgreSQL too when the environment names a server.
    pub async fn each(test: &str) -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite()];
        dbs.extend(TestDb::postgres(test).await);
        dbs
    }

    pub fn backend(&self) -> Backend {
        if self.pg.is_some() { Backend::Postgres } else { Backend::Sqlite }
    }

    pub fn label(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside any runtime guarantee: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub clock: ManualClock,
    /// Nestor's API token (Global Administrator in the demo tenant).
    pub admin_token: String,
    pub running: Running,
    pub http: reqwest::Client,
}

pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        // Mail a test does not catch goes to files: under target/, never into the source tree.
        data_dir: std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data"),
        ..Config::default()
    }
}

impl TestServer {
    /// A server on `db` holding the demo tenant (seeded only if the store is empty).
    pub async fn start(db: &TestDb) -> TestServer {
        TestServer::start_with(db, config(), ManualClock::at(T0)).await
    }

    pub async fn start_with(db: &TestDb, mut config: Config, clock: ManualClock) -> TestServer {
        config.database_url = Some(db.url.clone());
        let store = Store::open(&db.url).await.unwrap();
        let seeded = demo::seed(&store, clock_now(&clock)).await.unwrap();
        let admin_token = match seeded {
            Some(s) => s.admin_token,
            None => {
                gatehouse_server::admin::bootstrap(
                    &store,
                    "nestor@contoso.example",
                    clock_now(&clock),
                )
                .await
                .unwrap()
                .token
            }
        };
        let geo = Geo::from_bytes(demo::GEOIP.to_vec()).unwrap();
        let running = start(store, config, Arc::new(clock.clone()), Some(geo)).await.unwrap();
        let base = format!("http://{}", running.addr);
        TestServer { base, clock, admin_token, running, http: reqwest::Client::new() }
    }

    /// A request as `token` (None: anonymous); returns the status and the JSON body (Null if
    /// the body is empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let url =
            if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// As the demo's Global Administrator.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.admin_token.clone()), body).await
    }

    /// Stops this server (gracefully: requests in flight finish) and starts another on the same
    /// database and clock, as a restart does: nothing is seeded, and the tokens issued before
    /// (the admin's included) are the ones that still count.
    pub async fn restart(self, db: &TestDb) -> TestServer {
        let TestServer { clock, admin_token, running, http, .. } = self;
        running.shutdown().await.unwrap();
        let mut config = config();
        config.database_url = Some(db.url.clone());
        let store = Store::open(&db.url).await.unwrap();
        let geo = Geo::from_bytes(demo::GEOIP.to_vec()).unwrap();
        let running = start(store, config, Arc::new(clock.clone()), Some(geo)).await.unwrap();
        let base = format!("http://{}", running.addr);
        TestServer { base, clock, admin_token, running, http }
    }

    /// The server's (manual) clock reading.
    pub fn clock_now(&self) -> i64 {
        clock_now(&self.clock)
    }

    pub async fn stop(self) {
        self.running.shutdown().await.unwrap();
    }
}

fn clock_now(c: &ManualClock) -> i64 {
    use gatehouse_server::clock::Clock;
    c.now()
}
