#!/usr/bin/env bash
# REGISTER throughput: sipp with unique AORs over UDP in 15 s steps, against sipdm and against
# Kamailio (usrloc in memory) in the same run; then the same with digest authentication on both.
# A step passes when sipp reports 0 failed calls (its exit status 0). Prints, per target and
# mode, the highest passing rate, and the ratios.
#
# Usage: testbed/bench/register_vs_kamailio.sh [STEP_SECONDS] [RATES...]
#   default: 15 s steps at 5000 10000 15000 20000 25000 30000 35000
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || true
STEP=${1:-15}; shift || true
RATES=("$@"); [ ${#RATES[@]} -gt 0 ] || RATES=(5000 10000 15000 20000 25000 30000 35000)
USERS=${USERS:-50000}
for t in sipp kamailio; do command -v $t >/dev/null || { apt-get install -y -qq sip-tester kamailio >/dev/null; }; done
cargo build --release -q
WORK=$(mktemp -d); chmod 755 "$WORK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$WORK/kam.pid" ] && kill "$(cat "$WORK/kam.pid")" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# Users: 1000000.. with password "pw<user>" (Kamailio derives the same with pw$fU).
python3 - "$WORK" "$USERS" <<'PY'
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
        f.write(f"{u},pw{u},,AUTH\n")
PY

start_sipdm() { # $1 = authenticate-requests value ("" or "register")
    sed "s/,AUTH$/,$1/" "$WORK/dns.csv" > "$WORK/dns-$2.csv"
    cat > "$WORK/sipdm-$2.toml" <<TOML
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:$3"]
admin-token = "bench"
secret = "bench"
[store]
url = "sqlite://$WORK/sipdm-$2.db"
TOML
    target/release/sipdm --config "$WORK/sipdm-$2.toml" dn import "$WORK/dns-$2.csv" >/dev/null
    RUST_LOG=warn target/release/sipdm --config "$WORK/sipdm-$2.toml" serve > "$WORK/sipdm-$2.log" 2>&1 &
    pids+=($!)
    sleep 2
}
start_kamailio() { # $1 = port, $2 = extra -A
    kamailio -f testbed/bench/kamailio/kamailio.cfg -A "LISTEN=udp:127.0.0.1:$1" $2 -P "$WORK/kam.pid" -m 512 -M 32 -w "$WORK" 2> "$WORK/kam.log"
    sleep 1
}
stop_kamailio() { kill "$(cat "$WORK/kam.pid")" 2>/dev/null || true; sleep 1; }

ramp() { # $1 = label, $2 = port → prints best rate
    # A step passes when sipp reports 0 failed registrations AND the rate was really offered:
    # all calls done within 10 % of the step's length (a saturated sipp or server otherwise
    # just takes longer with no failure).
    local best=0
    for r in "${RATES[@]}"; do
        local n=$((r * STEP))
        local t0 t1 ok=0
        t0=$(date +%s.%N)
        if sipp 127.0.0.1:"$2" -sf testbed/sipp/register_load.xml -inf "$WORK/users.csv" -r "$r" -m "$n" \
            -buff_size 4194304 -l 8000 -max_socket 100 -timeout $((STEP * 3))s -timeout_error -nostdin \
            >/dev/null 2>&1 </dev/null; then ok=1; fi
        t1=$(date +%s.%N)
        local achieved
        achieved=$(python3 -c "print(int($n / ($t1 - $t0)))")
        if [ $ok = 1 ] && python3 -c "import sys; sys.exit(0 if $achieved >= 0.9 * $r else 1)"; then
            echo "  $1 $r/s: 0 failed, achieved $achieved/s" >&2; best=$r
        else
            echo "  $1 $r/s: $([ $ok = 1 ] && echo 'rate not reached' || echo 'failures'), achieved $achieved/s" >&2; break
        fi
    done
    echo "$best"
}
echo "== without authentication ==" >&2
start_kamailio 25060 ""
K0=$(ramp kamailio 25060); stop_kamailio
start_sipdm "" noauth 25070
S0=$(ramp sipdm 25070)
echo "== with digest authentication (401, then the authenticated retry) ==" >&2
start_kamailio 25061 "-A WITH_AUTH"
K1=$(ramp kamailio-auth 25061); stop_kamailio
start_sipdm "register" auth 25071
S1=$(ramp sipdm-auth 25071)
python3 -c "
k0,s0,k1,s1,first=$K0,$S0,$K1,$S1,${RATES[0]}
def ratio(s, k):
    # A side that passed no step is below the first rate: the ratio is a lower bound then.
    if k: return f'{s/k:.2f}'
    return f'> {s/first:.2f} (kamailio passed no step)' if s else 'n/a (neither passed a step)'
print(f'no auth:   sipdm {s0}/s, kamailio {k0}/s, ratio {ratio(s0, k0)}')
print(f'with auth: sipdm {s1}/s, kamailio {k1}/s, ratio {ratio(s1, k1)}')
print('(highest rate with 0 failed registrations, ${STEP} s steps, sipp -buff_size 4194304, ${USERS} unique AORs)')"
