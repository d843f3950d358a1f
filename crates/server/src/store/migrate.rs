//! Migrations: numbered SQL files, one directory per backend with the same numbers, embedded in
//! the binary and applied at start-up in one transaction.

use sqlx::Row;

use super::{Backend, Result, Store, StoreError};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "session_tap",
        sqlite: include_str!("../../migrations/sqlite/0002_session_tap.sql"),
        postgres: include_str!("../../migrations/postgres/0002_session_tap.sql"),
    },
    Migration {
        version: 3,
        name: "lockout_count",
        sqlite: include_str!("../../migrations/sqlite/0003_lockout_count.sql"),
        postgres: include_str!("../../migrations/postgres/0003_lockout_count.sql"),
    },
    Migration {
        version: 4,
        name: "governance",
        sqlite: include_str!("../../migrations/sqlite/0004_governance.sql"),
        postgres: include_str!("../../migrations/postgres/0004_governance.sql"),
    },
    Migration {
        version: 5,
        name: "passkeys",
        sqlite: include_str!("../../migrations/sqlite/0005_passkeys.sql"),
        postgres: include_str!("../../migrations/postgres/0005_passkeys.sql"),
    },
];

pub async fn run(store: &Store) -> Result<()> {
    let mut w = store.begin().await?;
    if store.backend == Backend::Postgres {
        // Several nodes may start at once; one migrates, the others wait and find it done.
        sqlx::query("SELECT pg_advisory_xact_lock(7157001)").execute(&mut *w.tx).await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .execute(&mut *w.tx)
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *w.tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>("version"))
        .collect::<std::result::Result<_, _>>()?;
    if let Some(newest) = applied.last()
        && *newest > MIGRATIONS.last().map_or(0, |m| m.version)
    {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {newest}, newer than this binary knows; \
             upgrade Gatehouse"
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = match store.backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        sqlx::raw_sql(sql)
            .execute(&mut *w.tx)
            .await
            .map_err(|e| StoreError::Migration(format!("{:04}_{}: {e}", m.version, m.name)))?;
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *w.tx)
            .await?;
    }
    w.tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// The two dialects must create the same tables and indexes, migration by migration.
    #[test]
    fn both_dialects_define_the_same_objects() {
        let names = |sql: &str| -> Vec<String> {
            let mut v: Vec<String> = sql
                .split(';')
                .filter_map(|stmt| {
                    let words: Vec<&str> = stmt.split_whitespace().collect();
                    let at = words.iter().position(|w| {
                        w.eq_ignore_ascii_case("TABLE") || w.eq_ignore_ascii_case("INDEX")
                    })?;
                    words.get(at + 1).map(|n| n.to_ascii_lowercase())
                })
                .collect();
            v.sort();
            v
        };
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration versions must increase");
            last = m.version;
            assert_eq!(names(m.sqlite), names(m.postgres), "migration {}", m.version);
            assert!(!names(m.sqlite).is_empty());
        }
    }
}
