-- A voice channel's cap on participants (0: none beyond the SFU's own).
ALTER TABLE channels ADD COLUMN user_limit BIGINT NOT NULL DEFAULT 0;
