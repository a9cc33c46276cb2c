-- The login token an event token was issued under: the event stream it opens
-- ends when that login ends (logout, expiry). NULL for tokens issued before.
ALTER TABLE event_tokens ADD COLUMN login_token_hash TEXT;
