-- The platform audit log: what staff and the command line did to accounts (and, later,
-- security events). Times are Unix milliseconds.

CREATE TABLE platform_audit (
    id         INTEGER PRIMARY KEY,
    -- Absent: the command line on the server itself.
    actor_id   INTEGER,
    action     TEXT    NOT NULL,
    target_id  INTEGER,
    -- JSON object: what changed, never a secret.
    details    TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX platform_audit_created ON platform_audit (created_at);
