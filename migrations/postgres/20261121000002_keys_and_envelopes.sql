-- Signal protocol keys of each device, and the per-device envelope queue.
-- Public keys and signatures are stored as uploaded (libsignal serialization).

CREATE TABLE device_keys (
    user_id          BIGINT NOT NULL,
    device_id        BIGINT NOT NULL,
    registration_id  BIGINT NOT NULL,
    identity_key     BYTEA    NOT NULL,
    signed_id        BIGINT NOT NULL,
    signed_key       BYTEA    NOT NULL,
    signed_sig       BYTEA    NOT NULL,
    kyber_id         BIGINT NOT NULL,
    kyber_key        BYTEA    NOT NULL,
    kyber_sig        BYTEA    NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);

-- One-time prekeys: kind 0 = EC, 1 = Kyber (with signature). Each is handed out once.
CREATE TABLE one_time_prekeys (
    user_id    BIGINT NOT NULL,
    device_id  BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    public_key BYTEA    NOT NULL,
    signature  BYTEA,
    PRIMARY KEY (user_id, device_id, kind, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);

CREATE TABLE envelopes (
    id               BIGINT PRIMARY KEY,
    user_id          BIGINT NOT NULL,
    device_id        BIGINT NOT NULL,
    sender_user_id   BIGINT NOT NULL,
    sender_device_id BIGINT NOT NULL,
    kind             BIGINT NOT NULL,
    content          BYTEA    NOT NULL,
    created_at       BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);
CREATE INDEX envelopes_queue ON envelopes (user_id, device_id, id);
