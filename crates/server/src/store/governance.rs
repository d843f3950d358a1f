//! Entitlement management rows: definitions (catalogs, packages, policies…) as small JSON
//! documents in one table, requests and assignments in their own tables with the columns they
//! are found by, due jobs, and the outbox.
//!
//! Reads inside a write go through the transaction ([`Write`]), so a handler decides on exactly
//! what it will overwrite; reads for listings go through the pool ([`Store`]).

use gatehouse_core::governance::engine::{Job, JobKind};
use gatehouse_core::governance::model::{Assignment, Request};
use serde_json::Value;
use sqlx::any::AnyRow;

use super::{Backend, Result, Store, StoreError, Write, int, opt_int, opt_text, text};

/// The kinds of definition documents kept in `em_objects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Catalog,
    Resource,
    ResourceRequest,
    Package,
    RoleScope,
    Policy,
    Extension,
    /// A catalog role held by a user (`roleManagement/entitlementManagement/roleAssignments`).
    CatalogRole,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Catalog => "catalog",
            Kind::Resource => "resource",
            Kind::ResourceRequest => "resourceRequest",
            Kind::Package => "accessPackage",
            Kind::RoleScope => "resourceRoleScope",
            Kind::Policy => "assignmentPolicy",
            Kind::Extension => "customWorkflowExtension",
            Kind::CatalogRole => "catalogRoleAssignment",
        }
    }
}

/// A definition document: its body, the object it belongs to (a catalog, a package), and when
/// it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: String,
    pub parent: String,
    pub created: i64,
    pub body: Value,
}

fn doc(r: &AnyRow) -> Result<Doc> {
    let id = text(r, "id")?;
    let body = serde_json::from_str(&text(r, "body")?)
        .map_err(|e| StoreError::Corrupt(format!("document {id}: {e}")))?;
    Ok(Doc { id, parent: text(r, "parent_id")?, created: int(r, "created_at")?, body })
}

fn decode<T: serde::de::DeserializeOwned>(r: &AnyRow, what: &str) -> Result<T> {
    let body = text(r, "body")?;
    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("encoding: {e}")))
}

/// The `due_at` of a message the outbox gave up on (year 2255: never).
pub const GIVEN_UP: i64 = 9_000_000_000_000;

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: String,
    /// `mail` or `webhook`.
    pub channel: String,
    pub created_at: i64,
    pub attempts: i64,
    pub body: Value,
}

/// The filters request and assignment listings push down to SQL.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub target: Option<String>,
    pub requestor: Option<String>,
    pub package: Option<String>,
    pub packages: Option<Vec<String>>,
}

