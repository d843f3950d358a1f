-- Entitlement management (docs/governance.md). The same text on SQLite and PostgreSQL.
--
-- Roles held for a time through access package assignments: the directory's memory replays them
-- from the change log (Change::Grant / Change::Revoke) and reads these rows at start-up.
CREATE TABLE member_grants (
  role_key TEXT NOT NULL, principal_id TEXT NOT NULL, assignment_id TEXT NOT NULL,
  valid_from BIGINT NOT NULL, valid_until BIGINT, body TEXT NOT NULL,
  PRIMARY KEY (role_key, principal_id, assignment_id));
CREATE INDEX member_grants_by_assignment ON member_grants (assignment_id);
CREATE TABLE user_sponsors (user_id TEXT NOT NULL, sponsor_id TEXT NOT NULL, PRIMARY KEY (user_id, sponsor_id));

-- Catalogs, resources, resource requests, access packages, resource role scopes, assignment
-- policies, custom extensions and catalog role assignments: small documents, one table.
CREATE TABLE em_objects (
  kind TEXT NOT NULL, id TEXT NOT NULL, parent_id TEXT NOT NULL, created_at BIGINT NOT NULL,
  body TEXT NOT NULL, secret TEXT, PRIMARY KEY (kind, id));
CREATE INDEX em_objects_by_parent ON em_objects (kind, parent_id);

CREATE TABLE em_requests (
  id TEXT PRIMARY KEY, package_id TEXT NOT NULL, policy_id TEXT NOT NULL, target_id TEXT NOT NULL,
  requestor_id TEXT, assignment_id TEXT NOT NULL, state TEXT NOT NULL, created_at BIGINT NOT NULL,
  idempotency_key TEXT, body TEXT NOT NULL);
-- A repeated POST with the same key finds the first request (NULL keys never collide).
CREATE UNIQUE INDEX em_requests_by_key ON em_requests (requestor_id, idempotency_key);
CREATE INDEX em_requests_by_target ON em_requests (target_id, package_id);
CREATE INDEX em_requests_by_requestor ON em_requests (requestor_id);
CREATE INDEX em_requests_by_time ON em_requests (created_at, id);
CREATE TABLE em_approvers (
  request_id TEXT NOT NULL, stage BIGINT NOT NULL, user_id TEXT NOT NULL, pending BIGINT NOT NULL,
  PRIMARY KEY (request_id, stage, user_id));
CREATE INDEX em_approvers_by_user ON em_approvers (user_id, pending);

CREATE TABLE em_assignments (
  id TEXT PRIMARY KEY, package_id TEXT NOT NULL, policy_id TEXT NOT NULL, target_id TEXT NOT NULL,
  state TEXT NOT NULL, end_at BIGINT, created_at BIGINT NOT NULL, body TEXT NOT NULL);
CREATE INDEX em_assignments_by_target ON em_assignments (target_id, package_id);
CREATE INDEX em_assignments_by_package ON em_assignments (package_id, state);

-- Work that falls due at an instant (expiry, reminders, escalation, timeouts, scheduled starts):
-- one row per (subject, kind), claimed and deleted in the transaction that does the work.
CREATE TABLE due_jobs (
  subject TEXT NOT NULL, kind TEXT NOT NULL, due_at BIGINT NOT NULL, PRIMARY KEY (subject, kind));
CREATE INDEX due_jobs_by_time ON due_jobs (due_at);

-- Messages a state change causes (mail, custom-extension calls), written in its transaction
-- and sent by a worker until acknowledged. A row keeps its id: it is the Message-ID and the
-- webhook id, so a receiver can tell a repeat from a new message.
CREATE TABLE outbox (
  id TEXT PRIMARY KEY, channel TEXT NOT NULL, created_at BIGINT NOT NULL, due_at BIGINT NOT NULL,
  attempts BIGINT NOT NULL, lease_until BIGINT NOT NULL, sent_at BIGINT, last_error TEXT,
  body TEXT NOT NULL);
CREATE INDEX outbox_pending ON outbox (due_at) WHERE sent_at IS NULL;
