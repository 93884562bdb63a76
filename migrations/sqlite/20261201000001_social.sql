-- Friends, friend requests and blocks, presence choices and read states.

-- One row per direction. A friendship is a 'friend' row on each side; a pending request is an
-- 'outgoing' row for the one who asked and an 'incoming' row for the one asked; a block is a
-- 'blocked' row for the blocker alone (the blocked user holds no row about it).
CREATE TABLE relationships (
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    other_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind     TEXT    NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (user_id, other_id)
);
CREATE INDEX relationships_other ON relationships (other_id);

-- What a user chose to be seen as (no row: online, no custom status).
CREATE TABLE presence_settings (
    user_id           INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    status            TEXT    NOT NULL,
    custom_text       TEXT,
    custom_expires_at INTEGER
);

-- How far each user has read each channel or group DM (the last message read).
CREATE TABLE read_states (
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id   INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    last_read_id INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel_id)
);

-- How far each user has read each DM (the server timestamp of the last message read).
CREATE TABLE dm_read_states (
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    peer_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_read_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, peer_id)
);
CREATE INDEX dm_read_states_peer ON dm_read_states (peer_id);
