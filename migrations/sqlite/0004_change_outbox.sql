-- Change events between the processes sharing one SQLite file (the server and the CLI): each
-- write records what it changed in this outbox, in its own transaction, and the other process
-- reads the rows it did not write. (PostgreSQL sends the same events with NOTIFY inside the
-- transaction instead.) Old rows are pruned by the writers.
CREATE TABLE changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    origin  TEXT NOT NULL,
    payload TEXT NOT NULL
);
