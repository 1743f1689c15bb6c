#!/usr/bin/env bash
# Change propagation: how long a write through one sipdm instance takes to show in the files
# a second instance serves, both on one PostgreSQL database (change events over LISTEN/NOTIFY).
# In the same run, for comparison: the same write read back from the instance that took it,
# and raw PostgreSQL LISTEN/NOTIFY delivery between two connections (psycopg2).
#
# Two release `sipdm serve` processes, A and B, on 127.0.0.1 share a fresh database
# (`sipdm_bench_changes`, dropped at the end). DEVICES Yealink phones and 2 x DEVICES DNs are
# created through A's admin API and each phone's file is fetched from A and from B (both cache
# it). Then, WRITES times: assign a phone a different free DN through A's admin API
# (`POST /devices/{mac}/assign`), and poll B's provisioning URL for that phone's file (one
# keep-alive connection, POLL_MS sleep between requests, 5 s bound per write) until its
# `account.1.user_name` is the new DN. The latency is from the write's HTTP response (and,
# second column, from sending the write) to the first response of B that has the new DN;
# `1st poll` counts the writes already served new by the first fetch after the response.
# sipdm publishes the change (NOTIFY) before it answers the write, so most are: the figure is
# then one fetch with a re-render, an upper bound on the propagation itself. The baseline
# measures from the return of `SELECT pg_notify(...)` (autocommit) to select() on the
# listening connection.
#
# Usage: testbed/bench/change_propagation.sh [writes]   (default 200)
#   env: DEVICES (20), POLL_MS (1), PG_URL (postgres://postgres@127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/../.."
WRITES=${1:-200}
DEVICES=${DEVICES:-20}
POLL_MS=${POLL_MS:-1}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
DB=sipdm_bench_changes
PY=/usr/bin/python3 # Debian's python3-psycopg2 is for the system interpreter
$PY -c 'import psycopg2' 2>/dev/null || { echo "installing python3-psycopg2"; apt-get install -y -qq python3-psycopg2 >/dev/null; }
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
cargo build --release -q

WORK=$(mktemp -d)
pids=()
psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/postgres" -v ON_ERROR_STOP=1 -qtAc "$1"; }
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    psql_admin "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
psql_admin "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql_admin "CREATE DATABASE $DB" >/dev/null
STORE="$PG_URL/$DB"

# One configuration per instance: ports differ; store, secret and admin token are shared, as
# a deployment's pair has them.
start() { # name http-port sip-port
    cat > "$WORK/$1.toml" <<TOML
[server]
http = "127.0.0.1:$2"
sip = ["127.0.0.1:$3"]
admin-token = "bench"
secret = "bench-secret"
[store]
url = "$STORE"
[dm]
fs_url = "http://127.0.0.1:$2/fs"
[[sites]]
name = "site1"
sip-servers = ["127.0.0.1:5060"]
[[switches]]
name = "SIPS1"
site = "site1"
address = "127.0.0.1:5060"
dn-ranges = ["1000-1999"]
TOML
    RUST_LOG=warn target/release/sipdm --config "$WORK/$1.toml" serve > "$WORK/$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "sipdm $1 did not start:"; cat "$WORK/$1.log"; exit 1
}
# A first: it runs the migrations on the empty database; B then finds them done.
start A 18090 15070
start B 18091 15071

echo "sipdm $(git rev-parse --short HEAD), $(nproc) cores, PostgreSQL $(psql "$STORE" -tAc 'SHOW server_version'), $WRITES writes over $DEVICES phones, poll every $POLL_MS ms"
$PY - "$WRITES" "$DEVICES" "$POLL_MS" "$STORE" <<'PY'
import http.client, json, math, select, sys, time

import psycopg2
import psycopg2.extensions

writes, devices, poll_ms, store = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
A, B = 18090, 18091
TIMEOUT = 5.0
UA = "Yealink SIP-T46S 66.86.0.15"
now = time.perf_counter

class Http:
    """One keep-alive connection to an instance (reconnects if the server closes it)."""
    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    def req(self, method, path, body=None):
        headers = {"User-Agent": UA, "Authorization": "Bearer bench"}
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            try:
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                return r.status, r.read().decode()
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
    def api(self, method, path, body=None):
        status, text = self.req(method, "/fs/dm/api/v1" + path, body)
        if status >= 300:
            sys.exit(f"{method} {path} on :{self.port}: {status} {text}")
        return text
    def file(self, mac):
        status, text = self.req("GET", f"/fs/dm/prov/{mac}.cfg")
        if status != 200:
            sys.exit(f"{mac}.cfg on :{self.port}: {status} {text}")
        return text

a_api, a_prov, b_prov = Http(A), Http(A), Http(B)
macs = [f"001565{0xb000 + i:06x}" for i in range(devices)]
# Phone i holds 1000+i or 1000+devices+i, alternately: every write moves it to a free DN.
for n in range(1000, 1000 + 2 * devices):
    a_api.api("POST", "/dns", {"number": str(n), "password": f"pw{n}"})
held = {}
for i, mac in enumerate(macs):
    a_api.api("POST", "/devices", {"mac": mac, "model": "SIP-T46S", "dn": str(1000 + i)})
    held[mac] = 1000 + i
