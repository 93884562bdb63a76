-- Communities: servers (guilds), roles, members, channels (and group DMs), overwrites,
-- invites, bans, and end-to-end encrypted channel messages with their reactions. Message and
-- reaction bodies are libsignal ciphertexts the server never parses. Times are Unix
-- milliseconds; ids are snowflakes. `@everyone` is the role whose id is the server's.

CREATE TABLE servers (
    id         BIGINT  PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner_id   BIGINT  NOT NULL REFERENCES users (id),
    created_at BIGINT  NOT NULL
);

CREATE TABLE roles (
    id          BIGINT  PRIMARY KEY,
    server_id   BIGINT  NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    color       BIGINT  NOT NULL DEFAULT 0,
    position    BIGINT  NOT NULL,
    permissions BIGINT  NOT NULL,
    hoist       BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX roles_server ON roles (server_id);

CREATE TABLE members (
    server_id BIGINT  NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id   BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at BIGINT  NOT NULL,
    PRIMARY KEY (server_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

CREATE TABLE member_roles (
    server_id BIGINT  NOT NULL,
    user_id   BIGINT  NOT NULL,
    role_id   BIGINT  NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (server_id, user_id, role_id),
    FOREIGN KEY (server_id, user_id) REFERENCES members (server_id, user_id) ON DELETE CASCADE
);

-- Server channels (server_id set) and group DMs (server_id NULL, members in channel_members).
-- `view` grows whenever the devices that may read the channel may have changed.
CREATE TABLE channels (
    id              BIGINT  PRIMARY KEY,
    server_id       BIGINT  REFERENCES servers (id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    parent_id       BIGINT,
    position        BIGINT  NOT NULL DEFAULT 0,
    topic           TEXT,
    owner_id        BIGINT,
    view            BIGINT  NOT NULL DEFAULT 1,
    last_message_id BIGINT,
    created_at      BIGINT  NOT NULL
);
CREATE INDEX channels_server ON channels (server_id);

CREATE TABLE overwrites (
    channel_id BIGINT  NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    target_id  BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    allow_bits BIGINT  NOT NULL,
    deny_bits  BIGINT  NOT NULL,
    PRIMARY KEY (channel_id, kind, target_id)
);

CREATE TABLE channel_members (
    channel_id BIGINT  NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at  BIGINT  NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_members_user ON channel_members (user_id);

CREATE TABLE invites (
    code       TEXT    PRIMARY KEY,
    server_id  BIGINT  NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    inviter_id BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    uses       BIGINT  NOT NULL DEFAULT 0,
    max_uses   BIGINT,
    expires_at BIGINT,
    created_at BIGINT  NOT NULL
);
CREATE INDEX invites_server ON invites (server_id);

CREATE TABLE bans (
    server_id    BIGINT  NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id      BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason       TEXT,
    moderator_id BIGINT  NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT,
    PRIMARY KEY (server_id, user_id)
);

CREATE TABLE channel_messages (
    id            BIGINT  PRIMARY KEY,
    channel_id    BIGINT  NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    author_id     BIGINT  NOT NULL,
    author_device BIGINT  NOT NULL,
    ciphertext    BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL,
    edited_at     BIGINT,
    thread_id     BIGINT,
    pinned        BIGINT  NOT NULL DEFAULT 0,
    thread_count  BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX channel_messages_channel ON channel_messages (channel_id, id);
CREATE INDEX channel_messages_thread ON channel_messages (thread_id, id);

CREATE TABLE reactions (
    id         BIGINT  PRIMARY KEY,
    message_id BIGINT  NOT NULL REFERENCES channel_messages (id) ON DELETE CASCADE,
    channel_id BIGINT  NOT NULL,
    user_id    BIGINT  NOT NULL,
    device_id  BIGINT  NOT NULL,
    ciphertext BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE INDEX reactions_message ON reactions (message_id, id);
