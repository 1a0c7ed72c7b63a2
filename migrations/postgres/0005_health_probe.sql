-- One row each replica rewrites every second to prove that the database
-- takes writes; its health check says NOT_SERVING when it cannot.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at BIGINT NOT NULL
);
