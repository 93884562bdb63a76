-- Devices the server cannot forge: each user's signed device list (its latest version, kept
-- exactly as signed), the recovery backup (opaque to the server), whether each device's keys
-- are in the list (linked) or not (pending), and the link requests of pending devices.
-- Times are Unix milliseconds.

CREATE TABLE account_identities (
    user_id     BIGINT  PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    account_key BYTEA   NOT NULL,
    list        BYTEA   NOT NULL,
    signature   BYTEA   NOT NULL,
    version     BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE recovery_backups (
    user_id    BIGINT  PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed     BYTEA   NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- 1 when the user's current list names this device with this identity key; only linked
-- devices receive once a user has a list.
ALTER TABLE device_keys ADD COLUMN linked BIGINT NOT NULL DEFAULT 0;

-- One open request per pending device, with the answer of a linked device once one came.
CREATE TABLE link_requests (
    user_id       BIGINT  NOT NULL,
    device_id     BIGINT  NOT NULL,
    pake          BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    answer_device BIGINT,
    answer_pake   BYTEA,
    answer_sealed BYTEA,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);
CREATE INDEX link_requests_expires ON link_requests (expires_at);
