#!/usr/bin/env bash
# Runs sipdm's whole test suite on a fresh Debian machine: installs the real peers the tests
# use when they are missing, starts PostgreSQL when it is down, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests drive: sipp (sip-tester), baresip, PostgreSQL, headless Chromium
# with its WebDriver (the console test), openssl and curl (the HTTPS test), stunnel (sipp over
# TLS: Debian's sipp is built without OpenSSL).
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v pg_isready >/dev/null 2>&1 || need+=(postgresql-client)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# testbed/deploy (its test brings the sample pair up): zone queries, JSON.
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v stunnel >/dev/null 2>&1 || need+=(stunnel4)
# Kamailio as the site's switch (tests/switch_kamailio.rs), with its PostgreSQL modules.
[ -x /usr/sbin/kamailio ] || need+=(kamailio)
ls /usr/lib/*/kamailio/modules/db_postgres.so >/dev/null 2>&1 || need+=(kamailio-postgres-modules)
# The DHCP recipes (tests/dhcp.rs): dnsmasq and Kea serve, dhclient asks, in network namespaces.
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
[ -x /usr/sbin/kea-dhcp4 ] || need+=(kea-dhcp4-server)
[ -x /usr/sbin/dhclient ] || need+=(isc-dhcp-client)
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
# PostgreSQL automatic failover (tests/pg_failover_formation.rs): a pg_auto_failover monitor
# and two nodes of PostgreSQL 15.
command -v pg_autoctl >/dev/null 2>&1 || need+=(pg-auto-failover-cli)
ls /usr/lib/postgresql/15/lib/pgautofailover.so >/dev/null 2>&1 || need+=(postgresql-15-auto-failover)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432, database `test` (trust auth on this machine kind).
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test"

cargo test --workspace --all-targets "$@"

# Fuzz smoke after the tests: fuzz/smoke.sh runs each target FUZZ_SMOKE_SECS (default 20 s).
# Only with the nightly toolchain and cargo-fuzz (smoke.sh says "skipped" and why without
# them), and bounded by what is left of CI's 30 minutes (CI_LIMIT_SECONDS) less 2 for margin,
# at most FUZZ_SMOKE_BUDGET (default 900 s): the first, cold instrumented build of fuzz/ takes
# ~17 minutes on 2 cores. Stopped by that bound, it says so and does not fail the run (cargo
# keeps what it built for the next one); a crash does. FUZZ_SMOKE_SECS=0 turns it off.
fuzz_secs="${FUZZ_SMOKE_SECS:-20}"
budget=$(( ${CI_LIMIT_SECONDS:-1800} - SECONDS - 120 ))
[ "$budget" -le "${FUZZ_SMOKE_BUDGET:-900}" ] || budget="${FUZZ_SMOKE_BUDGET:-900}"
if [ "$fuzz_secs" = 0 ]; then
    echo "fuzz smoke: skipped: FUZZ_SMOKE_SECS=0"
elif [ "$budget" -lt 180 ]; then
    echo "fuzz smoke: skipped: ${budget}s left of the CI time limit, too little to build and run"
else
    rc=0
    timeout --signal=INT --kill-after=30 "$budget" fuzz/smoke.sh "$fuzz_secs" || rc=$?
    case "$rc" in
        0) ;;
        124 | 137) echo "fuzz smoke: not finished within ${budget}s (a cold build of fuzz/ takes ~17 min; the next run goes on from what was built): not counted as a failure" ;;
        *) exit "$rc" ;;
    esac
fi
