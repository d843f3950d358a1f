-- Passkeys (WebAuthn): the credential as webauthn-rs serialises it (public key, counter,
-- backup state), never a secret. Ceremony states live in the store so any node can finish a
-- ceremony another node began; they expire with the ceremony.
CREATE TABLE passkeys (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, credential_id TEXT NOT NULL UNIQUE,
  display_name TEXT NOT NULL, created_at BIGINT NOT NULL, last_used_at BIGINT, body TEXT NOT NULL);
CREATE INDEX passkeys_by_user ON passkeys (user_id);
CREATE TABLE webauthn_ceremonies (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, kind TEXT NOT NULL, expires_at BIGINT NOT NULL,
  state TEXT NOT NULL);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
