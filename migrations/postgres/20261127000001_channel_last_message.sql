-- A channel's last message is read from its messages' index (channel_id, id): sends no longer
-- write the channel's row, so on PostgreSQL they hold it shared and do not wait on each other.
ALTER TABLE channels DROP COLUMN last_message_id;
