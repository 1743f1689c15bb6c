#!/usr/bin/env bash
# A check-sync campaign over a fleet: N simulated Yealink phones (default 2000), each on its
# own loopback address (127.1.x.y, so each is its own source), registered to sipdm (SQLite, the
# registrar) and following every check-sync (re-fetch, register again). A profile edit makes
# all of them out of date; the automatic campaign brings them back at the configured rate.
# Measured: wall time from the edit to the campaign's end, sipdm's CPU seconds meanwhile, the
# peak check-syncs per second as sent, and the phones' own count. The same run then repeats
# with the rate lifted (10 000/s: the unpaced burst an operator's "resync all" is) as the
# baseline, against the same phones.
#
# Usage: testbed/bench/campaign.sh [PHONES] [RATE_PER_SITE]   (defaults: 2000 and the default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
RATE=${2:-20}
ulimit -n 65536 2>/dev/null || true
cargo build --release -q --bin sipdm && cargo build --release -q -p testbed --bin phone-sim
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=18095
SIP=15095
API="http://127.0.0.1:$PORT/fs/dm/api/v1"

config() { # $1: rate per site
cat > "$WORK/sipdm.toml" <<TOML
[server]
http = "127.0.0.1:$PORT"
sip = ["127.0.0.1:$SIP"]
admin-token = "bench"
secret = "bench"
[store]
url = "sqlite://$WORK/sipdm.db"
[campaigns]
mode = "auto"
settle-seconds = 2
rate-per-site = $1
wave-timeout-seconds = 60
TOML
}

start() {
  RUST_LOG=warn target/release/sipdm --config "$WORK/sipdm.toml" serve >> "$WORK/sipdm.log" 2>&1 &
  SIPDM=$!; pids+=($SIPDM)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.1; done
  echo "sipdm did not start"; cat "$WORK/sipdm.log"; exit 1
}

cpu() { # utime+stime of sipdm, seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$SIPDM/stat"
}

config "$RATE"
start
python3 - "$API" "$N" "$WORK" <<'PY'
import json, subprocess, sys, urllib.request
api, n, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def call(method, path, body, ctype="application/json"):
    req = urllib.request.Request(api + path, data=body.encode(), method=method,
        headers={"Authorization": "Bearer bench", "Content-Type": ctype})
    return urllib.request.urlopen(req).read()
call("POST", "/profiles", json.dumps({"name": "desk", "kind": "device-management"}))
call("POST", "/dns/import", "".join(f"{1000+i},pw{1000+i}\n" for i in range(n)), "text/csv")
macs = subprocess.run(["target/release/phone-sim", "macs", "--count", str(n), "--vendor", "yealink"],
    capture_output=True, text=True, check=True).stdout.split()
rows = "".join(f"{m.split(',')[0]},T46S,desk,{1000+i}\n" for i, m in enumerate(macs))
call("POST", "/import", rows, "text/csv")
PY
# Phones boot (64 at a time) and follow check-syncs for up to 30 minutes (killed at the end).
target/release/phone-sim fleet --prov-url "http://127.0.0.1:$PORT/fs/dm/prov" --count "$N" \
  --vendor yealink --zero-touch --spread-ips --follow-seconds 1800 --fleet-timeout 1900 --quiet \
  > "$WORK/fleet.log" 2>&1 &
pids+=($!)

wait_receipts() {
  for _ in $(seq 1 1200); do
    got=$(curl -sf -H 'Authorization: Bearer bench' "$API/fleet" | python3 -c 'import json,sys; f=json.load(sys.stdin); print(f["with_receipts"], f["out_of_date"])')
    [ "${got% *}" = "$N" ] && [ "${got#* }" = 0 ] && return
    sleep 0.5
  done
  echo "phones did not all fetch: $got"; tail "$WORK/fleet.log"; exit 1
}

run() { # $1: label, $2: ntp server (the change)
  wait_receipts
  local before; before=$(cpu)
  local t0; t0=$(date +%s.%N)
  curl -sf -X PUT -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
    -d "{\"name\":\"desk\",\"kind\":\"device-management\",\"params\":\"{\\\"ntp_server\\\":\\\"$2\\\"}\"}" \
    "$API/profiles/desk" > /dev/null
  for _ in $(seq 1 3600); do
    view=$(curl -sf -H 'Authorization: Bearer bench' "$API/campaigns" | python3 -c 'import json,sys; l=json.load(sys.stdin); print(json.dumps(l[0]) if l else "")')
    if [ -n "$view" ] && [ "$(echo "$view" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" != running ]; then break; fi
    sleep 0.5
  done
  local t1; t1=$(date +%s.%N)
  local after; after=$(cpu)
  echo "$view" | python3 -c "
import json, sys
v = json.load(sys.stdin)
wall = $t1 - $t0
print(f'$1: {v[\"state\"]}: {v[\"updated\"]} of {v[\"devices\"]} phones updated, {v[\"failed\"]} failed, '
      f'{len(v[\"waves\"])} waves; wall {wall:.1f} s from the edit (settle 2 s included); '
      f'sipdm CPU {($after - $before):.1f} s; peak sent per second: site {v[\"peak_site_per_second\"]}, '
      f'source {v[\"peak_source_per_second\"]} (rate {v[\"site_rate\"]:g}/s per site, {v[\"source_rate\"]:g}/s per source)')
"
}

run "paced (rate $RATE/s per site)" "ntp1.example.test"
kill "$SIPDM"; wait "$SIPDM" 2>/dev/null || true
config 10000
start
sleep 5 # the phones' registrations are restored from the store; receipts too
run "baseline: unpaced (10000/s)" "ntp2.example.test"
