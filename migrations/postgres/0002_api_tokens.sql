-- Bearer tokens (`taskplane token create`). Only the SHA-256 of each token
-- is kept; `domains` is a JSON array, empty for every domain.
CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    domains    TEXT NOT NULL,
    sha256     TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
