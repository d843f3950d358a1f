//! The store: one port over SQLite (the embedded default) and PostgreSQL (for several nodes),
//! with one SQL code path (sqlx's `Any` driver, `$n` placeholders, portable types).
//!
//! Every state change goes through [`Store::begin`] and [`Write::commit`]: the transaction
//! writes the new rows, the change log entry other nodes replay, and the audit records, or
//! nothing at all.

mod audit;
mod bulk;
mod credentials;
pub mod governance;
mod logs;
mod methods;
mod migrate;
mod signin;
mod tables;

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Change;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use audit::{AuditRecord, AuditTarget};
pub use credentials::TotpRow;
pub use logs::{LogCursor, LogKind, LogPage};
pub use methods::TapRow;
pub use signin::{FlowRow, SignInLogRow};
pub use tables::DirectoryRows;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database url (use sqlite:PATH or postgres://…): {0}")]
    Url(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// A stable code for logs and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Database(_) => "GH-STORE-001",
            StoreError::Corrupt(_) => "GH-STORE-002",
            StoreError::Url(_) => "GH-STORE-003",
            StoreError::Migration(_) => "GH-STORE-004",
        }
    }

    /// A unique or primary key was violated: the caller raced another writer or repeated itself.
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer; taking it in-process first avoids lock upgrades that fail with
    /// "database is locked" instead of waiting. On PostgreSQL it orders this node's serialized
    /// writes (`begin_serialized`), so they wait here rather than each holding a connection.
    writer: Arc<Mutex<()>>,
    url: String,
}

/// An open write transaction. Dropping it without `commit` rolls everything back.
pub struct Write {
    pub tx: Transaction<'static, Any>,
    _writer: Option<OwnedMutexGuard<()>>,
    backend: Backend,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(redact(url)));
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; FULL: an acknowledged commit
                        // survives power loss, not only a process crash.
                        sqlx::raw_sql(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                             PRAGMA busy_timeout=30000; PRAGMA foreign_keys=ON;",
                        )
                        .execute(conn)
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(url).await?;
        let store = Store { pool, backend, writer: Arc::new(Mutex::new(())), url: url.to_owned() };
        migrate::run(&store).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The URL this store was opened with (for a LISTEN connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn begin(&self) -> Result<Write> {
        let guard = match self.backend {
            Backend::Sqlite => Some(self.writer.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        let tx = self.pool.begin().await?;
        Ok(Write { tx, _writer: guard, backend: self.backend })
    }

    /// A write that validates against the directory, so must see every directory change
    /// committed before it and keep others from committing until it ends: on PostgreSQL it
    /// takes the store version's row lock first (every write with changes takes it to commit),
    /// on SQLite the single writer already excludes every other write. The caller brings its
    /// memory up to date after this (`AppState::begin_write`).
    pub async fn begin_serialized(&self) -> Result<Write> {
        if self.backend == Backend::Sqlite {
            return self.begin().await;
        }
        let guard = self.writer.clone().lock_owned().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE store_version SET version = version WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(Write { tx, _writer: Some(guard), backend: self.backend })
    }

    /// The version of the last committed change.
    pub async fn version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM store_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("version")?)
    }

    /// The change log after `version`, in order.
    pub async fn changes_since(&self, version: i64) -> Result<Vec<(i64, Vec<Change>)>> {
        let rows =
            sqlx::query("SELECT version, body FROM changes WHERE version > $1 ORDER BY version")
                .bind(version)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let v: i64 = r.try_get("version")?;
                let body: String = r.try_get("body")?;
                let changes = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("change {v}: {e}")))?;
                Ok((v, changes))
            })
            .collect()
    }

    /// Forgets change-log entries older than `before_ms` (every node has long applied them).
    pub async fn prune_changes(&self, before_ms: i64) -> Result<u64> {
        let mut w = self.begin().await?;
        let done = sqlx::query("DELETE FROM changes WHERE at < $1 AND version < (SELECT version FROM store_version WHERE id = 1)")
            .bind(before_ms)
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(done.rows_affected())
    }
}

impl Write {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Writes the directory rows for `changes`, logs them for the other nodes, records the
    /// audit entries, and commits. Returns the new version (unchanged if there were no changes).
    pub async fn commit(self, now: i64, changes: &[Change], audits: &[AuditRecord]) -> Result<i64> {
        self.commit_logged(now, changes, changes, audits).await
    }

    /// As `commit`, but logs `log` instead of `changes` (an import logs one `Reload`).
    pub async fn commit_logged(
        mut self,
        now: i64,
        changes: &[Change],
        log: &[Change],
        audits: &[AuditRecord],
    ) -> Result<i64> {
        let version = if log.is_empty() {
            let row = sqlx::query("SELECT version FROM store_version WHERE id = 1")
                .fetch_one(&mut *self.tx)
                .await?;
            row.try_get::<i64, _>("version")?
        } else {
            // The row lock taken here is held until commit, so versions commit in order; it is
            // taken before the rows are written, so the rows change in that order too (written
            // first, a delete could miss a row a concurrent insert had not committed yet, while
            // the log applies the insert first: the tables and every node's memory would part).
            let row = sqlx::query(
                "UPDATE store_version SET version = version + 1 WHERE id = 1 RETURNING version",
            )
            .fetch_one(&mut *self.tx)
            .await?;
            row.try_get::<i64, _>("version")?
        };
        for c in changes {
            tables::persist(&mut self.tx, c).await?;
        }
        for a in audits {
            audit::insert(&mut self.tx, now, a).await?;
        }
        if !log.is_empty() {
            let body = serde_json::to_string(log)
                .map_err(|e| StoreError::Corrupt(format!("change log: {e}")))?;
            sqlx::query("INSERT INTO changes (version, at, body) VALUES ($1, $2, $3)")
                .bind(version)
                .bind(now)
                .bind(body)
                .execute(&mut *self.tx)
                .await?;
            if self.backend == Backend::Postgres {
                // Delivered to listeners only when the transaction commits.
                sqlx::query("SELECT pg_notify('gatehouse_changes', $1)")
                    .bind(version.to_string())
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        self.tx.commit().await?;
        Ok(version)
    }
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

pub(crate) fn int(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn opt_int(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:data/x.db"), "sqlite:data/x.db");
    }
}
