#!/usr/bin/env bash
# Provisioning throughput: wrk against a rendered MAC.cfg served by sipdm (2000 devices in the
# store, SQLite), and against nginx serving a static file of the same size, in the same run.
# Usage: testbed/bench/prov_vs_nginx.sh [seconds]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-15}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
for t in wrk nginx; do command -v $t >/dev/null || { echo "installing $t"; apt-get install -y -qq wrk nginx-light >/dev/null; }; done
cargo build --release -q
WORK=$(mktemp -d); chmod 755 "$WORK"  # nginx workers must read it
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

SIPDM_PORT=18080; NGINX_PORT=18081
cat > "$WORK/sipdm.toml" <<TOML
[server]
http = "127.0.0.1:$SIPDM_PORT"
sip = ["127.0.0.1:15060"]
admin-token = "bench"
secret = "bench"
[store]
url = "sqlite://$WORK/sipdm.db"
[dm]
fs_url = "http://127.0.0.1:$SIPDM_PORT/fs"
[[sites]]
name = "site1"
sip-servers = ["127.0.0.1:5060"]
[[switches]]
name = "SIPS1"
site = "site1"
address = "127.0.0.1:5060"
dn-ranges = ["1000-2999"]
TOML
RUST_LOG=warn target/release/sipdm --config "$WORK/sipdm.toml" serve > "$WORK/sipdm.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$SIPDM_PORT/healthz" >/dev/null && break; sleep 0.2; done
API="http://127.0.0.1:$SIPDM_PORT/fs/dm/api/v1"
# 2000 DNs and 2000 devices, through the API.
python3 - "$API" <<'PY'
import json, sys, urllib.request
api = sys.argv[1]
def post(path, body, ctype="application/json"):
    req = urllib.request.Request(api + path, data=body.encode(), method="POST",
        headers={"Authorization": "Bearer bench", "Content-Type": ctype})
    urllib.request.urlopen(req).read()
for n in range(1000, 3000):
    post("/dns", json.dumps({"number": str(n), "password": f"pw{n}"}))
rows = ["mac,model,profile,dn"] + [f"0004f2{n:06x},VVX 450,,{n}" for n in range(1000, 3000)]
post("/import", "\n".join(rows) + "\n", "text/csv")
PY
MAC=$(printf '0004f2%06x' 1500)
URL="http://127.0.0.1:$SIPDM_PORT/fs/dm/prov/$MAC.cfg"
curl -sf -A 'PolycomVVX-VVX_450-UA/6.3.0.14929' "$URL" > "$WORK/$MAC.cfg"
SIZE=$(stat -c %s "$WORK/$MAC.cfg")
mkdir -p "$WORK/www"; cp "$WORK/$MAC.cfg" "$WORK/www/$MAC.cfg"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/xml;
  client_body_temp_path $WORK/nginx-tmp;
  server { listen 127.0.0.1:$NGINX_PORT; root $WORK/www; }
}
NGINX
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
pids+=($!)
sleep 0.5
run() { wrk --latency -t"$THREADS" -c"$CONNS" -d"${DUR}s" -H 'User-Agent: PolycomVVX-VVX_450-UA/6.3.0.14929' "$1" | tee /dev/stderr | awk '/Requests\/sec/ {print $2}'; }
echo "== sipdm ($SIZE-byte rendered $MAC.cfg, 2000 devices) =="
S=$(run "$URL")
echo "== nginx (static file, same size) =="
N=$(run "http://127.0.0.1:$NGINX_PORT/$MAC.cfg")
python3 -c "print(f'sipdm {float(\"$S\"):.0f} req/s, nginx {float(\"$N\"):.0f} req/s, ratio {float(\"$S\")/float(\"$N\"):.2f} (file {$SIZE} bytes, wrk -t$THREADS -c$CONNS -d${DUR}s)')"
