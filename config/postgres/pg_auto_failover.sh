#!/usr/bin/env bash
# sipdm's PostgreSQL with automatic failover: a pg_auto_failover monitor and one data node per
# site, synchronous replication. Run each step as the postgres user on its host; README in
# pg_auto_failover.md (same directory). testbed/deploy bc runs it (DEPLOY_PGAF=1) on loopback.
#
#   pg_auto_failover.sh monitor    on the monitor host (a third location, not a site)
#   pg_auto_failover.sh settings   once, on the monitor host, with its Postgres running
#   pg_auto_failover.sh node       on each site's database host, site 1 first; site 2's
#                                  node clones site 1's once site 1 runs (pg_autoctl run)
#
# Each step only creates; running is `pg_autoctl run --pgdata PGDATA` under your service
# manager (`pg_autoctl show systemd --pgdata PGDATA` prints a systemd unit).
#
# Environment (defaults in brackets):
#   PGAF_PGDATA     data directory [/var/lib/postgresql/15/pgaf]
#   PGAF_PORT       PostgreSQL port [5432]
#   PGAF_HOSTNAME   this host's name or address, as the others reach it (required)
#   PGAF_LISTEN     listen_addresses [*]
#   PGAF_PGCTL      [/usr/lib/postgresql/15/bin/pg_ctl]
#   PGAF_AUTH       authentication between monitor and nodes and for replication
#                   [scram-sha-256; passwords: see pg_auto_failover.md]; trust only on a
#                   test bed's loopback
#   PGAF_SSL        [--ssl-self-signed]; --no-ssl only on a test bed's loopback
#   node:     PGAF_NAME (node name: site1, site2; required), PGAF_MONITOR (the monitor's URL,
#             postgres://autoctl_node@MONITOR:5432/pg_auto_failover?sslmode=require; required),
#             PGAF_DB (the database sipdm uses [sipdm]; pg_autoctl creates it, owned by
#             postgres: give it to sipdm's role, pg_auto_failover.md),
#             PGAF_PARTITION_TIMEOUT (s: a primary that reaches neither the monitor nor a
#             standby for this long stops taking writes [10])
#   settings: PGAF_MONITOR_ADMIN (a superuser URL of the monitor's database
#             [postgres://postgres@/pg_auto_failover?port=PGAF_PORT], the local socket), and the
#             monitor's failover settings, in ms:
#             PGAF_HEALTH_CHECK_PERIOD [2000], PGAF_HEALTH_CHECK_TIMEOUT [2000],
#             PGAF_HEALTH_CHECK_MAX_RETRIES [2], PGAF_HEALTH_CHECK_RETRY_DELAY [1000],
#             PGAF_UNHEALTHY_TIMEOUT [10000], PGAF_DEMOTE_TIMEOUT [15000: keep it above
#             PGAF_PARTITION_TIMEOUT], PGAF_STARTUP_GRACE [10000]
set -euo pipefail

PGDATA="${PGAF_PGDATA:-/var/lib/postgresql/15/pgaf}"
PORT="${PGAF_PORT:-5432}"
LISTEN="${PGAF_LISTEN:-*}"
PGCTL="${PGAF_PGCTL:-/usr/lib/postgresql/15/bin/pg_ctl}"
AUTH="${PGAF_AUTH:-scram-sha-256}"
SSL="${PGAF_SSL:---ssl-self-signed}"

usage() { echo "usage: $0 monitor|settings|node" >&2; exit 2; }
need() { [ -n "${!1:-}" ] || { echo "$0: $1 is required" >&2; exit 2; }; }

case "${1:-}" in
    monitor)
        need PGAF_HOSTNAME
        pg_autoctl create monitor --pgdata "$PGDATA" --pgport "$PORT" \
            --hostname "$PGAF_HOSTNAME" --auth "$AUTH" "$SSL" --pgctl "$PGCTL"
        # `create monitor` has no --listen: pg_autoctl starts Postgres with this setting.
        pg_autoctl config set --pgdata "$PGDATA" postgresql.listen_addresses "$LISTEN"
        ;;
    settings)
        admin="${PGAF_MONITOR_ADMIN:-postgres://postgres@/pg_auto_failover?port=$PORT}"
        # How fast a dead primary is noticed: a health check (a connection attempt) every
        # PERIOD, given up after TIMEOUT, retried MAX_RETRIES times RETRY_DELAY apart; a node
        # that fails it and has not reported for UNHEALTHY_TIMEOUT is failed over.
        # How long the standby then waits for the old primary to step down: DEMOTE_TIMEOUT,
        # which must stay above the keepers' network_partition_timeout so that a primary cut
        # off from everything has stopped taking writes before its standby is promoted.
        psql "$admin" -v ON_ERROR_STOP=1 -q -o /dev/null <<EOF
ALTER SYSTEM SET pgautofailover.health_check_period = ${PGAF_HEALTH_CHECK_PERIOD:-2000};
ALTER SYSTEM SET pgautofailover.health_check_timeout = ${PGAF_HEALTH_CHECK_TIMEOUT:-2000};
ALTER SYSTEM SET pgautofailover.health_check_max_retries = ${PGAF_HEALTH_CHECK_MAX_RETRIES:-2};
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = ${PGAF_HEALTH_CHECK_RETRY_DELAY:-1000};
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = ${PGAF_UNHEALTHY_TIMEOUT:-10000};
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = ${PGAF_DEMOTE_TIMEOUT:-15000};
ALTER SYSTEM SET pgautofailover.startup_grace_period = ${PGAF_STARTUP_GRACE:-10000};
SELECT pg_reload_conf();
EOF
        psql "$admin" -qtA -c "SELECT name || ' = ' || setting FROM pg_settings WHERE name LIKE 'pgautofailover.%' ORDER BY name"
        ;;
    node)
        need PGAF_HOSTNAME
        need PGAF_NAME
        need PGAF_MONITOR
        # Synchronous replication: each node counts in the write quorum, so a commit returns
        # once the standby has it, and either node may be promoted (equal priority).
        pg_autoctl create postgres --pgdata "$PGDATA" --pgport "$PORT" --pghost "$PGAF_HOSTNAME" \
            --listen "$LISTEN" --hostname "$PGAF_HOSTNAME" --name "$PGAF_NAME" \
            --monitor "$PGAF_MONITOR" --auth "$AUTH" "$SSL" --pgctl "$PGCTL" \
            --dbname "${PGAF_DB:-sipdm}" --username postgres \
            --replication-quorum true --candidate-priority 50
        pg_autoctl config set --pgdata "$PGDATA" timeout.network_partition_timeout \
            "${PGAF_PARTITION_TIMEOUT:-10}"
        ;;
    *) usage ;;
esac
