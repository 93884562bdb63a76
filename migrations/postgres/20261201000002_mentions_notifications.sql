-- Mentions: what each message's author declared it mentions (JSON, for readers' clients to
-- check against the text), and whom it notifies: one row per reader mentioned (by name, by a
-- role of theirs, or as everyone), counted until their read marker passes it.
ALTER TABLE channel_messages ADD COLUMN mentions TEXT;
CREATE TABLE message_mentions (
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id BIGINT  NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    message_id BIGINT  NOT NULL REFERENCES channel_messages (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, channel_id, message_id)
);
CREATE INDEX message_mentions_message ON message_mentions (message_id);

-- What each user wants to be notified of, per server or channel (target_id is either): a level
-- ('all', 'mentions', 'nothing'; NULL: as the server, or the default), and a mute, until a time
-- (muted_until) or until lifted (muted_until NULL).
CREATE TABLE notification_settings (
    user_id     BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    target_id   BIGINT  NOT NULL,
    level       TEXT,
    muted       BIGINT  NOT NULL DEFAULT 0,
    muted_until BIGINT,
    PRIMARY KEY (user_id, target_id)
);
