//! Sign-in rows: unfinished sign-in flows, lockout counters, the networks each user has signed
//! in from, Authenticator-app (TOTP) step bookkeeping, and the sign-in log.
//!
//! Every statement here runs inside the caller's transaction (`Write`) when it changes
//! something, so a step's effects (a consumed pass, a counter, a session, its log row) commit
//! together or not at all.

use super::{Result, Store, StoreError, Write, int, text};
use gatehouse_core::auth::lockout::{Scope, State};

/// A stored sign-in flow: its token's hash and its JSON state.
#[derive(Clone, PartialEq, Eq)]
pub struct FlowRow {
    pub token_hash: String,
    pub expires_at: i64,
    pub body: String,
}

// The hash is not the token, but it stays out of logs anyway.
impl std::fmt::Debug for FlowRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowRow").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// One sign-in log row: the filterable columns beside the Graph `signIn` object.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInLogRow {
    pub id: String,
    pub created_at: i64,
    pub user_id: Option<String>,
    pub upn: Option<String>,
    pub app_id: Option<String>,
    pub error_code: i64,
    /// `success`, `failure` or `notApplied`.
    pub ca_status: String,
    pub body: serde_json::Value,
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Familiar => "familiar",
        Scope::Unfamiliar => "unfamiliar",
    }
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn states_of(rows: &[sqlx::any::AnyRow]) -> Result<(State, State)> {
    let (mut familiar, mut unfamiliar) = (State::default(), State::default());
    for r in rows {
        let state = State {
            failures: to_u32(int(r, "failures")?),
            lockouts: to_u32(int(r, "lockouts")?),
            locked_until: int(r, "locked_until")?,
        };
        match text(r, "scope")?.as_str() {
            "familiar" => familiar = state,
            "unfamiliar" => unfamiliar = state,
            other => return Err(StoreError::Corrupt(format!("lockout scope `{other}`"))),
        }
    }
    Ok((familiar, unfamiliar))
}

const LOCKOUT_SELECT: &str =
    "SELECT scope, failures, lockouts, locked_until FROM lockouts WHERE user_id = $1";

impl Store {
    pub async fn signin_flow(&self, id: &str) -> Result<Option<FlowRow>> {
        let row =
            sqlx::query("SELECT token_hash, expires_at, body FROM signin_flows WHERE id = $1")
                .bind(id.to_owned())
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| {
            Ok(FlowRow {
                token_hash: text(&r, "token_hash")?,
                expires_at: int(&r, "expires_at")?,
                body: text(&r, "body")?,
            })
        })
        .transpose()
    }

    /// The (familiar, unfamiliar) lockout states of a lockout key, read without locking (the
    /// early refusal; the step re-reads under lock before it counts anything).
    pub async fn lockout_states(&self, key: &str) -> Result<(State, State)> {
        let rows = sqlx::query(LOCKOUT_SELECT).bind(key.to_owned()).fetch_all(self.pool()).await?;
        states_of(&rows)
    }

    /// The networks (`network_of`) a user has completed a sign-in from.
    pub async fn familiar_networks(&self, user_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT network FROM familiar_networks WHERE user_id = $1")
            .bind(user_id.to_owned())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| text(r, "network")).collect()
    }
}

impl Write {
    /// Drops flows that expired before `now` (nobody can continue them).
    pub async fn delete_expired_flows(&mut self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM signin_flows WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_flow(&mut self, id: &str, row: &FlowRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO signin_flows (id, token_hash, expires_at, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_owned())
        .bind(row.token_hash.clone())
        .bind(row.expires_at)
        .bind(row.body.clone())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Replaces a flow's state if it is still `old` (compare-and-set: of two concurrent steps
    /// on one flow, only the first to commit moves it on). False when it changed or is gone.
    pub async fn update_flow(&mut self, id: &str, old: &str, new: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE signin_flows SET body = $3 WHERE id = $1 AND body = $2")
            .bind(id.to_owned())
            .bind(old.to_owned())
            .bind(new.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a flow if it is still `old`; false when another step ended or moved it first.
    pub async fn finish_flow(&mut self, id: &str, old: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM signin_flows WHERE id = $1 AND body = $2")
            .bind(id.to_owned())
            .bind(old.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The lockout states of `key`, locked for the rest of the transaction: the rows are
    /// created if missing and touched, which takes PostgreSQL's row lock (SQLite has one
    /// writer anyway), so concurrent failures are counted one after the other.
    pub async fn lock_lockout_states(&mut self, key: &str) -> Result<(State, State)> {
        for scope in [Scope::Familiar, Scope::Unfamiliar] {
            sqlx::query(
                "INSERT INTO lockouts (user_id, scope, failures, locked_until, lockouts) \
                 VALUES ($1, $2, 0, 0, 0) ON CONFLICT (user_id, scope) DO NOTHING",
            )
            .bind(key.to_owned())
            .bind(scope_name(scope))
            .execute(&mut *self.tx)
            .await?;
        }
        sqlx::query("UPDATE lockouts SET failures = failures WHERE user_id = $1")
            .bind(key.to_owned())
            .execute(&mut *self.tx)
            .await?;
        let rows =
            sqlx::query(LOCKOUT_SELECT).bind(key.to_owned()).fetch_all(&mut *self.tx).await?;
        states_of(&rows)
    }

    pub async fn put_lockout_state(&mut self, key: &str, scope: Scope, s: &State) -> Result<()> {
        sqlx::query(
            "INSERT INTO lockouts (user_id, scope, failures, locked_until, lockouts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, scope) DO UPDATE SET \
             failures = excluded.failures, locked_until = excluded.locked_until, \
             lockouts = excluded.lockouts",
        )
        .bind(key.to_owned())
        .bind(scope_name(scope))
        .bind(i64::from(s.failures))
        .bind(s.locked_until)
        .bind(i64::from(s.lockouts))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn touch_familiar_network(
        &mut self,
        user_id: &str,
        network: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO familiar_networks (user_id, network, last_seen) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, network) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(user_id.to_owned())
        .bind(network.to_owned())
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records `step` as the last one a verified TOTP method accepted, if it is later than the
    /// one stored: of two concurrent uses of one code, exactly one gets true.
    pub async fn accept_totp_step(&mut self, method_id: &str, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE totp_methods SET last_step = $2 WHERE id = $1 AND verified = 1 AND last_step < $2",
        )
        .bind(method_id.to_owned())
        .bind(step)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a registration in progress verified with the step its code matched. False when it
    /// is not the user's, already verified, or the step was already used (a replay).
    pub async fn verify_totp(&mut self, user_id: &str, method_id: &str, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE totp_methods SET verified = 1, last_step = $3 \
             WHERE id = $1 AND user_id = $2 AND verified = 0 AND last_step < $3",
        )
        .bind(method_id.to_owned())
        .bind(user_id.to_owned())
        .bind(step)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Drops the user's unfinished registrations (a new one replaces them).
    pub async fn delete_unverified_totp(&mut self, user_id: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM totp_methods WHERE user_id = $1 AND verified = 0")
            .bind(user_id.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_signin_log(&mut self, r: &SignInLogRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO signin_logs (id, created_at, user_id, upn, app_id, error_code, ca_status, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(r.id.clone())
        .bind(r.created_at)
        .bind(r.user_id.clone())
        .bind(r.upn.clone())
        .bind(r.app_id.clone())
        .bind(r.error_code)
        .bind(r.ca_status.clone())
        .bind(r.body.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
