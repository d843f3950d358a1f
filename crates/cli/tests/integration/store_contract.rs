//! The storage contract: one suite, run on SQLite always and on PostgreSQL when
//! `GATEHOUSE_TEST_DATABASE_URL` names a server. Every backend must behave the same.

use gatehouse_core::{Change, Directory};
use gatehouse_server::store::{AuditRecord, AuditTarget, Store};
use serde_json::{Map, Value, json};

use crate::server_support::{T0, TestDb};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn user(id: &str) -> Change {
    Change::PutUser {
        user: obj(
            json!({"id": id, "userPrincipalName": format!("{id}@x.test"), "displayName": id}),
        ),
        manager: None,
    }
}

fn group(id: &str) -> Change {
    Change::PutGroup { group: obj(json!({"id": id, "displayName": id})) }
}

fn audit(activity: &str) -> AuditRecord {
    AuditRecord {
        id: gatehouse_server::random::guid(),
        category: "Other",
        activity: activity.into(),
        result: "success",
        result_reason: String::new(),
        initiated_by: None,
        targets: vec![AuditTarget { kind: "Other", id: "t".into(), display_name: None }],
        correlation_id: gatehouse_server::random::guid(),
        modified: Vec::new(),
    }
}

async fn count(store: &Store, table: &'static str) -> i64 {
    use sqlx::Row;
    let sql = match table {
        "audit_logs" => "SELECT COUNT(*) AS n FROM audit_logs",
        "changes" => "SELECT COUNT(*) AS n FROM changes",
        "users" => "SELECT COUNT(*) AS n FROM users",
        "members" => "SELECT COUNT(*) AS n FROM members",
        _ => unreachable!(),
    };
    sqlx::query(sql).fetch_one(store.pool()).await.unwrap().try_get::<i64, _>("n").unwrap()
}

/// What the store says the directory is, as the in-memory directory would hold it.
async fn reloaded(store: &Store) -> Directory {
    let rows = store.load_directory().await.unwrap();
    let mut d = Directory::new();
    d.replace_all(rows.tenant, rows.devices, rows.auth_methods_policy);
    d
}

fn summary(d: &Directory) -> Vec<String> {
    let mut out: Vec<String> =
        d.users().map(|u| format!("user {} {}", u.id, u.display_name)).collect();
    for g in d.groups() {
        let mut m = g.members.clone();
        m.sort();
        out.push(format!("group {} {:?}", g.id, m));
    }
    out.extend(
        d.role_assignments().map(|a| format!("role {} {}", a.principal_id, a.role_template_id)),
    );
    out.extend(d.policies().map(|p| format!("policy {} {:?}", p.id, p.state)));
    out
}