impl Write {
    pub async fn put_doc(&mut self, kind: Kind, d: &Doc, secret: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO em_objects (kind, id, parent_id, created_at, body, secret) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (kind, id) DO UPDATE SET parent_id = excluded.parent_id, body = excluded.body, \
             secret = COALESCE(excluded.secret, em_objects.secret)",
        )
        .bind(kind.as_str())
        .bind(d.id.clone())
        .bind(d.parent.clone())
        .bind(d.created)
        .bind(d.body.to_string())
        .bind(secret.map(str::to_owned))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn delete_doc(&mut self, kind: Kind, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM em_objects WHERE kind = $1 AND id = $2")
            .bind(kind.as_str())
            .bind(id.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn doc(&mut self, kind: Kind, id: &str) -> Result<Option<Doc>> {
        let row = sqlx::query(
            "SELECT id, parent_id, created_at, body FROM em_objects WHERE kind = $1 AND id = $2",
        )
        .bind(kind.as_str())
        .bind(id.to_owned())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(doc).transpose()
    }

    pub async fn docs_of(&mut self, kind: Kind, parent: &str) -> Result<Vec<Doc>> {
        let rows = sqlx::query(
            "SELECT id, parent_id, created_at, body FROM em_objects WHERE kind = $1 AND parent_id = $2 ORDER BY id",
        )
        .bind(kind.as_str())
        .bind(parent.to_owned())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(doc).collect()
    }

    pub async fn put_request(&mut self, r: &Request, idempotency_key: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO em_requests (id, package_id, policy_id, target_id, requestor_id, assignment_id, state, created_at, idempotency_key, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        )
        .bind(r.id.clone())
        .bind(r.access_package_id.clone())
        .bind(r.policy_id.clone())
        .bind(r.target_id.clone())
        .bind(r.requestor_id.clone())
        .bind(r.assignment_id.clone())
        .bind(r.state.as_str())
        .bind(r.created)
        .bind(idempotency_key.map(str::to_owned))
        .bind(encode(r)?)
        .execute(&mut *self.tx)
        .await?;
        // Who may decide what now: one row per approver of each stage, `pending` while the
        // stage waits for a decision (filterByCurrentUser(on='approver') reads it).
        sqlx::query("DELETE FROM em_approvers WHERE request_id = $1")
            .bind(r.id.clone())
            .execute(&mut *self.tx)
            .await?;
        for (i, s) in r.stages.iter().enumerate() {
            let pending = i64::from(
                s.status == gatehouse_core::governance::model::StageStatus::InProgress
                    && r.state == gatehouse_core::governance::model::RequestState::PendingApproval,
            );
            for a in &s.approvers {
                sqlx::query(
                    "INSERT INTO em_approvers (request_id, stage, user_id, pending) VALUES ($1, $2, $3, $4)",
                )
                .bind(r.id.clone())
                .bind(i as i64)
                .bind(a.clone())
                .bind(pending)
                .execute(&mut *self.tx)
                .await?;
            }
        }
        Ok(())
    }

    pub async fn request(&mut self, id: &str) -> Result<Option<Request>> {
        let row = sqlx::query("SELECT body FROM em_requests WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| decode(&r, "request")).transpose()
    }

    /// The open request (submitted, pending approval, scheduled, delivering) for this package
    /// and target, if any: a second one is refused and names it.
    pub async fn open_request_for(
        &mut self,
        package: &str,
        target: &str,
    ) -> Result<Option<Request>> {
        let rows = sqlx::query(
            "SELECT body FROM em_requests WHERE target_id = $1 AND package_id = $2 \
             AND state IN ('submitted', 'pendingApproval', 'scheduled', 'delivering') ORDER BY created_at",
        )
        .bind(target.to_owned())
        .bind(package.to_owned())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.first().map(|r| decode(r, "request")).transpose()
    }

    pub async fn request_by_key(&mut self, requestor: &str, key: &str) -> Result<Option<Request>> {
        let row = sqlx::query(
            "SELECT body FROM em_requests WHERE requestor_id = $1 AND idempotency_key = $2",
        )
        .bind(requestor.to_owned())
        .bind(key.to_owned())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| decode(&r, "request")).transpose()
    }

    pub async fn delete_request(&mut self, id: &str) -> Result<()> {
        for sql in [
            "DELETE FROM em_requests WHERE id = $1",
            "DELETE FROM em_approvers WHERE request_id = $1",
        ] {
            sqlx::query(sql).bind(id.to_owned()).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn put_assignment(&mut self, a: &Assignment) -> Result<()> {
        sqlx::query(
            "INSERT INTO em_assignments (id, package_id, policy_id, target_id, state, end_at, created_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, end_at = excluded.end_at, body = excluded.body",
        )
        .bind(a.id.clone())
        .bind(a.access_package_id.clone())
        .bind(a.policy_id.clone())
        .bind(a.target_id.clone())
        .bind(a.state.as_str())
        .bind(a.schedule.end)
        .bind(a.created)
        .bind(encode(a)?)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn assignment(&mut self, id: &str) -> Result<Option<Assignment>> {
        let row = sqlx::query("SELECT body FROM em_assignments WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| decode(&r, "assignment")).transpose()
    }

    /// Live (delivered or partly delivered) assignments of a package, or of a package to one
    /// target.
    pub async fn live_assignments(
        &mut self,
        package: &str,
        target: Option<&str>,
    ) -> Result<Vec<Assignment>> {
        let rows = match target {
            Some(t) => {
                sqlx::query(
                    "SELECT body FROM em_assignments WHERE package_id = $1 AND target_id = $2 \
                 AND state IN ('delivered', 'partiallyDelivered') ORDER BY id",
                )
                .bind(package.to_owned())
                .bind(t.to_owned())
                .fetch_all(&mut *self.tx)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT body FROM em_assignments WHERE package_id = $1 \
                 AND state IN ('delivered', 'partiallyDelivered') ORDER BY id",
                )
                .bind(package.to_owned())
                .fetch_all(&mut *self.tx)
                .await?
            }
        };
        rows.iter().map(|r| decode(r, "assignment")).collect()
    }

    /// Every assignment of a user.
    pub async fn assignments_of_target(&mut self, target: &str) -> Result<Vec<Assignment>> {
        let rows = sqlx::query("SELECT body FROM em_assignments WHERE target_id = $1 ORDER BY id")
            .bind(target.to_owned())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| decode(r, "assignment")).collect()
    }

    /// A user's requests that are still open.
    pub async fn open_requests_of_target(&mut self, target: &str) -> Result<Vec<Request>> {
        let rows = sqlx::query(
            "SELECT body FROM em_requests WHERE target_id = $1 \
             AND state IN ('submitted', 'pendingApproval', 'scheduled', 'delivering') ORDER BY id",
        )
        .bind(target.to_owned())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(|r| decode(r, "request")).collect()
    }

    /// How many assignments (live or not) hang off a package or a policy.
    pub async fn count_assignments(
        &mut self,
        package: Option<&str>,
        policy: Option<&str>,
    ) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM em_assignments WHERE state <> 'expired' \
             AND ($1 IS NULL OR package_id = $1) AND ($2 IS NULL OR policy_id = $2)",
        )
        .bind(package.map(str::to_owned))
        .bind(policy.map(str::to_owned))
        .fetch_one(&mut *self.tx)
        .await?;
        int(&row, "n")
    }

    /// How many open requests a policy has (it cannot be deleted under them).
    pub async fn count_open_requests(&mut self, policy: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM em_requests WHERE policy_id = $1 \
             AND state IN ('submitted', 'pendingApproval', 'scheduled', 'delivering')",
        )
        .bind(policy.to_owned())
        .fetch_one(&mut *self.tx)
        .await?;
        int(&row, "n")
    }

    pub async fn put_job(&mut self, j: &Job) -> Result<()> {
        sqlx::query(
            "INSERT INTO due_jobs (subject, kind, due_at) VALUES ($1, $2, $3) \
             ON CONFLICT (subject, kind) DO UPDATE SET due_at = excluded.due_at",
        )
        .bind(j.subject.clone())
        .bind(j.kind.key())
        .bind(j.due)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn cancel_job(&mut self, subject: &str, kind: &str) -> Result<()> {
        sqlx::query("DELETE FROM due_jobs WHERE subject = $1 AND kind = $2")
            .bind(subject.to_owned())
            .bind(kind.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Takes up to `limit` jobs due by `now`, oldest first. On PostgreSQL they are locked
    /// (`FOR UPDATE SKIP LOCKED`): another node's worker takes others. The caller deletes each
    /// in the transaction that does its work, so a job is done once, or not at all if the node
    /// dies first.
    pub async fn claim_due_jobs(
        &mut self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<(String, JobKind, i64)>> {
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT subject, kind, due_at FROM due_jobs WHERE due_at <= $1 ORDER BY due_at, subject, kind LIMIT $2 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT subject, kind, due_at FROM due_jobs WHERE due_at <= $1 ORDER BY due_at, subject, kind LIMIT $2"
            }
        };
        let rows = sqlx::query(sql).bind(now).bind(limit).fetch_all(&mut *self.tx).await?;
        let mut out = Vec::new();
        for r in &rows {
            let kind = text(r, "kind")?;
            match JobKind::parse(&kind) {
                Some(k) => out.push((text(r, "subject")?, k, int(r, "due_at")?)),
                None => tracing::error!(kind, "unknown due job kind; left in place"),
            }
        }
        Ok(out)
    }

    pub async fn enqueue(&mut self, id: &str, channel: &str, now: i64, body: &Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (id, channel, created_at, due_at, attempts, lease_until, body) \
             VALUES ($1, $2, $3, $3, 0, 0, $4)",
        )
        .bind(id.to_owned())
        .bind(channel.to_owned())
        .bind(now)
        .bind(body.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The subjects that have a job of this kind waiting (`autoremove`…).
    pub async fn jobs_of_kind(&mut self, kind: &JobKind) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT subject FROM due_jobs WHERE kind = $1")
            .bind(kind.key())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| text(r, "subject")).collect()
    }

    /// The signing secret of a custom extension (never served).
    pub async fn extension_secret(&mut self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT secret FROM em_objects WHERE kind = $1 AND id = $2")
            .bind(Kind::Extension.as_str())
            .bind(id.to_owned())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| opt_text(&r, "secret")).transpose()?.flatten())
    }
}

