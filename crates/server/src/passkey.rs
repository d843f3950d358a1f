//! Passkeys (WebAuthn, through `webauthn-rs`): registration and sign-in ceremonies, with their
//! state kept in the store so that any node can finish a ceremony another began.
//!
//! The relying party is the server's public URL: its host is the RP ID, its origin the only
//! origin accepted. Browsers refuse an IP address as RP ID, so a server reached as
//! `http://127.0.0.1:PORT` offers passkeys at `http://localhost:PORT` (the same machine, named).
//! A passkey is the `fido2` authentication method: it satisfies multifactor and
//! phishing-resistant authentication strengths.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::store::{Result as StoreResult, Store, StoreError, Write, opt_int, text};

/// How long a ceremony may take (the browser's prompt included).
pub const CEREMONY_MS: i64 = 5 * 60_000;

pub struct Passkeys {
    webauthn: Option<Webauthn>,
    /// Why passkeys are unavailable, when they are.
    pub why_not: String,
    /// The origin pages must be opened at for passkeys.
    pub origin: String,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys")
            .field("origin", &self.origin)
            .field("why_not", &self.why_not)
            .finish()
    }
}

/// A ceremony failed: a message for the user, never the library's internals.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("passkeys are not available on this server: {0}")]
    Unavailable(String),
    #[error("the passkey could not be verified")]
    Rejected,
    #[error("this passkey step has expired or was already used; start again")]
    Expired,
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Passkeys {
    /// The relying party for `public_url`.
    pub fn new(public_url: &str) -> Passkeys {
        let url = match Url::parse(public_url) {
            Ok(u) => u,
            Err(e) => {
                return Passkeys::off(
                    format!("the public URL `{public_url}` does not parse: {e}"),
                    public_url,
                );
            }
        };
        let mut origin = url.clone();
        let host = url.host_str().unwrap_or_default().to_owned();
        if host == "127.0.0.1" || host == "[::1]" || host == "::1" {
            if origin.set_host(Some("localhost")).is_err() {
                return Passkeys::off("cannot name the loopback host".into(), public_url);
            }
        } else if host.parse::<std::net::IpAddr>().is_ok() {
            return Passkeys::off(
                format!(
                    "browsers refuse an IP address ({host}) as a passkey's site; give the server a host name (public_url)"
                ),
                public_url,
            );
        }
        let rp_id = origin.host_str().unwrap_or_default().to_owned();
        let origin_text = origin.as_str().trim_end_matches('/').to_owned();
        let built =
            WebauthnBuilder::new(&rp_id, &origin).and_then(|b| b.rp_name("Gatehouse").build());
        match built {
            Ok(w) => Passkeys { webauthn: Some(w), why_not: String::new(), origin: origin_text },
            Err(e) => {
                Passkeys::off(format!("the relying party {rp_id} is refused: {e:?}"), public_url)
            }
        }
    }

    fn off(why: String, origin: &str) -> Passkeys {
        Passkeys { webauthn: None, why_not: why, origin: origin.trim_end_matches('/').to_owned() }
    }

    pub fn available(&self) -> bool {
        self.webauthn.is_some()
    }

    fn rp(&self) -> Result<&Webauthn, PasskeyError> {
        self.webauthn.as_ref().ok_or_else(|| PasskeyError::Unavailable(self.why_not.clone()))
    }

    /// Starts registering a passkey for `user`; the options go to the browser, the state to
    /// the store under the returned ceremony id.
    pub async fn start_registration(
        &self,
        store: &Store,
        user_id: &str,
        upn: &str,
        display_name: &str,
        now: i64,
    ) -> Result<(String, CreationChallengeResponse), PasskeyError> {
        let rp = self.rp()?;
        let uuid = Uuid::parse_str(user_id).map_err(|_| PasskeyError::Rejected)?;
        let existing: Vec<CredentialID> = store
            .passkeys_of(user_id)
            .await?
            .into_iter()
            .map(|p| p.passkey.cred_id().clone())
            .collect();
        let (options, state) = rp
            .start_passkey_registration(uuid, upn, display_name, Some(existing))
            .map_err(|_| PasskeyError::Rejected)?;
        let id = crate::random::guid();
        store.put_ceremony(&id, user_id, "register", now + CEREMONY_MS, &state).await?;
        Ok((id, options))
    }

    /// Finishes a registration: the new passkey (not yet stored).
    pub async fn finish_registration(
        &self,
        store: &Store,
        ceremony: &str,
        user_id: &str,
        credential: &RegisterPublicKeyCredential,
        now: i64,
    ) -> Result<Passkey, PasskeyError> {
        let rp = self.rp()?;
        let state: PasskeyRegistration = store
            .take_ceremony(ceremony, user_id, "register", now)
            .await?
            .ok_or(PasskeyError::Expired)?;
        rp.finish_passkey_registration(credential, &state).map_err(|_| PasskeyError::Rejected)
    }

    /// Starts a passkey sign-in for the user of a sign-in flow (the flow id is the ceremony id:
    /// one passkey attempt per flow at a time).
    pub async fn start_authentication(
        &self,
        store: &Store,
        flow_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<RequestChallengeResponse, PasskeyError> {
        let rp = self.rp()?;
        let keys: Vec<Passkey> =
            store.passkeys_of(user_id).await?.into_iter().map(|p| p.passkey).collect();
        if keys.is_empty() {
            return Err(PasskeyError::Rejected);
        }
        let (options, state) =
            rp.start_passkey_authentication(&keys).map_err(|_| PasskeyError::Rejected)?;
        store
            .put_ceremony(
                &format!("signin:{flow_id}"),
                user_id,
                "authenticate",
                now + CEREMONY_MS,
                &state,
            )
            .await?;
        Ok(options)
    }

    /// Verifies a sign-in assertion: the id of the passkey that made it, and the passkey with
    /// its counter moved on (to store).
    pub async fn finish_authentication(
        &self,
        store: &Store,
        flow_id: &str,
        user_id: &str,
        credential: &PublicKeyCredential,
        now: i64,
    ) -> Result<(String, Passkey), PasskeyError> {
        let rp = self.rp()?;
        let state: PasskeyAuthentication = store
            .take_ceremony(&format!("signin:{flow_id}"), user_id, "authenticate", now)
            .await?
            .ok_or(PasskeyError::Expired)?;
        let result = rp
            .finish_passkey_authentication(credential, &state)
            .map_err(|_| PasskeyError::Rejected)?;
        let mut stored = store.passkeys_of(user_id).await?;
        let Some(found) = stored.iter_mut().find(|p| p.passkey.cred_id() == result.cred_id())
        else {
            return Err(PasskeyError::Rejected);
        };
        found.passkey.update_credential(&result);
        Ok((found.id.clone(), found.passkey.clone()))
    }
}

/// A stored passkey.
#[derive(Clone)]
pub struct StoredPasskey {
    pub id: String,
    pub user_id: String,
    pub display_name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub passkey: Passkey,
}

#[derive(Serialize, Deserialize)]
struct Body {
    passkey: Passkey,
}

fn credential_key(p: &Passkey) -> String {
    data_encoding::BASE64URL_NOPAD.encode(p.cred_id().as_ref())
}

impl Store {
    pub async fn passkeys_of(&self, user_id: &str) -> StoreResult<Vec<StoredPasskey>> {
        let rows = sqlx::query("SELECT id, user_id, display_name, created_at, last_used_at, body FROM passkeys WHERE user_id = $1 ORDER BY created_at, id")
            .bind(user_id.to_owned())
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let body: Body = serde_json::from_str(&text(r, "body")?)
                    .map_err(|e| StoreError::Corrupt(format!("passkey: {e}")))?;
                Ok(StoredPasskey {
                    id: text(r, "id")?,
                    user_id: text(r, "user_id")?,
                    display_name: text(r, "display_name")?,
                    created_at: r.try_get::<i64, _>("created_at")?,
                    last_used_at: opt_int(r, "last_used_at")?,
                    passkey: body.passkey,
                })
            })
            .collect()
    }

    async fn put_ceremony<T: Serialize>(
        &self,
        id: &str,
        user_id: &str,
        kind: &str,
        expires_at: i64,
        state: &T,
    ) -> StoreResult<()> {
        let state = serde_json::to_string(state)
            .map_err(|e| StoreError::Corrupt(format!("ceremony: {e}")))?;
        let mut w = self.begin().await?;
        sqlx::query("DELETE FROM webauthn_ceremonies WHERE id = $1 OR expires_at < $2")
            .bind(id.to_owned())
            .bind(expires_at - 2 * CEREMONY_MS)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("INSERT INTO webauthn_ceremonies (id, user_id, kind, expires_at, state) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.to_owned())
            .bind(user_id.to_owned())
            .bind(kind.to_owned())
            .bind(expires_at)
            .bind(state)
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(())
    }

    /// Takes (and deletes) a ceremony's state: a ceremony is finished once.
    async fn take_ceremony<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        user_id: &str,
        kind: &str,
        now: i64,
    ) -> StoreResult<Option<T>> {
        let mut w = self.begin().await?;
        let row = sqlx::query("DELETE FROM webauthn_ceremonies WHERE id = $1 AND user_id = $2 AND kind = $3 AND expires_at > $4 RETURNING state")
            .bind(id.to_owned())
            .bind(user_id.to_owned())
            .bind(kind.to_owned())
            .bind(now)
            .fetch_optional(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        match row {
            Some(r) => Ok(Some(
                serde_json::from_str(&text(&r, "state")?)
                    .map_err(|e| StoreError::Corrupt(format!("ceremony: {e}")))?,
            )),
            None => Ok(None),
        }
    }
}

impl Write {
    pub async fn insert_passkey(
        &mut self,
        id: &str,
        user_id: &str,
        display_name: &str,
        now: i64,
        passkey: &Passkey,
    ) -> StoreResult<()> {
        let body = serde_json::to_string(&Body { passkey: passkey.clone() })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO passkeys (id, user_id, credential_id, display_name, created_at, body) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id.to_owned())
            .bind(user_id.to_owned())
            .bind(credential_key(passkey))
            .bind(display_name.to_owned())
            .bind(now)
            .bind(body)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records a sign-in with a passkey: its counter and when it was used.
    pub async fn touch_passkey(
        &mut self,
        id: &str,
        passkey: &Passkey,
        now: i64,
    ) -> StoreResult<()> {
        let body = serde_json::to_string(&Body { passkey: passkey.clone() })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("UPDATE passkeys SET body = $2, last_used_at = $3 WHERE id = $1")
            .bind(id.to_owned())
            .bind(body)
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn delete_passkey(&mut self, user_id: &str, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM passkeys WHERE user_id = $1 AND id = $2")
            .bind(user_id.to_owned())
            .bind(id.to_owned())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
