-- Fetch receipts: per device and file name, the ETag of the file it last downloaded, when,
-- from where and as whom (User-Agent, firmware), and the URL base and host it used (a file
-- rendered without a configured fs_url depends on them). A change makes a device out of date
-- when the file it would be served now differs from its receipt; check-sync campaigns wait
-- for the receipt to match again. `renderer` names the configuration that rendered the file
-- (its site's fs_url, servers and switches): only an instance rendering the same way judges
-- the receipt, so site 2's phones are not compared with site 1's files.
CREATE TABLE receipts (
    mac        TEXT NOT NULL REFERENCES devices(mac) ON DELETE CASCADE,
    file       TEXT NOT NULL,
    etag       TEXT NOT NULL,
    fetched_at BIGINT NOT NULL,
    ip         TEXT NOT NULL,
    host       TEXT,
    base_url   TEXT,
    user_agent TEXT,
    firmware   TEXT,
    renderer   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (mac, file)
);