for prov in (a_prov, b_prov):
    for mac in macs:
        body = prov.file(mac)
        assert f"account.1.user_name = {held[mac]}" in body, body

def propagation(reader, label):
    """Per write: (from the response, from the send, polls, the write's own time), seconds."""
    out, timeouts = [], 0
    for k in range(writes):
        mac = macs[k % devices]
        i = k % devices
        dn = 1000 + devices + i if held[mac] == 1000 + i else 1000 + i
        want = f"account.1.user_name = {dn}"
        sent = now()
        a_api.api("POST", f"/devices/{mac}/assign", {"dn": str(dn)})
        answered = now()
        held[mac] = dn
        polls = 0
        while True:
            body = reader.file(mac)
            polls += 1
            t = now()
            if want in body:
                out.append((t - answered, t - sent, polls, answered - sent))
                break
            if t - answered > TIMEOUT:
                timeouts += 1
                print(f"  {label}: {mac} not showing {dn} after {TIMEOUT:.0f} s", file=sys.stderr)
                break
            time.sleep(poll_ms / 1000)
    return out, timeouts

def listen_notify():
    """Raw PostgreSQL: NOTIFY on one connection, select() on another that LISTENs."""
    talker = psycopg2.connect(store)
    listener = psycopg2.connect(store)
    for c in (talker, listener):
        c.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    listener.cursor().execute("LISTEN bench_changes")
    cur = talker.cursor()
    payload = json.dumps({"scope": "public", "origin": "0123456789abcdef",
                          "changes": [{"kind": "device", "key": macs[0]}]})
    out, timeouts = [], 0
    for k in range(writes):
        sent = now()
        cur.execute("SELECT pg_notify('bench_changes', %s)", (f"{k} {payload}",))
        answered = now()
        got = None
        while got is None:
            left = TIMEOUT - (now() - answered)
            if left <= 0 or not select.select([listener], [], [], left)[0]:
                timeouts += 1
                break
            listener.poll()
            while listener.notifies:
                n = listener.notifies.pop(0)
                if n.payload.split(" ", 1)[0] == str(k):
                    got = now()
        if got is not None:
            out.append((got - answered, got - sent, 0, answered - sent))
    talker.close()
    listener.close()
    return out, timeouts

# Warm-up (not counted): connections, first renders of the new DNs' files.
saved = writes
writes = min(devices, saved)
propagation(b_prov, "warm-up")
writes = saved

results = [
    ("PostgreSQL LISTEN/NOTIFY (baseline)", listen_notify()),
    ("write on A, read B (change event)", propagation(b_prov, "A->B")),
    ("write on A, read A (same instance)", propagation(a_prov, "A->A")),
]

def pct(xs, p):
    xs = sorted(xs)  # nearest rank
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]

def ms(x):
    return f"{x * 1000:8.2f}"

print()
print(f"{'latency, ms (from the write response)':40} {'n':>4} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'>1 s':>5} {'lost':>5} | {'p50 from send':>13} {'1st poll':>8}")
for label, (rows, timeouts) in results:
    lat = [r[0] for r in rows]
    sent = [r[1] for r in rows]
    first = sum(1 for r in rows if r[2] == 1) if rows and rows[0][2] else "-"
    over = sum(1 for x in lat if x > 1.0) + timeouts
    if not lat:
        print(f"{label:40} {0:4}  (all {timeouts} lost)")
        continue
    print(f"{label:40} {len(lat):4} {ms(pct(lat, 50))} {ms(pct(lat, 95))} {ms(pct(lat, 99))} {ms(max(lat))} {over:5} {timeouts:5} | {ms(pct(sent, 50)):>13} {first:8}")
writes_rows = results[1][1][0] + results[2][1][0]
wt = [r[3] for r in writes_rows]
print(f"{'the write itself (POST assign on A)':40} {len(wt):4} {ms(pct(wt, 50))} {ms(pct(wt, 95))} {ms(pct(wt, 99))} {ms(max(wt))}")
poll = []
for _ in range(200):
    t = now(); b_prov.file(macs[0]); poll.append(now() - t)
print(f"{'one cached file fetch from B (poll cost)':40} {len(poll):4} {ms(pct(poll, 50))} {ms(pct(poll, 95))} {ms(pct(poll, 99))} {ms(max(poll))}")
base, cross, same = results[0][1][0], results[1][1][0], results[2][1][0]
if cross and same:
    c50, s50 = pct([r[0] for r in cross], 50), pct([r[0] for r in same], 50)
    print(f"\nA->B p50 - A->A p50: {(c50 - s50) * 1000:+.2f} ms (what the second instance adds over the one that took the write)")
if base and cross:
    b50, c50 = pct([r[0] for r in base], 50), pct([r[0] for r in cross], 50)
    bs, cs = pct([r[1] for r in base], 50), pct([r[1] for r in cross], 50)
    print(f"A->B p50 / raw NOTIFY p50: {c50 / b50:.1f}x from the response ({c50*1000:.2f} vs {b50*1000:.2f} ms), "
          f"{cs / bs:.1f}x from the send ({cs*1000:.2f} vs {bs*1000:.2f} ms); poll interval {poll_ms} ms + one fetch")
PY
