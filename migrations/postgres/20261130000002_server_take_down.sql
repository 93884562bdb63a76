-- A server taken down by a platform admin: hidden from its members (as if it did not exist),
-- kept whole until restored. Times are Unix milliseconds.
ALTER TABLE servers ADD COLUMN taken_down_at BIGINT;
ALTER TABLE servers ADD COLUMN taken_down_reason TEXT;
