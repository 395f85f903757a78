#!/usr/bin/env bash
# PostgreSQL incrementals benchmark: how fast cairn captures an incremental against how fast a
# pgbench workload writes WAL, and how fast cairn replays it against PostgreSQL's own logical
# replication (a subscription catching up on the same changes from the same starting point).
#
#   bench/postgres-incrementals.sh                        # scale 10, 4 clients, 30 s
#   SCALE=20 CLIENTS=8 SECONDS_OF_LOAD=60 bench/postgres-incrementals.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-4}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-30}
# shellcheck source=bench/pg-env.sh
source bench/pg-env.sh
Q() { "$BIN/psql" -qAtX "$SERVER/$1" -c "$2"; }
summary() { Q "$1" "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers),
  (SELECT count(*) FROM pgbench_history), (SELECT sum(delta) FROM pgbench_history)"; }

Q postgres "DROP DATABASE IF EXISTS pgb" >/dev/null
Q postgres "CREATE DATABASE pgb" >/dev/null
"$BIN/pgbench" -i -s "$SCALE" -q "$SERVER/pgb" 2>/dev/null
Q pgb "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
printf '[sources.pgb]\nurl = "%s/pgb"\nincrementals = true\n' "$SERVER" >"$WORK/cairn.toml"
C() { "$CAIRN" --config "$WORK/cairn.toml" "$@"; }
C backup --source pgb --to "$WORK/cairn" --type full 2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
full_id=$(ls "$WORK/cairn/pgb/copies" | grep full)
# The native subscriber starts from the same data: the full copy, restored, and a slot made while
# nothing writes (so the slot's start and the full copy hold the same rows).
C restore --source pgb --from "$WORK/cairn" --copy "$full_id" --target "$SERVER/pgb_native" 2>"$WORK/err" >/dev/null \
  || { cat "$WORK/err"; exit 1; }
Q pgb "SELECT pg_create_logical_replication_slot('bench_native', 'pgoutput')" >/dev/null
publication=$(Q pgb "SELECT pubname FROM pg_publication WHERE pubname LIKE 'cairn\_%'")

start_lsn=$(Q pgb "SELECT pg_current_wal_lsn()")
start=$(date +%s.%N)
"$BIN/pgbench" -c "$CLIENTS" -j 2 -T "$SECONDS_OF_LOAD" -n "$SERVER/pgb" >"$WORK/pgbench.txt" 2>&1
load_seconds=$(elapsed "$start")
end_lsn=$(Q pgb "SELECT pg_current_wal_lsn()")
produced=$(Q pgb "SELECT pg_wal_lsn_diff('$end_lsn', '$start_lsn')")
want=$(summary pgb)

start=$(date +%s.%N)
C backup --source pgb --to "$WORK/cairn" --type incremental 2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
capture_seconds=$(elapsed "$start")
read -r transactions changes < <(C status --json --source pgb --from "$WORK/cairn" \
  | python3 -c "import json,sys; d=json.load(sys.stdin)[0]['copies'][-1]['details']; print(d['transactions'], d['changes'])")
stored=$(du -sb "$WORK/cairn/pgb/copies/"*-incr | cut -f1)

# cairn: the full copy alone, then the whole chain; the difference is the replay.
start=$(date +%s.%N)
C restore --source pgb --from "$WORK/cairn" --copy "$full_id" --target "$SERVER/pgb_full" >/dev/null 2>"$WORK/err" \
  || { cat "$WORK/err"; exit 1; }
full_seconds=$(elapsed "$start")
start=$(date +%s.%N)
/usr/bin/time -f "%U %S %M" -o "$WORK/chain-time" "$CAIRN" --config "$WORK/cairn.toml" restore --source pgb \
  --from "$WORK/cairn" --target "$SERVER/pgb_cairn" >"$WORK/restore.txt" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
read -r chain_user chain_sys chain_rss <"$WORK/chain-time"
chain_seconds=$(elapsed "$start")
replay_seconds=$(awk -v a="$chain_seconds" -v b="$full_seconds" 'BEGIN { printf "%.2f", a - b }')

# Native: a subscription on the same publication, from the slot made at the full copy's point,
# timed until the source's slot confirms the workload's end.
start=$(date +%s.%N)
Q pgb_native "CREATE SUBSCRIPTION bench_native CONNECTION '$SERVER/pgb' PUBLICATION $publication
  WITH (create_slot = false, slot_name = 'bench_native', copy_data = false)" >/dev/null
until [ "$(Q pgb "SELECT confirmed_flush_lsn >= '$end_lsn' FROM pg_replication_slots WHERE slot_name = 'bench_native'")" = t ]; do
  sleep 0.05
done
native_seconds=$(elapsed "$start")
Q pgb_native "ALTER SUBSCRIPTION bench_native DISABLE" >/dev/null
Q pgb_native "ALTER SUBSCRIPTION bench_native SET (slot_name = NONE)" >/dev/null
Q pgb_native "DROP SUBSCRIPTION bench_native" >/dev/null
Q pgb "SELECT pg_drop_replication_slot('bench_native')" >/dev/null

for restored in pgb_cairn pgb_native; do
  got=$(summary "$restored")
  [ "$got" = "$want" ] || { echo "$restored differs from the source: $got vs $want" >&2; exit 1; }
done

awk -v p="$produced" -v l="$load_seconds" -v c="$capture_seconds" -v s="$stored" -v t="$transactions" \
  -v ch="$changes" -v rs="$replay_seconds" -v ns="$native_seconds" -v cl="$CLIENTS" -v sc="$SCALE" \
  -v cu="$chain_user" -v cs="$chain_sys" -v cr="$chain_rss" 'BEGIN {
  printf "workload: pgbench scale %d, %d clients, %.1f s: %.1f MB of WAL (%.2f MB/s), %d transactions\n", sc, cl, l, p / 1e6, p / 1e6 / l, t
  printf "capture:  %.2f s = %.1f MB of WAL/s; %d changes stored in %.1f MB (zstd)\n", c, p / 1e6 / c, ch, s / 1e6
  printf "replay:   cairn %.2f s = %.0f transactions/s; native subscription %.2f s; cairn/native = %.2f\n", rs, t / rs, ns, rs / ns
  printf "client:   the chain restore (full + replay) used %.1f s user + %.1f s system CPU, peak %.0f MiB\n", cu, cs, cr / 1024
}'
