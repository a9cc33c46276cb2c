-- Users and their login tokens. Times are Unix seconds; tokens are stored only as SHA-256 hashes.
CREATE TABLE users (
    id               TEXT    PRIMARY KEY,
    email            TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    is_admin         BOOLEAN NOT NULL DEFAULT FALSE,
    can_use_internal BOOLEAN NOT NULL DEFAULT FALSE,
    max_sessions     BIGINT,
    created_at       BIGINT  NOT NULL
);

CREATE TABLE auth_tokens (
    token_hash   TEXT   PRIMARY KEY,
    user_id      TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX auth_tokens_user_id ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expires_at ON auth_tokens (expires_at);

-- Single-use tokens for EventSource, which cannot send headers.
CREATE TABLE event_tokens (
    token_hash TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
