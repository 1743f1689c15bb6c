-- What the site's SIP switch authenticates phones against: the read-only view
-- `switch_subscriber (username, domain, ha1, ha1b)` in the shape Kamailio's auth_db reads with
-- `calculate_ha1 = 0` (OpenSIPS's auth_db and an Asterisk realtime view read the same columns).
-- ha1 = MD5(username:realm:password), ha1b = MD5(username@realm:realm:password); no plain
-- password leaves sipdm's tables through it. See config/switch/kamailio/README.md.
--
-- Realms: one per configured switch (`[[switches]] realm`, default the host of its address),
-- written by sipdm at start.
CREATE TABLE switch_realms (
    switch TEXT PRIMARY KEY,
    realm  TEXT NOT NULL
);

-- Rows sipdm computes itself: an unassigned device's password derives from the server secret,
-- which the database cannot apply, so sipdm writes `dm-<mac>` for every known device and realm
-- (when the device is first seen or added, and all of them at start). `kind` is `device` here;
-- on SQLite, which has no md5(), DN rows are written the same way with `kind` = `dn`.
CREATE TABLE switch_credentials (
    username TEXT NOT NULL,
    domain   TEXT NOT NULL,
    ha1      TEXT NOT NULL,
    ha1b     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    PRIMARY KEY (username, domain)
);

-- DNs are computed live from `dns`, so a DN created, imported or given a new password is what
-- the switch checks against on its next request, with nothing to keep in step.
CREATE VIEW switch_subscriber AS
    SELECT d.number AS username,
           r.realm AS domain,
           md5(d.number || ':' || r.realm || ':' || d.password) AS ha1,
           md5(d.number || '@' || r.realm || ':' || r.realm || ':' || d.password) AS ha1b
      FROM dns d
     CROSS JOIN (SELECT DISTINCT realm FROM switch_realms) r
    UNION ALL
    SELECT username, domain, ha1, ha1b FROM switch_credentials WHERE kind = 'device';

-- A deleted device's rows go with it.
CREATE FUNCTION switch_credentials_device_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM switch_credentials WHERE kind = 'device' AND username = 'dm-' || OLD.mac;
    RETURN OLD;
END $$;
CREATE TRIGGER switch_credentials_device_delete AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION switch_credentials_device_gone();
