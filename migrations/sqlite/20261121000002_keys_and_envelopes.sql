-- Signal protocol keys of each device, and the per-device envelope queue.
-- Public keys and signatures are stored as uploaded (libsignal serialization).

CREATE TABLE device_keys (
    user_id          INTEGER NOT NULL,
    device_id        INTEGER NOT NULL,
    registration_id  INTEGER NOT NULL,
    identity_key     BLOB    NOT NULL,
    signed_id        INTEGER NOT NULL,
    signed_key       BLOB    NOT NULL,
    signed_sig       BLOB    NOT NULL,
    kyber_id         INTEGER NOT NULL,
    kyber_key        BLOB    NOT NULL,
    kyber_sig        BLOB    NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);

-- One-time prekeys: kind 0 = EC, 1 = Kyber (with signature). Each is handed out once.
CREATE TABLE one_time_prekeys (
    user_id    INTEGER NOT NULL,
    device_id  INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB    NOT NULL,
    signature  BLOB,
    PRIMARY KEY (user_id, device_id, kind, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);

CREATE TABLE envelopes (
    id               INTEGER PRIMARY KEY,
    user_id          INTEGER NOT NULL,
    device_id        INTEGER NOT NULL,
    sender_user_id   INTEGER NOT NULL,
    sender_device_id INTEGER NOT NULL,
    kind             INTEGER NOT NULL,
    content          BLOB    NOT NULL,
    created_at       INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);
CREATE INDEX envelopes_queue ON envelopes (user_id, device_id, id);
