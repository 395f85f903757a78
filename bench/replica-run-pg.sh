#!/usr/bin/env bash
# Replica catch-up benchmark (PostgreSQL): cairn's own applier (`cairn replica run --catch-up`)
# against a native subscription, applying the same pgbench changes — both replicas seeded from
# the same full copy into the second private server, both held back while the workload runs.
#
#   bench/replica-run-pg.sh                        # scale 10, 4 clients, 30 s
#   SCALE=20 CLIENTS=8 SECONDS_OF_LOAD=60 bench/replica-run-pg.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-4}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-30}
# shellcheck source=bench/pg-env.sh
source bench/pg-env.sh
REPLICA=${CAIRN_TEST_PG_REPLICA_URL%/*}
Q() { "$BIN/psql" -qAtX "$1" -c "$2"; }
summary() { Q "$1" "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers),
  (SELECT count(*) FROM pgbench_history), (SELECT sum(delta) FROM pgbench_history)"; }

Q "$SERVER/postgres" "DROP DATABASE IF EXISTS pgb" >/dev/null
Q "$SERVER/postgres" "CREATE DATABASE pgb" >/dev/null
"$BIN/pgbench" -i -s "$SCALE" -q "$SERVER/pgb" 2>/dev/null
Q "$SERVER/pgb" "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
printf '[sources.pgb]\nurl = "%s/pgb"\nincrementals = true\n' "$SERVER" >"$WORK/cairn.toml"
C() { "$CAIRN" --config "$WORK/cairn.toml" "$@"; }
C backup --source pgb --to "$WORK/cairn" --type full 2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
for handover in cairn native; do
  C replica seed --from "$WORK/cairn" --source pgb --target "$REPLICA/pgb_$handover" --handover "$handover" \
    2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
done
# The subscription is held back while the workload runs (its slot keeps the changes); cairn's
# applier does not run yet.
subscription=$(Q "$REPLICA/pgb_native" "SELECT subname FROM pg_subscription WHERE subdbid =
  (SELECT oid FROM pg_database WHERE datname = current_database())")
Q "$REPLICA/pgb_native" "ALTER SUBSCRIPTION $subscription DISABLE" >/dev/null

start_lsn=$(Q "$SERVER/pgb" "SELECT pg_current_wal_lsn()")
"$BIN/pgbench" -c "$CLIENTS" -j 2 -T "$SECONDS_OF_LOAD" -n "$SERVER/pgb" >"$WORK/pgbench.txt" 2>&1
transactions=$(awk '/number of transactions actually processed/ { print $NF }' "$WORK/pgbench.txt")
end_lsn=$(Q "$SERVER/pgb" "SELECT pg_current_wal_lsn()")
produced=$(Q "$SERVER/pgb" "SELECT pg_wal_lsn_diff('$end_lsn', '$start_lsn')")
want=$(summary "$SERVER/pgb")

# Native: from enabling the subscription until the source's slot confirms the workload's end.
start=$(date +%s.%N)
Q "$REPLICA/pgb_native" "ALTER SUBSCRIPTION $subscription ENABLE" >/dev/null
until [ "$(Q "$SERVER/pgb" "SELECT confirmed_flush_lsn >= '$end_lsn' FROM pg_replication_slots
  WHERE slot_name = '$subscription'")" = t ]; do
  sleep 0.05
done
native_seconds=$(elapsed "$start")

start=$(date +%s.%N)
/usr/bin/time -f "%U %S %M" -o "$WORK/time" "$CAIRN" --config "$WORK/cairn.toml" replica run --source pgb \
  --target "$REPLICA/pgb_cairn" --catch-up --json >"$WORK/run.json" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
cairn_seconds=$(elapsed "$start")
read -r cpu_user cpu_sys rss <"$WORK/time"
applied=$(python3 -c "import json; r=json.load(open('$WORK/run.json')); print(r['transactions'], r['row_changes'])")
read -r cairn_transactions row_changes <<<"$applied"

for replica in pgb_cairn pgb_native; do
  got=$(summary "$REPLICA/$replica")
  [ "$got" = "$want" ] || { echo "$replica differs from the source: $got vs $want" >&2; exit 1; }
done
Q "$REPLICA/pgb_native" "DROP SUBSCRIPTION $subscription" >/dev/null

awk -v t="$transactions" -v p="$produced" -v l="$SECONDS_OF_LOAD" -v cl="$CLIENTS" -v sc="$SCALE" \
  -v ns="$native_seconds" -v cs="$cairn_seconds" -v ct="$cairn_transactions" -v rc="$row_changes" \
  -v cu="$cpu_user" -v cy="$cpu_sys" -v rss="$rss" 'BEGIN {
  printf "workload: pgbench scale %d, %d clients, %d s: %d transactions, %.1f MB of WAL\n", sc, cl, l, t, p / 1e6
  printf "native subscription: %.2f s = %.0f transactions/s\n", ns, t / ns
  printf "cairn replica run --catch-up: %.2f s = %.0f transactions/s, %d row changes = %.0f row changes/s\n", cs, ct / cs, rc, rc / cs
  printf "cairn client: %.1f s user + %.1f s system CPU, peak %d MiB\n", cu, cy, rss / 1024
  printf "cairn / native = %.2f\n", cs / ns
}'
