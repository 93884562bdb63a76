-- Guest accounts: an invite made for guests (guest_ttl_secs set) creates, for whoever redeems
-- it, an account that ends guest_expires_at (Unix milliseconds) and is then removed with its
-- data by the housekeeping job.
ALTER TABLE invites ADD COLUMN guest_ttl_secs INTEGER;
ALTER TABLE users ADD COLUMN guest_expires_at INTEGER;
CREATE INDEX users_guest_expires ON users (guest_expires_at);
