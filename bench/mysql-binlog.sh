#!/usr/bin/env bash
# MySQL/MariaDB binary log benchmark: how fast cairn captures an incremental (MB/s of binary log
# stored) against how fast a saturating sysbench write workload produces it, and how fast cairn
# replays it (row changes/s) against `mysqlbinlog | mysql` on the same events, same server.
#
#   bench/mysql-binlog.sh                       # 4 tables of 100k rows, 4 writer threads, 30 s
#   SECONDS_OF_LOAD=60 THREADS=8 bench/mysql-binlog.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TABLES=${TABLES:-4}
SIZE=${SIZE:-100000}
THREADS=${THREADS:-4}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-30}
BENCH_TOOLS="sysbench"
# shellcheck source=bench/mysql-env.sh
source bench/mysql-env.sh
DATADIR="$CAIRN_TEST_ENV_DIR/mariadb/data"
elapsed() { local start=$1; awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }
summary() { SQL -e "SELECT SUM(n), SUM(s) FROM ($(for t in $(seq 1 "$TABLES"); do
  [ "$t" -gt 1 ] && printf ' UNION ALL '; printf 'SELECT COUNT(*) n, SUM(k + id) + SUM(CRC32(c)) s FROM %s.sbtest%s' "$1" "$t"; done)) x"; }
binlog_bytes() { SQL -e "SHOW BINARY LOGS" | awk '{ s += $2 } END { print s }'; }
SB=(sysbench --db-driver=mysql --mysql-host="$HOST" --mysql-port="$PORT" --mysql-user="$USER" --mysql-password="$PASS"
  --mysql-db=sb --tables="$TABLES" --table-size="$SIZE")

SQL -e "DROP DATABASE IF EXISTS sb; CREATE DATABASE sb"
"${SB[@]}" oltp_write_only prepare >/dev/null
"$CAIRN" backup --name sb --source "$SERVER/sb" --to "$WORK/cairn" --type full 2>"$WORK/err" >/dev/null
read -r full_file full_pos < <("$CAIRN" status --json --source sb --from "$WORK/cairn" \
  | python3 -c "import json,sys; c=json.load(sys.stdin)[0]['copies'][0]['log_range']['end']; print(c['file'], c['position'])")

before=$(binlog_bytes)
start=$(date +%s.%N)
"${SB[@]}" --threads="$THREADS" --time="$SECONDS_OF_LOAD" --report-interval=0 oltp_write_only run >"$WORK/sysbench.txt"
load_seconds=$(elapsed "$start")
produced=$(( $(binlog_bytes) - before ))
want=$(summary sb)

start=$(date +%s.%N)
"$CAIRN" backup --name sb --source "$SERVER/sb" --to "$WORK/cairn" --type incremental 2>"$WORK/err" >/dev/null || { cat "$WORK/err"; exit 1; }
capture_seconds=$(elapsed "$start")
incr=$("$CAIRN" status --json --source sb --from "$WORK/cairn" | python3 -c "import json,sys; c=json.load(sys.stdin)[0]['copies'][-1]; d=c['details']; e=c['log_range']['end']; print(d['raw_bytes'], d['transactions'], d['events'], e['file'], e['position'])")
read -r raw transactions events end_file end_pos <<<"$incr"
stored=$(du -sb "$WORK/cairn/sb/copies/"*-incr | cut -f1)

# Replay: the full copy alone, then the whole chain; the difference is the replay.
start=$(date +%s.%N)
"$CAIRN" restore --source sb --from "$WORK/cairn" --copy "$(ls "$WORK/cairn/sb/copies" | grep full)" --target "$SERVER" \
  --rename-db sb=sb_full --no-binlog --position-file "$WORK/p0.json" >/dev/null 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
full_seconds=$(elapsed "$start")
start=$(date +%s.%N)
"$CAIRN" restore --source sb --from "$WORK/cairn" --target "$SERVER" --rename-db sb=sb_cairn --no-binlog \
  --position-file "$WORK/p1.json" >"$WORK/restore.txt" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
chain_seconds=$(elapsed "$start")
row_changes=$(grep -o '[0-9]* row changes' "$WORK/restore.txt" | cut -d' ' -f1)
replay_seconds=$(awk -v a="$chain_seconds" -v b="$full_seconds" 'BEGIN { printf "%.2f", a - b }')

# mysqlbinlog | mysql on the same events, into the full copy restored by cairn.
files=$(SQL -e "SHOW BINARY LOGS" | awk -v f="$full_file" -v l="$end_file" '$1 >= f && $1 <= l { print $1 }')
paths=$(for f in $files; do printf '%s/%s ' "$DATADIR" "$f"; done)
start=$(date +%s.%N)
# shellcheck disable=SC2086
mariadb-binlog --no-defaults --start-position="$full_pos" --stop-position="$end_pos" --rewrite-db="sb->sb_full" $paths \
  | mariadb --no-defaults -h "$HOST" -P "$PORT" -u "$USER" -p"$PASS"
binlog_seconds=$(elapsed "$start")

for restored in sb_cairn sb_full; do
  got=$(summary "$restored")
  [ "$got" = "$want" ] || { echo "replay into $restored differs: $got vs $want" >&2; exit 1; }
done

awk -v p="$produced" -v l="$load_seconds" -v r="$raw" -v c="$capture_seconds" -v s="$stored" -v t="$transactions" \
  -v e="$events" -v rc="$row_changes" -v rs="$replay_seconds" -v bs="$binlog_seconds" -v th="$THREADS" 'BEGIN {
  printf "workload: sysbench oltp_write_only, %d threads, %.1f s: %.1f MB of binary log (%.2f MB/s produced)\n", th, l, p / 1e6, p / 1e6 / l
  printf "capture:  %.1f MB raw (%d events, %d transactions) in %.2f s = %.1f MB/s; stored %.1f MB (zstd)\n", r / 1e6, e, t, c, r / 1e6 / c, s / 1e6
  printf "replay:   cairn %d row changes in %.2f s = %.0f rows/s; mysqlbinlog | mysql %.2f s; cairn/mysqlbinlog = %.2f\n", rc, rs, rc / rs, bs, rs / bs
}'
