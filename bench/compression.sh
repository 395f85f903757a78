#!/usr/bin/env bash
# zstd level 1 against level 3: cairn full backup and restore of the same PostgreSQL data at each
# `compression-level`, alternately (3, 1, 3, 1, …), on one private server and disk.
#
#   bench/compression.sh              # pgbench scale 40, 2 jobs, 3 rounds
#   SCALE=100 ROUNDS=3 bench/compression.sh
#
# Prints each run's wall time, CPU time of the cairn process and bytes stored, and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-40}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-3}
# shellcheck source=bench/pg-env.sh
source bench/pg-env.sh

# Runs a command, printing "wall_seconds cpu_seconds".
measure() {
  /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$WORK/time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

db="zl_$SCALE"
psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
"$BIN/pgbench" -i -q -s "$SCALE" "$SERVER/$db" >/dev/null 2>&1
psql -q "$SERVER/$db" -c "VACUUM ANALYZE"
want=$(psql -Atq "$SERVER/$db" -c "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts")

printf '%-6s %-8s %9s %9s %12s\n' level run seconds cpu bytes
for round in $(seq "$ROUNDS"); do
  for level in 3 1; do
    echo "compression-level = $level" >"$WORK/level$level.toml"
    to="$WORK/level$level-$round"
    read -r t cpu < <(measure "$CAIRN" --config "$WORK/level$level.toml" backup --jobs "$JOBS" --name bench --source "$SERVER/$db" --to "$to")
    bytes=$(du -sb "$to" | cut -f1)
    printf '%-6s %-8s %9s %9s %12s\n' "$level" backup "$t" "$cpu" "$bytes"
    echo "$t" >>"$WORK/level$level.backup"
    echo "$bytes" >>"$WORK/level$level.bytes"
    target="${db}_${level}_$round"
    psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $target"
    read -r t cpu < <(measure "$CAIRN" restore --jobs "$JOBS" --source bench --from "$to" --target "$SERVER/$target")
    printf '%-6s %-8s %9s %9s\n' "$level" restore "$t" "$cpu"
    echo "$t" >>"$WORK/level$level.restore"
    got=$(psql -Atq "$SERVER/$target" -c "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts")
    [ "$got" = "$want" ] || { echo "restore into $target differs: $got vs $want" >&2; exit 1; }
    psql -q "$SERVER/postgres" -c "DROP DATABASE $target"
    rm -rf "$to"
  done
done
for run in backup restore bytes; do
  three=$(median <"$WORK/level3.$run")
  one=$(median <"$WORK/level1.$run")
  echo "$run: median level 3 $three, level 1 $one, level 1 / level 3 = $(awk -v a="$one" -v b="$three" 'BEGIN { printf "%.2f", a / b }')"
done