#[tokio::test]
async fn migrations_apply_once_and_reopen_cleanly() {
    for db in TestDb::each("migrations_apply_once_and_reopen_cleanly").await {
        let a = Store::open(&db.url).await.unwrap();
        let b = Store::open(&db.url).await.unwrap();
        assert_eq!(a.version().await.unwrap(), 0, "{}", db.label());
        assert_eq!(b.version().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_commit_writes_state_change_log_and_audit_together() {
    for db in TestDb::each("a_commit_writes_state_change_log_and_audit_together").await {
        let store = Store::open(&db.url).await.unwrap();
        let changes = vec![
            user("u1"),
            group("g1"),
            Change::AddMember { group: "g1".into(), member: "u1".into() },
        ];
        let w = store.begin().await.unwrap();
        let v = w.commit(T0, &changes, &[audit("Add user")]).await.unwrap();
        assert_eq!(v, 1, "{}", db.label());
        assert_eq!(count(&store, "users").await, 1);
        assert_eq!(count(&store, "members").await, 1);
        assert_eq!(count(&store, "audit_logs").await, 1);
        let log = store.changes_since(0).await.unwrap();
        assert_eq!(log, vec![(1, changes.clone())]);

        // The directory replayed from the log equals the directory read from the tables.
        let mut replayed = Directory::new();
        replayed.apply_all(&changes);
        assert_eq!(summary(&replayed), summary(&reloaded(&store).await), "{}", db.label());
    }
}

#[tokio::test]
async fn an_abandoned_write_leaves_nothing() {
    for db in TestDb::each("an_abandoned_write_leaves_nothing").await {
        let store = Store::open(&db.url).await.unwrap();
        {
            let mut w = store.begin().await.unwrap();
            w.set_password("u1", "$argon2id$x", T0).await.unwrap();
            // dropped without commit
        }
        assert_eq!(store.password_of("u1").await.unwrap(), None, "{}", db.label());
        // A failing statement inside commit rolls back the rows written before it.
        store.begin().await.unwrap().commit(T0, &[user("u1")], &[]).await.unwrap();
        let dup = AuditRecord { id: "same".into(), ..audit("x") };
        let err = store
            .begin()
            .await
            .unwrap()
            .commit(T0, &[user("u2")], &[dup.clone(), dup])
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{}: {err}", db.label());
        assert_eq!(count(&store, "users").await, 1, "{}", db.label());
        assert_eq!(store.version().await.unwrap(), 1);
        assert_eq!(count(&store, "changes").await, 1);
    }
}

#[tokio::test]
async fn concurrent_writers_get_gapless_versions_in_commit_order() {
    for db in TestDb::each("concurrent_writers_get_gapless_versions_in_commit_order").await {
        let store = Store::open(&db.url).await.unwrap();
        store.begin().await.unwrap().commit(T0, &[group("g")], &[]).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("u{i:02}");
                let w = store.begin().await.unwrap();
                w.commit(
                    T0,
                    &[user(&id), Change::AddMember { group: "g".into(), member: id.clone() }],
                    &[],
                )
                .await
                .unwrap()
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap());
        }
        versions.sort();
        assert_eq!(versions, (2..=25).collect::<Vec<i64>>(), "{}", db.label());
        let log = store.changes_since(1).await.unwrap();
        assert_eq!(log.iter().map(|(v, _)| *v).collect::<Vec<_>>(), (2..=25).collect::<Vec<_>>());
        let mut replayed = Directory::new();
        replayed.apply(&group("g")).unwrap();
        for (_, changes) in &log {
            let (_, errors) = replayed.apply_all(changes);
            assert!(errors.is_empty());
        }
        assert_eq!(summary(&replayed), summary(&reloaded(&store).await), "{}", db.label());
        assert_eq!(replayed.members("g").len(), 24);
    }
}

#[tokio::test]
async fn deletes_cascade_the_same_way_in_memory_and_in_the_tables() {
    for db in TestDb::each("deletes_cascade_the_same_way_in_memory_and_in_the_tables").await {
        let store = Store::open(&db.url).await.unwrap();
        let setup = vec![
            user("u1"),
            user("u2"),
            Change::PutUser {
                user: obj(
                    json!({"id": "u3", "userPrincipalName": "u3@x.test", "displayName": "u3"}),
                ),
                manager: Some("u1".into()),
            },
            group("g1"),
            group("g2"),
            Change::AddMember { group: "g1".into(), member: "u1".into() },
            Change::AddMember { group: "g1".into(), member: "g2".into() },
            Change::AddMember { group: "g2".into(), member: "u2".into() },
            Change::PutRoleAssignment {
                assignment: obj(json!({"id": "ra1", "principalId": "g2",
                    "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10", "directoryScopeId": "/"})),
            },
        ];
        let teardown =
            vec![Change::DeleteUser { id: "u1".into() }, Change::DeleteGroup { id: "g2".into() }];
        let mut memory = Directory::new();
        for batch in [&setup, &teardown] {
            store.begin().await.unwrap().commit(T0, batch, &[]).await.unwrap();
            let (_, errors) = memory.apply_all(batch.iter());
            assert!(errors.is_empty());
        }
        let stored = reloaded(&store).await;
        assert_eq!(summary(&memory), summary(&stored), "{}", db.label());
        assert!(stored.members("g1").is_empty());
        assert!(stored.role_assignments().next().is_none());
        assert_eq!(stored.user("u3").unwrap().manager, None, "{}", db.label());
    }
}

#[tokio::test]
async fn import_is_one_transaction_and_idempotent() {
    for db in TestDb::each("import_is_one_transaction_and_idempotent").await {
        let store = Store::open(&db.url).await.unwrap();
        let files = gatehouse_server::demo::tenant_files();
        let first = gatehouse_server::import::import(&store, &files, T0, None).await.unwrap();
        let before = summary(&reloaded(&store).await);
        let again = gatehouse_server::import::import(&store, &files, T0, None).await.unwrap();
        assert_eq!(first.users, again.users);
        assert_eq!(summary(&reloaded(&store).await), before, "{}", db.label());
        assert_eq!(first.policies, 16);
        // The log holds one Reload per import, not every object.
        let log = store.changes_since(0).await.unwrap();
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|(_, c)| c == &vec![Change::Reload]));

        // A broken export is refused whole.
        let mut broken = files.clone();
        broken.push(gatehouse_policy::SourceFile {
            name: "bad.json".into(),
            bytes: b"{\"@odata.type\":\"#microsoft.graph.group\"}".to_vec(),
        });
        assert!(gatehouse_server::import::import(&store, &broken, T0, None).await.is_err());
        assert_eq!(store.version().await.unwrap(), 2, "{}", db.label());
    }
}

