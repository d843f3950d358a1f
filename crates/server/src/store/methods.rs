//! Temporary Access Pass rows. A user holds at most one pass (`tap_methods.user_id` is unique);
//! only the pass's SHA-256 is stored, so a database dump does not reveal a usable pass.
//!
//! The rules (who may get one, how long it lives, whether it works now) are pure functions in
//! `gatehouse_core::auth::tap`; this module only keeps the rows and makes one-time use atomic.

use serde_json::Value;

use super::{Result, Store, StoreError, Write, int, opt_int, text};

/// The `settings` row `Change::PutAuthMethodsPolicy` writes (`tables.rs`).
const POLICY_SETTING: &str = "authenticationMethodsPolicy";

/// A stored pass. `secret_hash` is `gatehouse_core::auth::secret::hash` of the pass.
#[derive(Clone, PartialEq, Eq)]
pub struct TapRow {
    pub id: String,
    pub user_id: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub start_at: i64,
    pub lifetime_minutes: i64,
    pub usable_once: bool,
    /// When a one-time pass was consumed; multi-use passes keep `None`.
    pub used_at: Option<i64>,
}

// The hash is not the pass, but it is still kept out of logs.
impl std::fmt::Debug for TapRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapRow")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("secret_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("start_at", &self.start_at)
            .field("lifetime_minutes", &self.lifetime_minutes)
            .field("usable_once", &self.usable_once)
            .field("used_at", &self.used_at)
            .finish()
    }
}

fn row(r: &sqlx::any::AnyRow) -> Result<TapRow> {
    Ok(TapRow {
        id: text(r, "id")?,
        user_id: text(r, "user_id")?,
        secret_hash: text(r, "secret_hash")?,
        created_at: int(r, "created_at")?,
        start_at: int(r, "start_at")?,
        lifetime_minutes: int(r, "lifetime_minutes")?,
        usable_once: int(r, "usable_once")? != 0,
        used_at: opt_int(r, "used_at")?,
    })
}

impl Write {
    /// Stores `t` as its user's only pass, replacing any other at once. Returns the id of the
    /// pass it replaced, whose sessions the caller ends (`Change::EndTapSessions`).
    pub async fn put_tap(&mut self, t: &TapRow) -> Result<Option<String>> {
        let old = sqlx::query("SELECT id FROM tap_methods WHERE user_id = $1")
            .bind(t.user_id.clone())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| text(&r, "id"))
            .transpose()?;
        sqlx::query("DELETE FROM tap_methods WHERE user_id = $1")
            .bind(t.user_id.clone())
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "INSERT INTO tap_methods (id, user_id, secret_hash, created_at, start_at, \
             lifetime_minutes, usable_once, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(t.id.clone())
        .bind(t.user_id.clone())
        .bind(t.secret_hash.clone())
        .bind(t.created_at)
        .bind(t.start_at)
        .bind(t.lifetime_minutes)
        .bind(i64::from(t.usable_once))
        .bind(t.used_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(old)
    }

    /// Deletes the user's pass `tap_id`. False when that user has no such pass.
    pub async fn delete_tap(&mut self, user_id: &str, tap_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tap_methods WHERE user_id = $1 AND id = $2")
            .bind(user_id.to_owned())
            .bind(tap_id.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The sign-in step of a pass: may this sign-in use pass `tap_id`? A one-time pass is
    /// marked used by the one transaction that finds it unused (the row lock, or SQLite's single
    /// writer, makes concurrent callers wait and then see it used): exactly one caller gets
    /// true. A multi-use pass is not consumed and always gives true. A pass that no longer
    /// exists (replaced, deleted) gives false. Validity in time is the caller's check
    /// (`tap::usability`); this is only the race-free part.
    pub async fn consume_tap(&mut self, tap_id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tap_methods SET used_at = CASE WHEN usable_once = 1 THEN $2 ELSE used_at END \
             WHERE id = $1 AND (usable_once = 0 OR used_at IS NULL)",
        )
        .bind(tap_id.to_owned())
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The stored authentication methods policy, read in this transaction with its row locked
    /// until commit: PostgreSQL holds the row lock the no-op UPDATE takes, and SQLite's single
    /// writer already excludes other writers. A read-modify-write of the policy through this
    /// cannot lose a concurrent change.
    pub async fn auth_methods_policy_for_update(&mut self) -> Result<Option<Value>> {
        sqlx::query("UPDATE settings SET body = body WHERE name = $1")
            .bind(POLICY_SETTING)
            .execute(&mut *self.tx)
            .await?;
        let found = sqlx::query("SELECT body FROM settings WHERE name = $1")
            .bind(POLICY_SETTING)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(found) = found else { return Ok(None) };
        let body = text(&found, "body")?;
        let policy = serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("authentication methods policy: {e}")))?;
        Ok(Some(policy))
    }

    /// Deletes the user's Authenticator-app (TOTP) method `id`. False when there is none.
    pub async fn delete_totp(&mut self, user_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM totp_methods WHERE user_id = $1 AND id = $2")
            .bind(user_id.to_owned())
            .bind(id.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Store {
    /// The user's pass, if they hold one (whatever its state).
    pub async fn tap_of(&self, user_id: &str) -> Result<Option<TapRow>> {
        let found = sqlx::query(
            "SELECT id, user_id, secret_hash, created_at, start_at, lifetime_minutes, \
             usable_once, used_at FROM tap_methods WHERE user_id = $1",
        )
        .bind(user_id.to_owned())
        .fetch_optional(self.pool())
        .await?;
        found.as_ref().map(row).transpose()
    }

    /// When the user's password was set, if they have one (the password method's
    /// `createdDateTime`; the hash itself never leaves the store module).
    pub async fn password_set_at(&self, user_id: &str) -> Result<Option<i64>> {
        let found = sqlx::query("SELECT changed_at FROM passwords WHERE user_id = $1")
            .bind(user_id.to_owned())
            .fetch_optional(self.pool())
            .await?;
        found.as_ref().map(|r| int(r, "changed_at")).transpose()
    }
}
