-- Accounts, devices, login sessions and their refresh tokens.
-- Times are Unix milliseconds; ids are snowflakes (see backend/src/ids.rs).

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    username       TEXT    NOT NULL,
    username_lower TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    display_name   TEXT,
    status_text    TEXT,
    platform_role  TEXT    NOT NULL DEFAULT 'member',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    disabled_at    INTEGER
);

CREATE TABLE devices (
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id           INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, id)
);

CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL,
    device_id    INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX sessions_device ON sessions (user_id, device_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Every refresh token ever issued for a live session: the current one has used_at NULL;
-- presenting a used one again is reuse and revokes the session.
CREATE TABLE refresh_tokens (
    hash       TEXT    PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
