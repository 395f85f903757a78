#!/usr/bin/env bash
# cairn against the peers on the performance issue's data: sysbench tables (4 × 1,000,000 rows by
# default) in each engine, prepared once, then each job timed alternately (peer, cairn, peer,
# cairn, …) after one warm-up pair:
#
#   MySQL full copy     mydumper -t N (uncompressed)        cairn backup --jobs N
#   PostgreSQL copy     pg_dump -Fd -j N -Z0                cairn backup --jobs N
#   PostgreSQL restore  pg_restore -j N (of that dump)      cairn restore --jobs N
#   MySQL restore       myloader -t N (of that dump)        cairn restore --jobs N
#
# Every restore is checked against the source (rows and a sum over every row) before its time
# counts. Before each run the previous one's writes are flushed (settle), so no run pays for another. Prints each run, then per job the medians, cairn / peer, the CPU time of each client
# and cairn's peak memory; with MEMORY_SIZE set, also cairn's peak memory at that table size
# (prepared after the timed runs) to show it does not grow with the data.
#
#   bench/peers.sh                                      # 4 × 1,000,000 rows, 2 jobs, 3 rounds
#   SIZE=100000 ROUNDS=1 bench/peers.sh                 # a quick look
#   MEMORY_SIZE=100000 bench/peers.sh                   # and memory at a tenth of the data
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1000000}
TABLES=${TABLES:-4}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-3}
MEMORY_SIZE=${MEMORY_SIZE:-}
BENCH_TOOLS="mydumper sysbench"
# shellcheck source=bench/mysql-env.sh
source bench/mysql-env.sh
PG_BIN=$CAIRN_TEST_PG_BIN
PG=${CAIRN_TEST_PG_URL%/*}
PG_HOSTPORT=${PG#*@}
export PGPASSWORD=cairn-test-pw

# Runs a command; prints "wall_seconds cpu_seconds peak_kib".
measure() {
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' "$WORK/time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
PSQL() { psql -Atq "$PG/$1" "${@:2}"; }
my_summary() { SQL -e "SELECT SUM(n), SUM(s) FROM ($(for t in $(seq 1 "$TABLES"); do
  [ "$t" -gt 1 ] && printf ' UNION ALL '; printf 'SELECT COUNT(*) n, SUM(k + id + CRC32(c)) s FROM %s.sbtest%s' "$1" "$t"; done)) x"; }
pg_summary() { PSQL "$1" -c "SELECT SUM(n), SUM(s) FROM ($(for t in $(seq 1 "$TABLES"); do
  [ "$t" -gt 1 ] && printf ' UNION ALL '; printf 'SELECT COUNT(*) n, SUM(k + id + length(c)) s FROM sbtest%s' "$t"; done)) x"; }

prepare() {
  local size=$1 db=$2
  SQL -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  sysbench oltp_read_write --db-driver=mysql --mysql-host="$HOST" --mysql-port="$PORT" --mysql-user="$USER" \
    --mysql-password="$PASS" --mysql-db="$db" --tables="$TABLES" --table-size="$size" --threads="$JOBS" prepare >/dev/null
  PSQL postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  sysbench oltp_read_write --db-driver=pgsql --pgsql-host="${PG_HOSTPORT%:*}" --pgsql-port="${PG_HOSTPORT#*:}" \
    --pgsql-user=postgres --pgsql-password="$PGPASSWORD" --pgsql-db="$db" --tables="$TABLES" --table-size="$size" \
    --threads="$JOBS" prepare >/dev/null
  PSQL "$db" -c "VACUUM ANALYZE"
}

# Lets the previous run's writes reach the disk before the next one is timed: without it each
# run pays for the one before it (the page cache's writeback, PostgreSQL's checkpoint, InnoDB's
# flushing), and the second tool of every pair loses.
settle() {
  PSQL postgres -c CHECKPOINT
  for _ in $(seq 1 40); do
    [ "$(SQL -e "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'" | awk '{ print $2 }')" -lt 1000 ] && break
    sleep 0.5
  done
  sync
  sleep 2
}

# One timed run: job name, tool, then the command; records wall, cpu and memory.
run() {
  local job=$1 tool=$2
  shift 2
  settle
  read -r wall cpu kib < <(measure "$@")
  printf '%-20s %-10s %8s %8s %8s\n' "$job" "$tool" "$wall" "$cpu" "$((kib / 1024))"
  if [ -n "${COUNTING:-}" ]; then
    echo "$wall" >>"$WORK/$job.$tool.wall"
    echo "$cpu" >>"$WORK/$job.$tool.cpu"
    echo "$kib" >>"$WORK/$job.$tool.kib"
  fi
}

# One round of the four jobs, each peer then cairn, on database $1.
round() {
  local db=$1 round=$2
  rm -rf "$WORK/mydumper" "$WORK/pg_dump" "$WORK/cairn"
  run mysql-copy mydumper mydumper -h "$HOST" -P "$PORT" -u "$USER" -p "$PASS" -B "$db" -t "$JOBS" -o "$WORK/mydumper"
  run mysql-copy cairn "$CAIRN" backup --jobs "$JOBS" --name my --source "$SERVER/$db" --to "$WORK/cairn"
  run pg-copy pg_dump "$PG_BIN/pg_dump" -Fd -j "$JOBS" -Z0 -f "$WORK/pg_dump" "$PG/$db"
  run pg-copy cairn "$CAIRN" backup --jobs "$JOBS" --name pg --source "$PG/$db" --to "$WORK/cairn"
  echo "$(du -sb "$WORK/mydumper" | cut -f1) $(du -sb "$WORK/cairn/my" | cut -f1)" >"$WORK/mysql-copy.bytes"
  echo "$(du -sb "$WORK/pg_dump" | cut -f1) $(du -sb "$WORK/cairn/pg" | cut -f1)" >"$WORK/pg-copy.bytes"

  local peer="${db}_p$round" ours="${db}_c$round"
  PSQL postgres -c "CREATE DATABASE $peer"
  run pg-restore pg_restore "$PG_BIN/pg_restore" -j "$JOBS" -d "$PG/$peer" "$WORK/pg_dump"
  run pg-restore cairn "$CAIRN" restore --jobs "$JOBS" --source pg --from "$WORK/cairn" --target "$PG/$ours"
  run mysql-restore myloader myloader -h "$HOST" -P "$PORT" -u "$USER" -p "$PASS" -B "$peer" -t "$JOBS" -d "$WORK/mydumper"
  run mysql-restore cairn "$CAIRN" restore --jobs "$JOBS" --source my --from "$WORK/cairn" --target "$SERVER" --rename-db "$db=$ours"

  local want got
  want=$(pg_summary "$db")
  for restored in "$peer" "$ours"; do
    got=$(pg_summary "$restored")
    [ "$got" = "$want" ] || { echo "PostgreSQL restore into $restored differs: $got vs $want" >&2; exit 1; }
    PSQL postgres -c "DROP DATABASE $restored"
  done
  want=$(my_summary "$db")
  for restored in "$peer" "$ours"; do
    got=$(my_summary "$restored")
    [ "$got" = "$want" ] || { echo "MySQL restore into $restored differs: $got vs $want" >&2; exit 1; }
    SQL -e "DROP DATABASE $restored"
  done
}

prepare "$SIZE" sb
printf '%-20s %-10s %8s %8s %8s\n' job tool seconds cpu_s peak_mib
round sb 0
COUNTING=1
for r in $(seq 1 "$ROUNDS"); do round sb "$r"; done

echo
printf '%-14s %-10s %9s %9s %11s %9s %10s %11s\n' job peer peer_s cairn_s cairn/peer peer_cpu cairn_cpu cairn_mib
for pair in mysql-copy:mydumper pg-copy:pg_dump pg-restore:pg_restore mysql-restore:myloader; do
  job=${pair%:*} peer=${pair#*:}
  p=$(median <"$WORK/$job.$peer.wall")
  c=$(median <"$WORK/$job.cairn.wall")
  printf '%-14s %-10s %9s %9s %11s %9s %10s %11s\n' "$job" "$peer" "$p" "$c" "$(ratio "$c" "$p")" \
    "$(median <"$WORK/$job.$peer.cpu")" "$(median <"$WORK/$job.cairn.cpu")" "$(($(sort -n "$WORK/$job.cairn.kib" | tail -1) / 1024))"
done
for job in mysql-copy pg-copy; do
  read -r peer_bytes cairn_bytes <"$WORK/$job.bytes"
  echo "$job bytes: peer $peer_bytes, cairn $cairn_bytes (cairn / peer $(ratio "$cairn_bytes" "$peer_bytes"))"
done

if [ -n "$MEMORY_SIZE" ]; then
  echo
  echo "cairn's peak memory at $MEMORY_SIZE rows per table (against the largest above):"
  prepare "$MEMORY_SIZE" sb_small
  unset COUNTING
  round sb_small small
fi
