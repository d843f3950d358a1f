-- Gatehouse schema v1 (SQLite). Keep in step with migrations/postgres/0001_init.sql:
-- ids TEXT, instants BIGINT Unix milliseconds, booleans BIGINT 0/1, JSON as TEXT.
CREATE TABLE store_version (id BIGINT PRIMARY KEY, version BIGINT NOT NULL);
INSERT INTO store_version (id, version) VALUES (1, 0);
CREATE TABLE changes (version BIGINT PRIMARY KEY, at BIGINT NOT NULL, body TEXT NOT NULL);

CREATE TABLE users (id TEXT PRIMARY KEY, upn TEXT NOT NULL UNIQUE, manager_id TEXT, body TEXT NOT NULL);
CREATE TABLE dir_groups (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE members (group_id TEXT NOT NULL, member_id TEXT NOT NULL, PRIMARY KEY (group_id, member_id));
CREATE INDEX members_by_member ON members (member_id);
CREATE TABLE role_assignments (id TEXT PRIMARY KEY, principal_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE service_principals (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE devices (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE ca_policies (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE named_locations (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE auth_strengths (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE settings (name TEXT PRIMARY KEY, body TEXT NOT NULL);

CREATE TABLE passwords (user_id TEXT PRIMARY KEY, phc TEXT NOT NULL, changed_at BIGINT NOT NULL);
CREATE TABLE tap_methods (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL UNIQUE, secret_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL, start_at BIGINT NOT NULL, lifetime_minutes BIGINT NOT NULL,
  usable_once BIGINT NOT NULL, used_at BIGINT);
CREATE TABLE totp_methods (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, display_name TEXT NOT NULL, secret TEXT NOT NULL,
  verified BIGINT NOT NULL, created_at BIGINT NOT NULL, last_step BIGINT NOT NULL);
CREATE INDEX totp_by_user ON totp_methods (user_id);
CREATE TABLE sessions (
  id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, kind TEXT NOT NULL,
  created_at BIGINT NOT NULL, expires_at BIGINT, body TEXT NOT NULL, revoked_at BIGINT);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE TABLE signin_flows (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL, expires_at BIGINT NOT NULL, body TEXT NOT NULL);
CREATE TABLE lockouts (user_id TEXT NOT NULL, scope TEXT NOT NULL, failures BIGINT NOT NULL, locked_until BIGINT NOT NULL, PRIMARY KEY (user_id, scope));
CREATE TABLE familiar_networks (user_id TEXT NOT NULL, network TEXT NOT NULL, last_seen BIGINT NOT NULL, PRIMARY KEY (user_id, network));

CREATE TABLE signin_logs (
  id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, user_id TEXT, upn TEXT, app_id TEXT,
  error_code BIGINT NOT NULL, ca_status TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX signin_logs_by_time ON signin_logs (created_at, id);
CREATE TABLE audit_logs (
  id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, category TEXT NOT NULL, activity TEXT NOT NULL,
  result TEXT NOT NULL, initiated_by TEXT, target_id TEXT, body TEXT NOT NULL);
CREATE INDEX audit_logs_by_time ON audit_logs (created_at, id);
