-- An account's own session defaults and maxima, set by an admin (JSON:
-- {"defaults": {...}, "maxima": {...}}); NULL: the operator's policy.
ALTER TABLE users ADD COLUMN session_policy TEXT;
