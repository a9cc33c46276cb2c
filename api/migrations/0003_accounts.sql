-- Account administration: disabled accounts, invite codes (stored only as
-- SHA-256 hashes) and the append-only audit log. Times are Unix seconds,
-- but the audit log's, which are milliseconds (its order).
ALTER TABLE users ADD COLUMN disabled_at BIGINT;

CREATE TABLE invites (
    id         TEXT   PRIMARY KEY,
    code_hash  TEXT   NOT NULL UNIQUE,
    email      TEXT,
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    used_by    TEXT,
    revoked_at BIGINT
);
CREATE INDEX invites_created_at ON invites (created_at);

CREATE TABLE audit_log (
    id       TEXT   PRIMARY KEY,
    at_ms    BIGINT NOT NULL,
    actor_id TEXT,
    action   TEXT   NOT NULL,
    target   TEXT,
    detail   TEXT   NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms, id);