#[tokio::test]
async fn concurrent_starts_migrate_once_on_postgres() {
    let Some(db) = TestDb::postgres("concurrent_starts_migrate_once_on_postgres").await else {
        return;
    };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
}

/// Waits until `n` sessions of this database wait for a lock.
async fn lock_waiters(store: &Store, n: i64) {
    use sqlx::Row;
    for _ in 0..1000 {
        let waiting: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{n} writers never waited for the version lock");
}

/// PostgreSQL writers wait for the version lock before they write their rows, so the tables
/// change in the order of the log. Were the rows written first, a remove whose DELETE ran while
/// an add's INSERT was uncommitted would miss the row yet commit after the add: the log (and
/// every node's memory) would end without the member, the tables (and the next start) with it.
#[tokio::test]
async fn rows_change_in_the_order_of_the_log_on_postgres() {
    let Some(db) = TestDb::postgres("rows_change_in_the_order_of_the_log_on_postgres").await else {
        return;
    };
    let store = Store::open(&db.url).await.unwrap();
    store.begin().await.unwrap().commit(T0, &[user("u"), group("g")], &[]).await.unwrap();
    // A commit in progress holds the version lock while the add and then the remove start.
    let mut holder = store.begin().await.unwrap();
    sqlx::query("UPDATE store_version SET version = version WHERE id = 1")
        .execute(&mut *holder.tx)
        .await
        .unwrap();
    let mut writers = Vec::new();
    for (n, change) in [
        (1, Change::AddMember { group: "g".into(), member: "u".into() }),
        (2, Change::RemoveMember { group: "g".into(), member: "u".into() }),
    ] {
        let s = store.clone();
        writers.push(tokio::spawn(async move {
            s.begin().await.unwrap().commit(T0, &[change], &[]).await.unwrap()
        }));
        lock_waiters(&store, n).await;
    }
    holder.tx.rollback().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let mut replayed = Directory::new();
    for (_, changes) in store.changes_since(0).await.unwrap() {
        let (_, errors) = replayed.apply_all(&changes);
        assert!(errors.is_empty(), "{errors:?}");
    }
    assert_eq!(summary(&replayed), summary(&reloaded(&store).await));
}
