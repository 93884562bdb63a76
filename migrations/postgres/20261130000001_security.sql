-- Security events in the platform audit log, what is kept about a session's client, and
-- platform bans. Times are Unix milliseconds.

-- info (staff actions, rotations), warning (failed or throttled logins, bans), critical
-- (a refresh token used twice: a stolen token).
ALTER TABLE platform_audit ADD COLUMN severity TEXT NOT NULL DEFAULT 'info';
-- The keyed hash of the client address (never the address).
ALTER TABLE platform_audit ADD COLUMN ip_hash TEXT;
CREATE INDEX platform_audit_ip ON platform_audit (ip_hash);

-- The client of a session as last seen (login or refresh): its address sealed with the key
-- file's data key (erased after the retention setting) and its fingerprint (keyed hash of
-- address and user agent, which a ban can name).
ALTER TABLE sessions ADD COLUMN ip_sealed TEXT;
ALTER TABLE sessions ADD COLUMN ip_seen_at BIGINT;
ALTER TABLE sessions ADD COLUMN fingerprint TEXT;

-- Platform bans: an account (fingerprint NULL) or a client fingerprint (user_id: the account
-- whose client it was); permanent (expires_at NULL)
-- or until expires_at.
CREATE TABLE platform_bans (
    id          BIGINT  PRIMARY KEY,
    user_id     BIGINT,
    fingerprint TEXT,
    reason      TEXT,
    created_by  BIGINT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    CHECK (user_id IS NOT NULL OR fingerprint IS NOT NULL)
);
CREATE INDEX platform_bans_user ON platform_bans (user_id);
CREATE INDEX platform_bans_fingerprint ON platform_bans (fingerprint);
