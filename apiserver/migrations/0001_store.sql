-- Every live object, as the JSON the API serves (resourceVersion included).
CREATE TABLE objects (
    resource  TEXT    NOT NULL, -- "<group>/<plural>", "core/namespaces"
    namespace TEXT    NOT NULL, -- "" for cluster-scoped objects
    name      TEXT    NOT NULL,
    rv        INTEGER NOT NULL,
    body      BLOB    NOT NULL,
    PRIMARY KEY (resource, namespace, name)
) WITHOUT ROWID;

-- The log of writes: every write is one row here, and the trigger below
-- applies it to `objects` in the same transaction, so that a batch of writes
-- is one INSERT statement. The newest rows are kept as the watch history, so
-- that a watch resumes across a restart; older ones are pruned.
CREATE TABLE events (
    rv        INTEGER PRIMARY KEY,
    resource  TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    type      TEXT    NOT NULL, -- ADDED, MODIFIED, DELETED
    body      BLOB    NOT NULL
);

CREATE TRIGGER events_apply AFTER INSERT ON events
BEGIN
    DELETE FROM objects
     WHERE NEW.type = 'DELETED'
       AND resource = NEW.resource AND namespace = NEW.namespace AND name = NEW.name;
    INSERT OR REPLACE INTO objects (resource, namespace, name, rv, body)
    SELECT NEW.resource, NEW.namespace, NEW.name, NEW.rv, NEW.body
     WHERE NEW.type != 'DELETED';
END;

-- History older than "history_keep" resource versions is dropped as new
-- events come in, a row or so per write, inside the same statement.
CREATE TRIGGER events_prune AFTER INSERT ON events
BEGIN
    DELETE FROM events
     WHERE rv <= NEW.rv - (SELECT value FROM meta WHERE key = 'history_keep');
END;

-- "history_keep": how many resource versions of history `events` retains;
-- "history_floor": every event newer than this is in `events` (at least).
-- The newest resourceVersion is the newest event's, never pruned.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
