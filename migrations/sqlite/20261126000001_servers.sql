-- Communities: servers (guilds), roles, members, channels (and group DMs), overwrites,
-- invites, bans, and end-to-end encrypted channel messages with their reactions. Message and
-- reaction bodies are libsignal ciphertexts the server never parses. Times are Unix
-- milliseconds; ids are snowflakes. `@everyone` is the role whose id is the server's.

CREATE TABLE servers (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner_id   INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL
);

CREATE TABLE roles (
    id          INTEGER PRIMARY KEY,
    server_id   INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    color       INTEGER NOT NULL DEFAULT 0,
    position    INTEGER NOT NULL,
    permissions INTEGER NOT NULL,
    hoist       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX roles_server ON roles (server_id);

CREATE TABLE members (
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (server_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

CREATE TABLE member_roles (
    server_id INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    role_id   INTEGER NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (server_id, user_id, role_id),
    FOREIGN KEY (server_id, user_id) REFERENCES members (server_id, user_id) ON DELETE CASCADE
);

-- Server channels (server_id set) and group DMs (server_id NULL, members in channel_members).
-- `view` grows whenever the devices that may read the channel may have changed.
CREATE TABLE channels (
    id              INTEGER PRIMARY KEY,
    server_id       INTEGER REFERENCES servers (id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    parent_id       INTEGER,
    position        INTEGER NOT NULL DEFAULT 0,
    topic           TEXT,
    owner_id        INTEGER,
    view            INTEGER NOT NULL DEFAULT 1,
    last_message_id INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX channels_server ON channels (server_id);

CREATE TABLE overwrites (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    target_id  INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    allow_bits INTEGER NOT NULL,
    deny_bits  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, kind, target_id)
);

CREATE TABLE channel_members (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_members_user ON channel_members (user_id);

CREATE TABLE invites (
    code       TEXT    PRIMARY KEY,
    server_id  INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    inviter_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    uses       INTEGER NOT NULL DEFAULT 0,
    max_uses   INTEGER,
    expires_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX invites_server ON invites (server_id);

CREATE TABLE bans (
    server_id    INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason       TEXT,
    moderator_id INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    PRIMARY KEY (server_id, user_id)
);

CREATE TABLE channel_messages (
    id            INTEGER PRIMARY KEY,
    channel_id    INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    author_id     INTEGER NOT NULL,
    author_device INTEGER NOT NULL,
    ciphertext    BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    edited_at     INTEGER,
    thread_id     INTEGER,
    pinned        INTEGER NOT NULL DEFAULT 0,
    thread_count  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX channel_messages_channel ON channel_messages (channel_id, id);
CREATE INDEX channel_messages_thread ON channel_messages (thread_id, id);

CREATE TABLE reactions (
    id         INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES channel_messages (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    device_id  INTEGER NOT NULL,
    ciphertext BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX reactions_message ON reactions (message_id, id);
