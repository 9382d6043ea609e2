#!/usr/bin/env bash
# Applies postgres_init/ to one server, file by file in name order. The same script
# runs in the embedded stack (`cinema stack up`) and in the postgres:18 containers'
# first start (docker-entrypoint-initdb.d), so both get the same schema and roles.
# Every file is idempotent: applying twice changes nothing.
#
# usage: apply.sh publisher|subscriber
# Connection: the usual PG* variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE);
# in the container's init, POSTGRES_USER and POSTGRES_DB stand in for PGUSER/PGDATABASE.
# Role passwords are read by the SQL itself with \getenv, never put on a command line.
set -euo pipefail

side=${1:-}
case "$side" in
  publisher)
    required=(POSTGRES_PRODUCER_PASSWORD POSTGRES_REPLICATION_PASSWORD POSTGRES_MONITOR_PASSWORD) ;;
  subscriber)
    required=(POSTGRES_LOADER_PASSWORD POSTGRES_MONITOR_PASSWORD POSTGRES_REPLICATION_PASSWORD
              PUBLISHER_HOST_FOR_SUBSCRIBER PUBLISHER_PORT_FOR_SUBSCRIBER POSTGRES_PUBLICIST_DB) ;;
  *)
    echo "usage: apply.sh publisher|subscriber" >&2
    exit 2 ;;
esac
for name in "${required[@]}"; do
  if [ -z "${!name:-}" ]; then
    echo "apply.sh $side: environment variable $name is not set" >&2
    exit 2
  fi
done

export PGUSER="${PGUSER:-${POSTGRES_USER:?neither PGUSER nor POSTGRES_USER is set}}"
export PGDATABASE="${PGDATABASE:-${POSTGRES_DB:?neither PGDATABASE nor POSTGRES_DB is set}}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
psql_bin=${PSQL:-psql}

# A rebuilt subscriber has no subscription yet, while the publisher may still hold the
# slot of its previous incarnation: inactive (nobody streams from it), and CREATE
# SUBSCRIPTION fails on it. Its pending changes are of no use, since the new
# subscription's initial copy takes the tables as they are now, so it is dropped. An
# active slot of that name is left alone: another consumer streams from it (an old
# subscriber still running, say), and dropping it would cost that consumer its data.
# The replication role may drop slots over a replication connection, so this needs no
# admin password of the publisher.
drop_leftover_slot() {
  local subscriptions leftover
  subscriptions=$("$psql_bin" --no-psqlrc --tuples-only --no-align \
    --command "SELECT count(*) FROM pg_subscription WHERE subname = 'cinema_subscription'")
  [ "$subscriptions" = 0 ] || return 0
  leftover=$(PGHOST=$PUBLISHER_HOST_FOR_SUBSCRIBER PGPORT=$PUBLISHER_PORT_FOR_SUBSCRIBER \
    PGDATABASE=$POSTGRES_PUBLICIST_DB PGUSER=cinema_replicator PGPASSWORD=$POSTGRES_REPLICATION_PASSWORD \
    "$psql_bin" --no-psqlrc --tuples-only --no-align "replication=database" \
    --command "SELECT CASE WHEN active THEN 'pid ' || active_pid ELSE 'inactive' END
               FROM pg_replication_slots WHERE slot_name = 'cinema_subscription'")
  if [ -n "$leftover" ] && [ "$leftover" != inactive ]; then
    echo "apply.sh subscriber: the publisher's slot cinema_subscription is in use by another consumer" \
      "(walsender $leftover), so no subscription can be created here; it is left alone: stop that consumer" \
      "(or drop the slot on the publisher if nothing needs it), then run this again" >&2
    exit 1
  fi
  [ "$leftover" = inactive ] || return 0
  echo "apply.sh subscriber: dropping the publisher's leftover slot cinema_subscription (no subscription here yet)" >&2
  PGHOST=$PUBLISHER_HOST_FOR_SUBSCRIBER PGPORT=$PUBLISHER_PORT_FOR_SUBSCRIBER \
    PGDATABASE=$POSTGRES_PUBLICIST_DB PGUSER=cinema_replicator PGPASSWORD=$POSTGRES_REPLICATION_PASSWORD \
    "$psql_bin" --no-psqlrc --quiet "replication=database" --command "DROP_REPLICATION_SLOT cinema_subscription"
}

if [ "$side" = subscriber ]; then
  drop_leftover_slot
fi

for file in "$here/$side"/*.sql; do
  "$psql_bin" --no-psqlrc --quiet --set ON_ERROR_STOP=1 --file "$file"
done
