//! Credential rows: passwords and Authenticator-app (TOTP) secrets. Never logged, never
//! returned by the API.

use super::{Result, Store, Write, int, text};

/// A registered TOTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRow {
    pub id: String,
    pub user_id: String,
    pub display_name: String,
    /// Base32 secret.
    pub secret: String,
    pub verified: bool,
    pub created_at: i64,
    /// The last time step accepted (replay protection).
    pub last_step: i64,
}

impl Write {
    pub async fn set_password(&mut self, user_id: &str, phc: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO passwords (user_id, phc, changed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET phc = excluded.phc, changed_at = excluded.changed_at",
        )
        .bind(user_id.to_owned())
        .bind(phc.to_owned())
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_totp(&mut self, t: &TotpRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO totp_methods (id, user_id, display_name, secret, verified, created_at, last_step) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.id.clone())
        .bind(t.user_id.clone())
        .bind(t.display_name.clone())
        .bind(t.secret.clone())
        .bind(i64::from(t.verified))
        .bind(t.created_at)
        .bind(t.last_step)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    pub async fn password_of(&self, user_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT phc FROM passwords WHERE user_id = $1")
            .bind(user_id.to_owned())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| text(&r, "phc")).transpose()
    }

    pub async fn totp_methods_of(&self, user_id: &str) -> Result<Vec<TotpRow>> {
        let rows = sqlx::query(
            "SELECT id, user_id, display_name, secret, verified, created_at, last_step \
             FROM totp_methods WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user_id.to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TotpRow {
                    id: text(r, "id")?,
                    user_id: text(r, "user_id")?,
                    display_name: text(r, "display_name")?,
                    secret: text(r, "secret")?,
                    verified: int(r, "verified")? != 0,
                    created_at: int(r, "created_at")?,
                    last_step: int(r, "last_step")?,
                })
            })
            .collect()
    }
}
