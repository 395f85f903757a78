#!/usr/bin/env bash
# MySQL/MariaDB benchmark: cairn full backup and restore against mydumper -t N -c / myloader -t N
# (same N) and mysqldump --single-transaction / mysql, on the same private server and disk, in
# one run. Data: sysbench oltp tables.
#
#   bench/mysql.sh                              # 4 tables of 100k and of 250k rows, 2 threads
#   SIZES="500000" TABLES=8 JOBS=4 bench/mysql.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"100000 250000"}
TABLES=${TABLES:-4}
JOBS=${JOBS:-2}
BENCH_TOOLS="mydumper sysbench"
# shellcheck source=bench/mysql-env.sh
source bench/mysql-env.sh

measure() {
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/time"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
row() { printf '%-8s %-24s %9s %12s %12s\n' "$@"; }
summary() { SQL -e "SELECT SUM(n), SUM(s) FROM ($(for t in $(seq 1 "$TABLES"); do
  [ "$t" -gt 1 ] && printf ' UNION ALL '; printf 'SELECT COUNT(*) n, SUM(k + id) s FROM %s.sbtest%s' "$1" "$t"; done)) x"; }

row rows run seconds bytes peak_rss_mib
for size in $SIZES; do
  db="sb_$size"
  SQL -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  sysbench oltp_read_write --db-driver=mysql --mysql-host="$HOST" --mysql-port="$PORT" --mysql-user="$USER" \
    --mysql-password="$PASS" --mysql-db="$db" --tables="$TABLES" --table-size="$size" prepare >/dev/null
  want=$(summary "$db")

  read -r t1 m1 < <(measure "$CAIRN" backup --jobs "$JOBS" --name "sb-$size" --source "$SERVER/$db" --to "$WORK/cairn")
  b1=$(du -sb "$WORK/cairn/sb-$size" | cut -f1)
  read -r t2 m2 < <(measure mydumper -h "$HOST" -P "$PORT" -u "$USER" -p "$PASS" -B "$db" -t "$JOBS" -c -o "$WORK/mydumper_$db")
  b2=$(du -sb "$WORK/mydumper_$db" | cut -f1)
  read -r t3 m3 < <(measure sh -c "mysqldump --no-defaults -h $HOST -P $PORT -u $USER -p$PASS --single-transaction $db > $WORK/dump_$db.sql")
  b3=$(stat -c %s "$WORK/dump_$db.sql")

  read -r t4 m4 < <(measure "$CAIRN" restore --jobs "$JOBS" --source "sb-$size" --from "$WORK/cairn" --target "$SERVER" --rename-db "$db=${db}_c")
  read -r t5 m5 < <(measure myloader -h "$HOST" -P "$PORT" -u "$USER" -p "$PASS" -B "${db}_m" -t "$JOBS" -d "$WORK/mydumper_$db")
  SQL -e "CREATE DATABASE ${db}_p"
  read -r t6 m6 < <(measure sh -c "mariadb --no-defaults -h $HOST -P $PORT -u $USER -p$PASS ${db}_p < $WORK/dump_$db.sql")
  for restored in "${db}_c" "${db}_m" "${db}_p"; do
    got=$(summary "$restored")
    [ "$got" = "$want" ] || { echo "restore into $restored differs: $got vs $want" >&2; exit 1; }
  done

  rows=$((size * TABLES))
  row "$rows" "cairn backup -j$JOBS" "$t1" "$b1" "$(mib "$m1")"
  row "$rows" "mydumper -t$JOBS -c" "$t2" "$b2" "$(mib "$m2")"
  row "$rows" "mysqldump --single-trx" "$t3" "$b3" "$(mib "$m3")"
  row "$rows" "cairn restore -j$JOBS" "$t4" - "$(mib "$m4")"
  row "$rows" "myloader -t$JOBS" "$t5" - "$(mib "$m5")"
  row "$rows" "mysql < dump" "$t6" - "$(mib "$m6")"
  echo "$rows rows: backup cairn/mydumper = $(ratio "$t1" "$t2"), cairn/mysqldump = $(ratio "$t1" "$t3"); restore cairn/myloader = $(ratio "$t4" "$t5"), cairn/mysql = $(ratio "$t4" "$t6"); bytes cairn/mydumper = $(ratio "$b1" "$b2")"
  rm -rf "$WORK/mydumper_$db" "$WORK/dump_$db.sql"
  SQL -e "DROP DATABASE ${db}_c; DROP DATABASE ${db}_m; DROP DATABASE ${db}_p; DROP DATABASE $db"
done
