#!/usr/bin/env bash
# CPU time per digest registration (401, authenticated REGISTER, durable binding) at a fixed
# rate, for sipdm and for Kamailio: the servers' own user+system time from /proc over the run,
# divided by the registrations. Unlike a ramp to saturation this barely depends on what else
# the machine is doing, so it is what to compare when changing the REGISTER path.
#
# Usage: testbed/bench/register_cpu.sh [RATE] [SECONDS]     (default 15000/s for 10 s)
# Prints, per server: µs of CPU per registration, peak RSS (sipdm), and sipp's own CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${1:-15000}; SECS=${2:-10}; N=$((RATE * SECS))
for t in sipp kamailio; do command -v $t >/dev/null || apt-get install -y -qq sip-tester kamailio >/dev/null; done
cargo build --release -q
WORK=$(mktemp -d); chmod 755 "$WORK"
SP=""
cleanup() { [ -n "$SP" ] && kill "$SP" 2>/dev/null; [ -f "$WORK/kam.pid" ] && kill "$(cat "$WORK/kam.pid")" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
python3 - "$WORK" 60000 <<'PY'
import sys
work, n = sys.argv[1], int(sys.argv[2])
with open(f"{work}/users.csv", "w") as f:
    f.write("SEQUENTIAL\n")
    for i in range(n):
        u = 1000000 + i
        f.write(f"{u};pw{u};[authentication username={u} password=pw{u}]\n")
with open(f"{work}/dns.csv", "w") as f:
    for i in range(n):
        u = 1000000 + i
        f.write(f"{u},pw{u},,register\n")
PY
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/"$p"/stat))); done; echo $t; }
load() { # $1 = port → sipp's CPU seconds
    /usr/bin/time -f "%U %S" -o "$WORK/sipp.time" sipp 127.0.0.1:"$1" -sf testbed/sipp/register_load.xml \
        -inf "$WORK/users.csv" -r "$RATE" -m "$N" -buff_size 4194304 -l 8000 -max_socket 100 \
        -timeout $((SECS * 4))s -timeout_error -nostdin >/dev/null 2>&1 </dev/null || echo "  (sipp reported failures)" >&2
    awk '{print $1 + $2}' "$WORK/sipp.time"
}
hz=$(getconf CLK_TCK)

cat > "$WORK/sipdm.toml" <<TOML
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:25081"]
admin-token = "bench"
secret = "bench"
[store]
url = "sqlite://$WORK/sipdm.db"
TOML
target/release/sipdm --config "$WORK/sipdm.toml" dn import "$WORK/dns.csv" >/dev/null
RUST_LOG=warn target/release/sipdm --config "$WORK/sipdm.toml" serve > "$WORK/sipdm.log" 2>&1 &
SP=$!; sleep 2
t0=$(ticks $SP); s=$(load 25081); t1=$(ticks $SP)
rss=$(awk '/VmHWM/ {print $2 / 1024}' /proc/$SP/status)
kill $SP; wait $SP 2>/dev/null || true; SP=""
python3 -c "print(f'sipdm:    {($t1-$t0)/$hz/$N*1e6:.1f} µs CPU per registration, peak RSS {float($rss):.0f} MiB, sipp {float($s)/$N*1e6:.1f} µs ($N registrations at $RATE/s)')"

kamailio -f testbed/bench/kamailio/kamailio.cfg -A "LISTEN=udp:127.0.0.1:25082" -A WITH_AUTH -P "$WORK/kam.pid" \
    -m 512 -M 32 -w "$WORK" 2> "$WORK/kam.log"
sleep 1
kpids=$(pgrep -f "kamailio -f testbed/bench/kamailio" | tr '\n' ' ')
t0=$(ticks $kpids); s=$(load 25082); t1=$(ticks $kpids)
python3 -c "print(f'kamailio: {($t1-$t0)/$hz/$N*1e6:.1f} µs CPU per registration, sipp {float($s)/$N*1e6:.1f} µs')"
