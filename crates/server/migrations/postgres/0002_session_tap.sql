-- Sessions signed in with a Temporary Access Pass name it, so replacing or deleting the pass
-- ends them in one statement (Change::EndTapSessions). NULL for every other session.
ALTER TABLE sessions ADD COLUMN tap_id TEXT;
CREATE INDEX sessions_by_tap ON sessions (tap_id);
