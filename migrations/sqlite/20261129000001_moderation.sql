-- Server moderation: timeouts (kept apart from `members` so that leaving and joining again
-- does not end one) and the per-server audit log. Times are Unix milliseconds.

CREATE TABLE member_timeouts (
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Until when the member may not send, react or speak.
    ends_at   INTEGER NOT NULL,
    -- Timeouts given so far in this server (the next one may be longer).
    given     INTEGER NOT NULL,
    PRIMARY KEY (server_id, user_id)
);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    server_id  INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    actor_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    -- A user, channel, role or message id, or an invite code.
    target_id  TEXT,
    reason     TEXT,
    -- JSON object: what changed (names, durations, counts), never message content.
    details    TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX audit_log_server ON audit_log (server_id, id);
