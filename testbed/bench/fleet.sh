#!/usr/bin/env bash
# IVR provisioning of a whole switch: `phone-sim fleet --count N` (default 2000) against one
# sipdm (SQLite, built-in IVR, sipdm as the DNs' registrar too). Prints the time from start
# until every phone is registered with its DN, and sipdm's CPU time and peak RSS.
# Usage: testbed/bench/fleet.sh [COUNT] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-2000}
CONC=${2:-1000}
ulimit -n 65536 2>/dev/null || true
cargo build --release -q -p sipdm -p testbed
WORK=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cat > "$WORK/sipdm.toml" <<TOML
[server]
http = "127.0.0.1:28080"
sip = ["127.0.0.1:25080"]
admin-token = "bench"
secret = "bench"
[store]
url = "sqlite://$WORK/sipdm.db"
[ivr]
number = "8800"
[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
# Every simulated phone fetches from 127.0.0.1, like a site behind one NAT, and none is known
# before its first fetch: a roll-out of more new phones than max-unknown-macs-per-source
# behind one address, so that address is trusted.
[prov-security]
trusted-networks = ["127.0.0.0/8"]
TOML
python3 -c "
for i in range($COUNT): print(f'{1000+i},pw{1000+i}')" > "$WORK/dns.csv"
target/release/sipdm --config "$WORK/sipdm.toml" dn import "$WORK/dns.csv" >/dev/null
RUST_LOG=warn target/release/sipdm --config "$WORK/sipdm.toml" serve > "$WORK/sipdm.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:28080/healthz >/dev/null && break; sleep 0.2; done
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks)
start=$(date +%s.%N)
target/release/phone-sim fleet --count "$COUNT" --concurrency "$CONC" --prov-url http://127.0.0.1:28080/fs/dm/prov --quiet --fleet-timeout 300 | tee "$WORK/fleet.out"
end=$(date +%s.%N)
t1=$(ticks)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
bound=$(curl -sf -H 'Authorization: Bearer bench' "http://127.0.0.1:28080/fs/dm/api/v1/bindings" | python3 -c "import json,sys; b=json.load(sys.stdin); print(sum(1 for x in b if x['aor'] != 'gcti_provisioning'))")
python3 -c "
wall=$end-$start; cpu=($t1-$t0)/$hz
print(f'{$COUNT} phones (concurrency {$CONC}): all registered with their DNs in {wall:.1f} s; DN bindings {$bound}; sipdm CPU {cpu:.1f} s ({cpu/wall*100:.0f}% of one core), peak RSS {$rss/1024:.0f} MiB')"
