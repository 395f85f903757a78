#!/usr/bin/env bash
# MySQL/MariaDB -> PostgreSQL benchmark: `cairn restore` of a MySQL full copy into PostgreSQL
# (tables translated, rows converted, indexes built) against `cairn restore` of the same copy into
# MariaDB, on the same machine, in one run. The issue's goal: within 1.5x of the same-engine restore.
#
#   bench/mysql-to-postgres.sh                    # 4 sysbench tables of 250,000 rows, 2 jobs
#   TABLES=4 SIZE=1000000 JOBS=2 bench/mysql-to-postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TABLES=${TABLES:-4}
SIZE=${SIZE:-250000}
JOBS=${JOBS:-2}
BENCH_TOOLS="sysbench"
# shellcheck source=bench/mysql-env.sh
source bench/mysql-env.sh
PG_SERVER=${CAIRN_TEST_PG_URL%/*}
PG_BIN=$CAIRN_TEST_PG_BIN
export PGPASSWORD=cairn-test-pw
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }

SQL -e "DROP DATABASE IF EXISTS sb; DROP DATABASE IF EXISTS sb_restored; CREATE DATABASE sb"
sysbench oltp_read_write --db-driver=mysql --mysql-host="$HOST" --mysql-port="$PORT" --mysql-user="$USER" \
  --mysql-password="$PASS" --mysql-db=sb --tables="$TABLES" --table-size="$SIZE" prepare >/dev/null
"$CAIRN" backup --jobs "$JOBS" --name sb --source "$SERVER/sb" --to "$WORK/cairn" 2>"$WORK/err" >/dev/null \
  || { cat "$WORK/err"; exit 1; }

start=$(date +%s.%N)
"$CAIRN" restore --jobs "$JOBS" --source sb --from "$WORK/cairn" --target "$SERVER" --rename-db sb=sb_restored \
  2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
mysql_seconds=$(elapsed "$start")

start=$(date +%s.%N)
/usr/bin/time -f "%U %S %M" -o "$WORK/time" "$CAIRN" restore --jobs "$JOBS" --source sb --from "$WORK/cairn" \
  --target "$PG_SERVER/sb_pg" 2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
pg_seconds=$(elapsed "$start")
read -r cpu_user cpu_sys rss <"$WORK/time"

# Both restores hold every row: counts and a sum over every row, on each side.
want=$(SQL -e "SELECT SUM(n), SUM(s) FROM ($(for t in $(seq 1 "$TABLES"); do
  [ "$t" -gt 1 ] && printf ' UNION ALL '; printf 'SELECT COUNT(*) n, SUM(k + id) s FROM sb.sbtest%s' "$t"; done)) x" | tr '\t' ' ')
got=$("$PG_BIN/psql" -qAtX -F ' ' "$PG_SERVER/sb_pg" -c "SELECT SUM(n), SUM(s) FROM ($(for t in $(seq 1 "$TABLES"); do
  [ "$t" -gt 1 ] && printf ' UNION ALL '; printf 'SELECT COUNT(*) n, SUM(k + id) s FROM sb.sbtest%s' "$t"; done)) x")
[ "$got" = "$want" ] || { echo "PostgreSQL differs from the source: $got vs $want" >&2; exit 1; }

awk -v t="$TABLES" -v s="$SIZE" -v j="$JOBS" -v m="$mysql_seconds" -v p="$pg_seconds" -v cu="$cpu_user" \
  -v cy="$cpu_sys" -v rss="$rss" 'BEGIN {
  printf "data: %d sysbench tables of %d rows, %d jobs\n", t, s, j
  printf "cairn restore into MariaDB:    %.2f s\n", m
  printf "cairn restore into PostgreSQL: %.2f s (client %.1f s user + %.1f s system CPU, peak %d MiB)\n", p, cu, cy, rss / 1024
  printf "PostgreSQL / MariaDB = %.2f\n", p / m
}'
