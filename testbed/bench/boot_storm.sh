#!/usr/bin/env bash
# Boot storm: N phones power on at once (a site's power comes back). Each fetches its file over
# HTTP and REGISTERs its DN with digest. Measured: the time from power-on until the last of the
# N phones is registered, for
#   * sipdm alone: it renders the files and is the registrar (digest, DN credentials and
#     bindings in PostgreSQL, the same server as below), default [sip] overload settings
#     (503 with Retry-After 5-15 s past 5000 requests in progress or 200 ms in the receive
#     buffer);
#   * nginx + Kamailio on the same machine in the same run: nginx serves the same files,
#     rendered beforehand (static), Kamailio registers with digest from auth_db on a subscriber
#     table in PostgreSQL (testbed/bench/kamailio/kamailio.cfg, WITH_AUTH_DB; usrloc in memory,
#     2 children, as in register_vs_kamailio.sh).
# And sipdm's memory per binding: its RSS before and after the storm, over N.
#
# The phones: `phone-sim fleet --zero-touch --spread-ips` (phone i on 127.1.x.y for SIP and
# HTTP), Yealink T46S, all N started at once, in processes of at most 5000 phones (each phone
# holds a socket; the open-file limit is 20 000 per process here). Like real phones they wait
# out a 503's Retry-After, retransmit per RFC 3261 (T1 500 ms, Timer F 32 s), try a failed
# fetch or REGISTER again after 30 s (jittered 15-45 s: Yealink's reg_fail_retry_interval), and
# register for 3600 s (refresh jittered at 70-90 %, after the measurement).
#
# Usage: testbed/bench/boot_storm.sh [N...]          (default: 2000 10000 50000)
#   KEEP_LOGS=DIR: the servers' and the fleets' logs are copied there at the end.
#   COLD=1: the devices are imported into the running sipdm just before the storm (a new site),
#   which leaves its DN credential cache cold: each REGISTER looks its DN up in PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(2000 10000 50000)
PER_PROCESS=${PER_PROCESS:-5000}
RETRY_MS=${RETRY_MS:-30000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
# sipdm's PostgreSQL pool ([store] max-connections).
PG_CONNECTIONS=${PG_CONNECTIONS:-16}
# More [sip] settings for sipdm, e.g. SIP_SETTINGS='max-requests-in-progress = 5000'.
SIP_SETTINGS=${SIP_SETTINGS:-}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for t in kamailio nginx psql; do command -v $t >/dev/null || { apt-get install -y -qq kamailio kamailio-postgres-modules nginx-light postgresql-client >/dev/null; }; done
cargo build --release -q --bin sipdm && cargo build --release -q -p testbed --bin phone-sim
WORK=$(mktemp -d); chmod 755 "$WORK"
pids=()
DBS=(sipdm_boot_storm kam_boot_storm)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
  [ -f "$WORK/kam.pid" ] && kill "$(cat "$WORK/kam.pid")" 2>/dev/null
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  for d in "${DBS[@]}"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

HTTP=18190; SIP=15190           # sipdm
NGINX=18191; KAM=15191          # nginx + Kamailio
RENDER_HTTP=18192               # sipdm rendering the static files for nginx (SQLite, stopped before)
API="http://127.0.0.1:$HTTP/fs/dm/api/v1"

fresh_db() {
  PGOPTIONS='-c client_min_messages=warning' psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
  psql "$PG/postgres" -qc "CREATE DATABASE $1" >/dev/null
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Datagrams the kernel dropped at a full receive buffer of the UDP socket on 127.0.0.1:$1.
udp_drops() { awk -v p="$(printf '%04X' "$1")" '$2 == "0100007F:" p {print $NF}' /proc/net/udp | head -1; }
wait_http() { for _ in $(seq 1 200); do curl -sf "$1" >/dev/null && return; sleep 0.1; done; echo "no answer from $1"; exit 1; }

# DNs 100000.. with password pw<dn>, digest on REGISTER; device i (Yealink T46S) has DN 100000+i.
inputs() { # $1 = N
  python3 - "$WORK" "$1" <<'PY'
import sys
work, n = sys.argv[1], int(sys.argv[2])
with open(f"{work}/dns.csv", "w") as f:
    for i in range(n):
        f.write(f"{100000+i},pw{100000+i},,register\n")
with open(f"{work}/subscriber.csv", "w") as f:
    for i in range(n):
        f.write(f"{100000+i}\tsipdm\tpw{100000+i}\n")
PY
  target/release/phone-sim macs --count "$1" --vendor yealink \
    | awk -F, 'BEGIN {print "mac,model,profile,dn"} {printf "%s,T46S,,%d\n", $1, 100000 + NR - 1}' > "$WORK/devices.csv"
}

sipdm_config() { # $1 = file, $2 = http port, $3 = SIP server the files name, $4 = store, $5 = fs_url
cat > "$1" <<TOML
[server]
http = "127.0.0.1:$2"
sip = ["127.0.0.1:$SIP"]
admin-token = "bench"
secret = "bench"
[store]
url = "$4"
max-connections = ${PG_CONNECTIONS:-16}
[dm]
fs_url = "$5"
sip-servers = ["$3"]
[sip]
$SIP_SETTINGS
TOML
}

# Starts the fleet of $1 phones against provisioning URL $2 in processes of PER_PROCESS; waits;
# sets STORM to the seconds from start to the last process's end and UP to the phones
# registered. Logs in $WORK/fleet-$3-*.log.
storm() {
  local n=$1 url=$2 tag=$3 k=0 fleet=()
  local t0; t0=$(date +%s.%N)
  while [ $((k * PER_PROCESS)) -lt "$n" ]; do
    local count=$(( n - k * PER_PROCESS < PER_PROCESS ? n - k * PER_PROCESS : PER_PROCESS ))
    target/release/phone-sim fleet --prov-url "$url" --count "$count" --concurrency "$count" \
      --vendor yealink --zero-touch --spread-ips --mac-offset $((1 + k * PER_PROCESS)) \
      --dn-start $((100000 + k * PER_PROCESS)) --attempts 40 --retry-interval-ms "$RETRY_MS" \
      --timeout 1500 --fleet-timeout 1800 --quiet > "$WORK/fleet-$tag-$k.log" 2>&1 &
    fleet+=($!); pids+=($!)
    k=$((k + 1))
  done
  local failed=0
  for p in "${fleet[@]}"; do wait "$p" || failed=1; done
  local t1; t1=$(date +%s.%N)
  if [ $failed = 1 ]; then echo "SOME PHONES FAILED ($tag):" >&2; grep -h -A8 "^phones:" "$WORK"/fleet-"$tag"-*.log >&2; fi
  STORM=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  UP=$(fleet_sum "$tag" "provisioned")
}

# Sums a field of the fleets' summaries: "503 Retry-After waits: W  retries after a failure: R".
fleet_sum() { # $1 = tag, $2 = label before the number
  cat "$WORK"/fleet-"$1"-*.log | { grep -o "$2: [0-9]*" || true; } | awk '{s += $NF} END {print s + 0}'
}

results=()
for N in "${SIZES[@]}"; do
  echo "== $N phones ==" >&2
  inputs "$N"

  # --- sipdm alone ---
  fresh_db sipdm_boot_storm
  sipdm_config "$WORK/sipdm.toml" $HTTP "127.0.0.1:$SIP" "$PG/sipdm_boot_storm" "http://127.0.0.1:$HTTP/fs"
  # DNs and devices in the store before sipdm starts, as after a restart (power came back):
  # it loads the DN credentials at start. (Imported into the running server instead, every
  # write invalidates that cache and each REGISTER of the storm looks its DN up in PostgreSQL.)
  target/release/sipdm --config "$WORK/sipdm.toml" dn import "$WORK/dns.csv" >/dev/null
  [ "${COLD:-0}" = 1 ] || target/release/sipdm --config "$WORK/sipdm.toml" import "$WORK/devices.csv" >/dev/null
  RUST_LOG=warn target/release/sipdm --config "$WORK/sipdm.toml" serve > "$WORK/sipdm-$N.log" 2>&1 &
  SIPDM=$!; pids+=($SIPDM)
  wait_http "http://127.0.0.1:$HTTP/healthz"
  if [ "${COLD:-0}" = 1 ]; then # a new site: devices imported into the running server
    curl -sf -X POST -H 'Authorization: Bearer bench' -H 'Content-Type: text/csv' --data-binary @"$WORK/devices.csv" "$API/import" >/dev/null
  fi
  sleep 3 # DN credentials loaded
  before=$(rss_kib $SIPDM)
  storm "$N" "http://127.0.0.1:$HTTP/fs/dm/prov" "sipdm-$N"; S=$STORM; SUP=$UP
  sleep 1 # the last bindings' write-behind
  after=$(rss_kib $SIPDM)
  metrics=$(curl -sf "http://127.0.0.1:$HTTP/metrics")
  m() { echo "$metrics" | awk -v n="$1" '$1 == n {print int($2)}' | head -1; }
  bound=$(m sipdm_sip_bindings)
  S503=$(m sipdm_sip_overload_rejected_total); SDROP=$(m sipdm_sip_udp_kernel_drops_total)
  H503=$(echo "$metrics" | awk '/^sipdm_prov_requests_total\{status="503"\}/ {print int($2)}' | head -1); H503=${H503:-0}
  SWAITS=$(fleet_sum "sipdm-$N" "503 Retry-After waits"); SRETRY=$(fleet_sum "sipdm-$N" "retries after a failure")
  SRF=$(fleet_sum "sipdm-$N" "fetch retries"); SRR=$(fleet_sum "sipdm-$N" "register retries")
  echo "  sipdm: $S s, $SUP of $N phones registered, $bound bindings held; SIP 503s $S503, kernel drops $SDROP (/proc: $(udp_drops $SIP)); HTTP 503s $H503; phones' Retry-After waits $SWAITS, retries $SRETRY (fetch $SRF, register $SRR); RSS ${before} -> ${after} KiB" >&2
  grep -h "overloaded\|receive buffer" "$WORK/sipdm-$N.log" | head -3 | sed 's/^/    sipdm log: /' >&2 || true
  kill $SIPDM; wait $SIPDM 2>/dev/null || true

  # --- nginx + Kamailio ---
  # The files, rendered by a sipdm (SQLite, same DNs and devices) that names nginx and
  # Kamailio in them, fetched once as the phones would ask for them, then served static.
  rm -f "$WORK/render.db"
  sipdm_config "$WORK/render.toml" $RENDER_HTTP "127.0.0.1:$KAM" "sqlite://$WORK/render.db" "http://127.0.0.1:$NGINX/fs"
  sed -i "s/^sip = .*/sip = [\"127.0.0.1:0\"]/" "$WORK/render.toml"
  target/release/sipdm --config "$WORK/render.toml" dn import "$WORK/dns.csv" >/dev/null
  target/release/sipdm --config "$WORK/render.toml" import "$WORK/devices.csv" >/dev/null
  RUST_LOG=warn target/release/sipdm --config "$WORK/render.toml" serve > "$WORK/render.log" 2>&1 &
  RENDER=$!; pids+=($RENDER)
  wait_http "http://127.0.0.1:$RENDER_HTTP/healthz"
  rm -rf "$WORK/www"; mkdir -p "$WORK/www/fs/dm/prov"
  python3 - "$WORK" "$RENDER_HTTP" <<'PY'
import http.client, sys
work, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
def get(name, ua):
    c.request("GET", f"/fs/dm/prov/{name}", headers={"User-Agent": ua})
    r = c.getresponse(); body = r.read()
    if r.status == 200:
        open(f"{work}/www/fs/dm/prov/{name}", "wb").write(body)
    return r.status
macs = [l.split(",")[0] for l in open(f"{work}/devices.csv").read().split("\n")[1:] if l]
for mac in macs:
    colons = ":".join(mac[i:i+2] for i in range(0, 12, 2))
    ua = f"Yealink SIP-T46S 66.86.0.15 {colons}"
    assert get(f"{mac}.cfg", ua) == 200, mac
get("y000000000066.cfg", ua)
PY
  kill $RENDER; wait $RENDER 2>/dev/null || true
  files=$(ls "$WORK/www/fs/dm/prov" | wc -l)
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes auto;
worker_rlimit_nofile 20000;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 10000; }
http {
  access_log off;
  default_type text/plain;
  client_body_temp_path $WORK/nginx-tmp;
  # One listening socket per worker with the backlog of each of sipdm's per-core listeners.
  server { listen 127.0.0.1:$NGINX reuseport backlog=1024; root $WORK/www; }
}
NGINX
  nginx -c "$WORK/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx-error.log" &
  pids+=($!)
  fresh_db kam_boot_storm
  psql "$PG/kam_boot_storm" -q -f /usr/share/kamailio/postgres/standard-create.sql >/dev/null
  psql "$PG/kam_boot_storm" -q -f /usr/share/kamailio/postgres/auth_db-create.sql >/dev/null
  psql "$PG/kam_boot_storm" -qc "\\copy subscriber (username, domain, password) FROM '$WORK/subscriber.csv'"
  kamailio -f testbed/bench/kamailio/kamailio.cfg -A "LISTEN=udp:127.0.0.1:$KAM" -A WITH_AUTH_DB \
    -A "DBURL=\"$PG/kam_boot_storm\"" -P "$WORK/kam.pid" -m 512 -M 32 -w "$WORK" > "$WORK/kam-$N.log" 2>&1
  wait_http "http://127.0.0.1:$NGINX/fs/dm/prov/$(sed -n 2p "$WORK/devices.csv" | cut -d, -f1).cfg"
  sleep 1
  storm "$N" "http://127.0.0.1:$NGINX/fs/dm/prov" "kam-$N"; K=$STORM; KUP=$UP
  KWAITS=$(fleet_sum "kam-$N" "503 Retry-After waits"); KRETRY=$(fleet_sum "kam-$N" "retries after a failure")
  KRF=$(fleet_sum "kam-$N" "fetch retries"); KRR=$(fleet_sum "kam-$N" "register retries"); KDROP=$(udp_drops $KAM)
  echo "  nginx + Kamailio: $K s, $KUP of $N phones registered ($files static files); Kamailio's kernel drops $KDROP; phones' Retry-After waits $KWAITS, retries $KRETRY (fetch $KRF, register $KRR)" >&2
  kill "$(cat "$WORK/kam.pid")"; rm -f "$WORK/kam.pid"; kill "$(cat "$WORK/nginx.pid")"; rm -f "$WORK/nginx.pid"; sleep 1
  results+=("$N|$S|$K|$S503|$H503|$SDROP|$KDROP|$SRF/$SRR|$KRF/$KRR|$before|$after|$SUP|$KUP")
done

echo
echo "| N | sipdm: last phone registered | nginx + Kamailio | registered (sipdm / nginx+Kamailio) | SIP 503s sent by sipdm | HTTP 503s sent by sipdm | UDP kernel drops (sipdm / Kamailio) | phones' retries after a failure, fetch/register (sipdm; nginx+Kamailio) | sipdm RSS before → after | per binding |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for r in "${results[@]}"; do
  IFS='|' read -r n s k s503 h503 sdrop kdrop sret kret before after sup kup <<<"$r"
  python3 -c "print(f'| {$n} | {$s} s | {$k} s | {$sup} / {$kup} | {$s503} | {$h503} | {$sdrop} / {${kdrop:-0}} | $sret; $kret | {$before/1024:.0f} → {$after/1024:.0f} MiB | {($after-$before)*1024/$n:.0f} bytes |')"
done
