-- What the site's SIP switch authenticates phones against: the read-only view
-- `switch_subscriber (username, domain, ha1, ha1b)` in the shape Kamailio's auth_db reads with
-- `calculate_ha1 = 0`. ha1 = MD5(username:realm:password), ha1b =
-- MD5(username@realm:realm:password); no plain password column. See
-- config/switch/kamailio/README.md and the PostgreSQL flavour of this migration.
CREATE TABLE switch_realms (
    switch TEXT PRIMARY KEY,
    realm  TEXT NOT NULL
);

-- SQLite has no md5(), so sipdm writes every row: `dm-<mac>` per device and realm (`kind`
-- `device`) and each DN per realm (`kind` `dn`), at start and when devices are added.
CREATE TABLE switch_credentials (
    username TEXT NOT NULL,
    domain   TEXT NOT NULL,
    ha1      TEXT NOT NULL,
    ha1b     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    PRIMARY KEY (username, domain)
);

CREATE VIEW switch_subscriber AS
    SELECT username, domain, ha1, ha1b FROM switch_credentials;

-- A DN whose password changes or which is deleted loses its rows at once (the switch then
-- refuses it until sipdm writes the new HA1) rather than keep accepting the old password.
CREATE TRIGGER switch_credentials_dn_password AFTER UPDATE OF password ON dns
BEGIN
    DELETE FROM switch_credentials WHERE kind = 'dn' AND username = old.number;
END;
CREATE TRIGGER switch_credentials_dn_delete AFTER DELETE ON dns
BEGIN
    DELETE FROM switch_credentials WHERE kind = 'dn' AND username = old.number;
END;
CREATE TRIGGER switch_credentials_device_delete AFTER DELETE ON devices
BEGIN
    DELETE FROM switch_credentials WHERE kind = 'device' AND username = 'dm-' || old.mac;
END;
