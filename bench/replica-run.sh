#!/usr/bin/env bash
# Replica catch-up benchmark (MariaDB): cairn's own applier (`cairn replica run --catch-up`)
# against the native replica SQL thread, applying the same events — a sysbench write workload
# run after both replicas were seeded from the same full copy on the second private server —
# and cairn's applier into a PostgreSQL replica of the same source (the second private
# PostgreSQL server), seeded from the same copy.
#
#   bench/replica-run.sh                         # 4 tables of 100k rows, 4 writer threads, 30 s
#   SECONDS_OF_LOAD=60 THREADS=8 bench/replica-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TABLES=${TABLES:-4}
SIZE=${SIZE:-100000}
THREADS=${THREADS:-4}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-30}
BENCH_TOOLS="sysbench"
# shellcheck source=bench/mysql-env.sh
source bench/mysql-env.sh
elapsed() { local start=$1; awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }
R_HOSTPORT=${CAIRN_TEST_MYSQL_REPLICA_URL#*@}
R_HOSTPORT=${R_HOSTPORT%%/*}
REPLICA="mysql://$USER:$PASS@$R_HOSTPORT"
RSQL() { mariadb --no-defaults -h "${R_HOSTPORT%:*}" -P "${R_HOSTPORT#*:}" -u "$USER" -p"$PASS" -N "$@"; }
summary() { "$1" -e "SELECT SUM(n), SUM(s) FROM ($(for t in $(seq 1 "$TABLES"); do
  [ "$t" -gt 1 ] && printf ' UNION ALL '; printf 'SELECT COUNT(*) n, SUM(k + id) + SUM(CRC32(c)) s FROM %s.sbtest%s' "$2" "$t"; done)) x"; }
SB=(sysbench --db-driver=mysql --mysql-host="$HOST" --mysql-port="$PORT" --mysql-user="$USER" --mysql-password="$PASS"
  --mysql-db=sb --tables="$TABLES" --table-size="$SIZE")
PG_REPLICA=${CAIRN_TEST_PG_REPLICA_URL%/*}
export PGPASSWORD=cairn-test-pw
# Per table: rows, the sum of k + id and the MD5 of every c in id order, on each side.
my_digest() { for t in $(seq 1 "$TABLES"); do SQL -e "SET SESSION group_concat_max_len = 1000000000;
  SELECT COUNT(*), SUM(k + id), MD5(GROUP_CONCAT(c ORDER BY id SEPARATOR '|')) FROM sb.sbtest$t"; done; }
pg_digest() { for t in $(seq 1 "$TABLES"); do "$CAIRN_TEST_PG_BIN/psql" -qAtX -F $'\t' "$PG_REPLICA/sb_pg" -c \
  "SELECT count(*), sum(k + id), md5(string_agg(c, '|' ORDER BY id)) FROM sb.sbtest$t"; done; }
CONFIG=$WORK/cairn.toml
printf '[sources.sb]\nurl = "%s/sb"\n' "$SERVER" >"$CONFIG"
C() { "$CAIRN" --config "$CONFIG" "$@"; }

SQL -e "DROP DATABASE IF EXISTS sb; CREATE DATABASE sb"
RSQL -e "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL replicate_do_db = ''; DROP DATABASE IF EXISTS sb; DROP DATABASE IF EXISTS sb_cairn" 2>/dev/null || true
"${SB[@]}" oltp_write_only prepare >/dev/null
C backup --source sb --to "$WORK/cairn" --type full 2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
# cairn's replica first (a seed refuses a server that already replicates natively), renamed.
C replica seed --from "$WORK/cairn" --source sb --target "$REPLICA" --handover cairn --rename-db sb=sb_cairn \
  2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
C replica seed --from "$WORK/cairn" --source sb --target "$REPLICA" --handover native 2>"$WORK/err" >/dev/null \
  || { cat "$WORK/err"; exit 1; }
C replica seed --from "$WORK/cairn" --source sb --target "$PG_REPLICA/sb_pg" --handover cairn --clean 2>"$WORK/err" \
  >/dev/null || { cat "$WORK/err"; exit 1; }
# The native replica keeps fetching the log but applies nothing while the workload runs.
RSQL -e "STOP SLAVE SQL_THREAD"

"${SB[@]}" --threads="$THREADS" --time="$SECONDS_OF_LOAD" --report-interval=0 oltp_write_only run >"$WORK/sysbench.txt"
transactions=$(awk '/transactions:/ { print $2 }' "$WORK/sysbench.txt")
writes=$(awk '/write:/ { print $2 }' "$WORK/sysbench.txt")
read -r end_file end_pos < <(SQL -e "SHOW MASTER STATUS" | awk '{ print $1, $2 }')
want=$(summary SQL sb)
# Wait until the IO thread has every event in its relay log.
until RSQL -e "SELECT 1" >/dev/null && mariadb --no-defaults -h "${R_HOSTPORT%:*}" -P "${R_HOSTPORT#*:}" -u "$USER" \
  -p"$PASS" -e "SHOW SLAVE STATUS\G" | grep -q "Read_Master_Log_Pos: $end_pos$"; do sleep 0.5; done

start=$(date +%s.%N)
RSQL -e "START SLAVE SQL_THREAD"
RSQL -e "SELECT MASTER_POS_WAIT('$end_file', $end_pos)" >/dev/null
native_seconds=$(elapsed "$start")

start=$(date +%s.%N)
/usr/bin/time -f "%U %S %M" -o "$WORK/time" "$CAIRN" --config "$CONFIG" replica run --source sb --target "$REPLICA" --catch-up \
  --json >"$WORK/run.json" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
cairn_seconds=$(elapsed "$start")
read -r cpu_user cpu_sys rss <"$WORK/time"
applied=$(python3 -c "import json; r=json.load(open('$WORK/run.json')); print(r['transactions'], r['row_changes'])")
read -r cairn_transactions row_changes <<<"$applied"

start=$(date +%s.%N)
/usr/bin/time -f "%U %S %M" -o "$WORK/time-pg" "$CAIRN" --config "$CONFIG" replica run --source sb \
  --target "$PG_REPLICA/sb_pg" --catch-up --json >"$WORK/run-pg.json" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
pg_seconds=$(elapsed "$start")
read -r pg_cpu_user pg_cpu_sys pg_rss <"$WORK/time-pg"
[ "$(my_digest)" = "$(pg_digest)" ] || { echo "the PostgreSQL replica differs from the source" >&2; exit 1; }

for got in "$(summary RSQL sb)" "$(summary RSQL sb_cairn)"; do
  [ "$got" = "$want" ] || { echo "a replica differs from the source: $got vs $want" >&2; exit 1; }
done
RSQL -e "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL replicate_do_db = ''; DROP DATABASE sb; DROP DATABASE sb_cairn"

awk -v t="$transactions" -v w="$writes" -v l="$SECONDS_OF_LOAD" -v th="$THREADS" -v ns="$native_seconds" \
  -v cs="$cairn_seconds" -v ct="$cairn_transactions" -v rc="$row_changes" -v rss="$rss" -v cu="$cpu_user" -v cy="$cpu_sys" \
  -v ps="$pg_seconds" -v pu="$pg_cpu_user" -v py="$pg_cpu_sys" -v prss="$pg_rss" 'BEGIN {
  printf "workload: sysbench oltp_write_only, %d threads, %d s: %d transactions, %d writes\n", th, l, t, w
  printf "native replica SQL thread: %.2f s = %.0f transactions/s\n", ns, t / ns
  printf "cairn replica run --catch-up: %.2f s = %.0f transactions/s, %d row changes = %.0f row changes/s, peak %d MiB\n", cs, ct / cs, rc, rc / cs, rss / 1024
  printf "cairn client: %.1f s user + %.1f s system CPU\n", cu, cy
  printf "cairn / native = %.2f\n", cs / ns
  printf "cairn replica run --catch-up into PostgreSQL: %.2f s = %.0f transactions/s, client %.1f s user + %.1f s system CPU, peak %d MiB\n", ps, ct / ps, pu, py, prss / 1024
  printf "into PostgreSQL / native = %.2f, / cairn into MariaDB = %.2f\n", ps / ns, ps / cs
}'
