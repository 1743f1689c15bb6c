-- sipdm schema, PostgreSQL flavour. Times are Unix milliseconds (BIGINT) so that the same queries
-- run through sqlx's Any driver on SQLite and PostgreSQL alike.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('version', '1');

CREATE TABLE sites (
    name        TEXT PRIMARY KEY,
    fs_url      TEXT,
    sip_servers TEXT NOT NULL DEFAULT ''
);

CREATE TABLE switches (
    name      TEXT PRIMARY KEY,
    site      TEXT NOT NULL REFERENCES sites(name),
    address   TEXT NOT NULL,
    dn_ranges TEXT NOT NULL DEFAULT '',
    peer      TEXT
);

CREATE TABLE profiles (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    template         TEXT,
    preferred_server TEXT,
    peer_server      TEXT,
    params           TEXT NOT NULL DEFAULT '{}',
    allow_reassign   BIGINT NOT NULL DEFAULT 0,
    check_sync_event TEXT
);

CREATE TABLE dns (
    number                TEXT PRIMARY KEY,
    password              TEXT NOT NULL,
    switch                TEXT,
    authenticate_requests TEXT NOT NULL DEFAULT 'register,invite',
    display_name          TEXT
);

CREATE TABLE devices (
    mac           TEXT PRIMARY KEY,
    vendor        TEXT,
    model         TEXT,
    profile       TEXT REFERENCES profiles(name),
    dn            TEXT UNIQUE REFERENCES dns(number),
    state         TEXT NOT NULL DEFAULT 'unassigned',
    first_seen_ip TEXT,
    last_seen_ip  TEXT,
    first_seen_at BIGINT,
    last_seen_at  BIGINT,
    user_agent    TEXT,
    firmware      TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE audit (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    mac    TEXT NOT NULL,
    dn     TEXT,
    action TEXT NOT NULL,
    actor  TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_mac ON audit(mac);

CREATE TABLE bindings (
    aor         TEXT NOT NULL,
    contact     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (aor, contact)
);