impl Store {
    /// The signing secret of a custom extension (never served).
    pub async fn extension_secret(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT secret FROM em_objects WHERE kind = $1 AND id = $2")
            .bind(Kind::Extension.as_str())
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| opt_text(&r, "secret")).transpose()?.flatten())
    }

    pub async fn doc(&self, kind: Kind, id: &str) -> Result<Option<Doc>> {
        let row = sqlx::query(
            "SELECT id, parent_id, created_at, body FROM em_objects WHERE kind = $1 AND id = $2",
        )
        .bind(kind.as_str())
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(doc).transpose()
    }

    /// Every document of a kind (with `parent`: of that catalog or package), in id order.
    pub async fn docs(&self, kind: Kind, parent: Option<&str>) -> Result<Vec<Doc>> {
        let rows = match parent {
            Some(p) => sqlx::query(
                "SELECT id, parent_id, created_at, body FROM em_objects WHERE kind = $1 AND parent_id = $2 ORDER BY id",
            )
            .bind(kind.as_str())
            .bind(p.to_owned())
            .fetch_all(&self.pool)
            .await?,
            None => sqlx::query(
                "SELECT id, parent_id, created_at, body FROM em_objects WHERE kind = $1 ORDER BY id",
            )
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter().map(doc).collect()
    }

    pub async fn request(&self, id: &str) -> Result<Option<Request>> {
        let row = sqlx::query("SELECT body FROM em_requests WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r, "request")).transpose()
    }

    /// Requests in id order after `after`, at most `limit`, narrowed by `scope`.
    pub async fn requests(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Request>> {
        let rows = sqlx::query(
            "SELECT body FROM em_requests WHERE ($1 IS NULL OR target_id = $1) \
             AND ($2 IS NULL OR requestor_id = $2) AND ($3 IS NULL OR package_id = $3) \
             AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5",
        )
        .bind(scope.target.clone())
        .bind(scope.requestor.clone())
        .bind(scope.package.clone())
        .bind(after.map(str::to_owned))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decode(r, "request")).collect()
    }

    /// Requests with a stage `user` may decide now (`pending`) or could once.
    pub async fn requests_for_approver(
        &self,
        user: &str,
        pending_only: bool,
    ) -> Result<Vec<Request>> {
        let rows = sqlx::query(
            "SELECT DISTINCT r.id, r.body FROM em_requests r JOIN em_approvers a ON a.request_id = r.id \
             WHERE a.user_id = $1 AND ($2 = 0 OR a.pending = 1) ORDER BY r.id",
        )
        .bind(user.to_owned())
        .bind(i64::from(pending_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decode(r, "request")).collect()
    }

    pub async fn assignment(&self, id: &str) -> Result<Option<Assignment>> {
        let row = sqlx::query("SELECT body FROM em_assignments WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r, "assignment")).transpose()
    }

    pub async fn assignments(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Assignment>> {
        let rows = sqlx::query(
            "SELECT body FROM em_assignments WHERE ($1 IS NULL OR target_id = $1) \
             AND ($2 IS NULL OR package_id = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
        )
        .bind(scope.target.clone())
        .bind(scope.package.clone())
        .bind(after.map(str::to_owned))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decode(r, "assignment")).collect()
    }

    /// When the next due job falls due (`None`: none waiting).
    pub async fn next_due_job(&self) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT MIN(due_at) AS due FROM due_jobs").fetch_one(&self.pool).await?;
        opt_int(&row, "due")
    }

    /// Leases up to `limit` messages due by `now` for `lease_ms`: another worker (or this one
    /// after a crash) retries them once the lease runs out unless they are marked sent.
    pub async fn lease_outbox(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let sql = match self.backend {
            Backend::Postgres => {
                "UPDATE outbox SET lease_until = $2, attempts = attempts + 1 WHERE id IN \
                 (SELECT id FROM outbox WHERE sent_at IS NULL AND due_at <= $1 AND lease_until <= $1 \
                  ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, channel, created_at, attempts, body"
            }
            Backend::Sqlite => {
                "UPDATE outbox SET lease_until = $2, attempts = attempts + 1 WHERE id IN \
                 (SELECT id FROM outbox WHERE sent_at IS NULL AND due_at <= $1 AND lease_until <= $1 \
                  ORDER BY due_at, id LIMIT $3) \
                 RETURNING id, channel, created_at, attempts, body"
            }
        };
        let mut w = self.begin().await?;
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit)
            .fetch_all(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        let mut out = Vec::new();
        for r in &rows {
            let id = text(r, "id")?;
            let body = serde_json::from_str(&text(r, "body")?)
                .map_err(|e| StoreError::Corrupt(format!("outbox {id}: {e}")))?;
            out.push(OutboxRow {
                id,
                channel: text(r, "channel")?,
                created_at: int(r, "created_at")?,
                attempts: int(r, "attempts")?,
                body,
            });
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Marks messages sent, in one transaction (one commit for all that were sent meanwhile,
    /// rather than one each behind every other writer).
    pub async fn outbox_sent(&self, ids: &[String], now: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut w = self.begin().await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET sent_at = $2, last_error = NULL WHERE id = $1")
                .bind(id.clone())
                .bind(now)
                .execute(&mut *w.tx)
                .await?;
        }
        w.tx.commit().await?;
        Ok(())
    }

    /// A send failed: try again at `retry_at` (or give up, with `retry_at` None).
    pub async fn outbox_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let mut w = self.begin().await?;
        match retry_at {
            Some(at) => {
                sqlx::query(
                    "UPDATE outbox SET due_at = $2, lease_until = 0, last_error = $3 WHERE id = $1",
                )
                .bind(id.to_owned())
                .bind(at)
                .bind(error.to_owned())
                .execute(&mut *w.tx)
                .await?
            }
            // Given up: kept unsent for the operator, with the last error, never due again.
            None => {
                sqlx::query(
                    "UPDATE outbox SET due_at = $2, lease_until = 0, last_error = $3 WHERE id = $1",
                )
                .bind(id.to_owned())
                .bind(GIVEN_UP)
                .bind(format!("gave up at {}: {error}", gatehouse_core::time::format(now)))
                .execute(&mut *w.tx)
                .await?
            }
        };
        w.tx.commit().await?;
        Ok(())
    }

    /// When the next message falls due (`None`: none waiting).
    pub async fn next_outbox_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN lease_until > due_at THEN lease_until ELSE due_at END) AS due \
             FROM outbox WHERE sent_at IS NULL AND due_at < $1",
        )
        .bind(GIVEN_UP)
        .fetch_one(&self.pool)
        .await?;
        opt_int(&row, "due")
    }

    /// Messages of the outbox, newest first (for the operator and the tests).
    pub async fn outbox(
        &self,
        channel: Option<&str>,
    ) -> Result<Vec<(OutboxRow, Option<i64>, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT id, channel, created_at, attempts, body, sent_at, last_error FROM outbox \
             WHERE ($1 IS NULL OR channel = $1) ORDER BY created_at, id",
        )
        .bind(channel.map(str::to_owned))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let id = text(r, "id")?;
            let body = serde_json::from_str(&text(r, "body")?)
                .map_err(|e| StoreError::Corrupt(format!("outbox {id}: {e}")))?;
            out.push((
                OutboxRow {
                    id,
                    channel: text(r, "channel")?,
                    created_at: int(r, "created_at")?,
                    attempts: int(r, "attempts")?,
                    body,
                },
                opt_int(r, "sent_at")?,
                opt_text(r, "last_error")?,
            ));
        }
        Ok(out)
    }
}
