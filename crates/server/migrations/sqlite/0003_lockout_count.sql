-- Smart lockout doubles each lockout's length: remember how many lockouts a (user, scope) has
-- had since its last successful sign-in. Unfinished sign-in flows are swept by expiry.
ALTER TABLE lockouts ADD COLUMN lockouts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX signin_flows_by_expiry ON signin_flows (expires_at);
