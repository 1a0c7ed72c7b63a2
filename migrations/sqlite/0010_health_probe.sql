-- One row the server rewrites every second to prove that the database takes
-- writes; its health check says NOT_SERVING when it cannot.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
