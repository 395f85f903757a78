#!/usr/bin/env bash
# Encryption's cost: cairn full backup and restore of the same PostgreSQL data with and without
# [encryption], alternately (plain, encrypted, plain, encrypted), on one private server and disk.
#
#   bench/encryption.sh               # pgbench scale 40, 2 jobs
#   SCALE=100 JOBS=2 bench/encryption.sh
#
# Prints each run's wall time and bytes, the medians and the ratio encrypted / plain.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-40}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-2}
# shellcheck source=bench/pg-env.sh
source bench/pg-env.sh

measure() {
  /usr/bin/time -f "%e" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

db="enc_$SCALE"
psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
"$BIN/pgbench" -i -q -s "$SCALE" "$SERVER/$db" >/dev/null 2>&1
psql -q "$SERVER/$db" -c "VACUUM ANALYZE"
"$CAIRN" key generate "$WORK/key" >/dev/null
printf '[encryption]\nkey-file = "%s"\n' "$WORK/key" >"$WORK/encrypted.toml"
: >"$WORK/plain.toml"
want=$(psql -Atq "$SERVER/$db" -c "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts")

printf '%-10s %-8s %9s %12s\n' mode run seconds bytes
for round in $(seq "$ROUNDS"); do
  for mode in plain encrypted; do
    to="$WORK/$mode-$round"
    t=$(measure "$CAIRN" --config "$WORK/$mode.toml" backup --jobs "$JOBS" --name bench --source "$SERVER/$db" --to "$to")
    printf '%-10s %-8s %9s %12s\n' "$mode" backup "$t" "$(du -sb "$to" | cut -f1)"
    echo "$t" >>"$WORK/$mode.backup"
    target="${db}_${mode}_$round"
    psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $target"
    t=$(measure "$CAIRN" --config "$WORK/$mode.toml" restore --jobs "$JOBS" --source bench --from "$to" --target "$SERVER/$target")
    printf '%-10s %-8s %9s\n' "$mode" restore "$t"
    echo "$t" >>"$WORK/$mode.restore"
    got=$(psql -Atq "$SERVER/$target" -c "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts")
    [ "$got" = "$want" ] || { echo "restore into $target differs: $got vs $want" >&2; exit 1; }
    psql -q "$SERVER/postgres" -c "DROP DATABASE $target"
    rm -rf "$to"
  done
done
for run in backup restore; do
  p=$(median <"$WORK/plain.$run")
  e=$(median <"$WORK/encrypted.$run")
  echo "$run: median plain ${p}s, encrypted ${e}s, encrypted / plain = $(awk -v a="$e" -v b="$p" 'BEGIN { printf "%.2f", a / b }')"
done
