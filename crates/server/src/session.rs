//! Sessions and API tokens: what a bearer token stands for. Only the token's hash is stored.

use crate::store::{Result, Store, StoreError, Write, opt_int, text};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionKind {
    /// Made by `gatehouse admin bootstrap` (or the demo): no expiry, for scripts.
    ApiToken,
    /// The result of a sign-in that Conditional Access allowed.
    SignIn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub kind: SessionKind,
    pub created_at: i64,
    /// None: until revoked.
    pub expires_at: Option<i64>,
    /// Methods used: `password`, `temporaryAccessPass`, `softwareOath`…
    pub methods: Vec<String>,
    /// The pass this session was obtained with; the session ends with it.
    pub tap_id: Option<String>,
    /// What the session was granted for: an app id, or `userAction:registersecurityinfo`.
    pub target: Option<String>,
}

impl Session {
    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

impl Write {
    pub async fn insert_session(&mut self, token_hash: &str, s: &Session) -> Result<()> {
        let body = serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let kind = match s.kind {
            SessionKind::ApiToken => "apiToken",
            SessionKind::SignIn => "signIn",
        };
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, kind, created_at, expires_at, body, tap_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(s.id.clone())
        .bind(token_hash.to_owned())
        .bind(s.user_id.clone())
        .bind(kind)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(body)
        .bind(s.tap_id.clone())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// The session a token hash names, if it exists and was not revoked.
    pub async fn find_session(&self, token_hash: &str) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT body, revoked_at FROM sessions WHERE token_hash = $1")
            .bind(token_hash.to_owned())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        if opt_int(&row, "revoked_at")?.is_some() {
            return Ok(None);
        }
        let body = text(&row, "body")?;
        let s = serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("session: {e}")))?;
        Ok(Some(s))
    }
}
