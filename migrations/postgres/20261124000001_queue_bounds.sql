-- Bounds of the per-device envelope queues: how many envelopes and bytes each holds (kept
-- with every insert and delete, so that a send checks the cap without counting the queue),
-- and an index for the housekeeping job that deletes envelopes past their expiry.

CREATE TABLE envelope_queues (
    user_id   BIGINT  NOT NULL,
    device_id BIGINT  NOT NULL,
    envelopes BIGINT  NOT NULL,
    bytes     BIGINT  NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
);

INSERT INTO envelope_queues (user_id, device_id, envelopes, bytes)
SELECT user_id, device_id, COUNT(*), SUM(LENGTH(content)) FROM envelopes GROUP BY user_id, device_id;

CREATE INDEX envelopes_created ON envelopes (created_at);
