#!/usr/bin/env bash
# PostgreSQL benchmark: cairn full backup and restore against pg_dump -Fd -j N and
# pg_restore -j N, at equal parallelism, on the same private server and disk, in one run.
#
#   bench/postgres.sh                # scales 20 and 40, 2 jobs
#   SCALES="50 100" JOBS=4 bench/postgres.sh
#
# Prints wall time, bytes written and peak memory (max RSS) of every run, and the ratios.
# Data: pgbench tables (pgbench_accounts dominates: about 15 MB per scale unit).
set -euo pipefail
cd "$(dirname "$0")/.."

SCALES=${SCALES:-"20 40"}
JOBS=${JOBS:-2}
# shellcheck source=bench/pg-env.sh
source bench/pg-env.sh

# Runs a command, printing "seconds max_rss_kib".
measure() {
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/time"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

printf '%-6s %-22s %9s %12s %12s\n' scale run seconds bytes peak_rss_mib
for scale in $SCALES; do
  db="bench_$scale"
  name="bench-$scale"
  psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  "$BIN/pgbench" -i -q -s "$scale" "$SERVER/$db" >/dev/null 2>&1
  psql -q "$SERVER/$db" -c "VACUUM ANALYZE"

  read -r t_cairn m_cairn < <(measure "$CAIRN" backup --jobs "$JOBS" --name "$name" --source "$SERVER/$db" --to "$WORK/cairn")
  b_cairn=$(du -sb "$WORK/cairn/$name" | cut -f1)
  read -r t_dump m_dump < <(measure "$BIN/pg_dump" -Fd -j "$JOBS" -f "$WORK/pgdump_$db" "$SERVER/$db")
  b_dump=$(du -sb "$WORK/pgdump_$db" | cut -f1)

  psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS ${db}_c" -c "DROP DATABASE IF EXISTS ${db}_p" -c "CREATE DATABASE ${db}_p"
  read -r t_crest m_crest < <(measure "$CAIRN" restore --jobs "$JOBS" --source "$name" --from "$WORK/cairn" --target "$SERVER/${db}_c")
  read -r t_prest m_prest < <(measure "$BIN/pg_restore" -j "$JOBS" -d "$SERVER/${db}_p" "$WORK/pgdump_$db")

  # Both restores must hold the same rows, or the times mean nothing.
  for restored in "${db}_c" "${db}_p"; do
    sum=$(psql -Atq "$SERVER/$restored" -c "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts")
    want=$(psql -Atq "$SERVER/$db" -c "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts")
    [ "$sum" = "$want" ] || { echo "restore into $restored differs: $sum vs $want" >&2; exit 1; }
  done

  mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
  printf '%-6s %-22s %9s %12s %12s\n' "$scale" "cairn backup -j$JOBS" "$t_cairn" "$b_cairn" "$(mib "$m_cairn")"
  printf '%-6s %-22s %9s %12s %12s\n' "$scale" "pg_dump -Fd -j$JOBS" "$t_dump" "$b_dump" "$(mib "$m_dump")"
  printf '%-6s %-22s %9s %12s %12s\n' "$scale" "cairn restore -j$JOBS" "$t_crest" "-" "$(mib "$m_crest")"
  printf '%-6s %-22s %9s %12s %12s\n' "$scale" "pg_restore -j$JOBS" "$t_prest" "-" "$(mib "$m_prest")"
  echo "scale $scale: backup time cairn/pg_dump = $(ratio "$t_cairn" "$t_dump"), restore time cairn/pg_restore = $(ratio "$t_crest" "$t_prest"), bytes cairn/pg_dump = $(ratio "$b_cairn" "$b_dump")"
  rm -rf "$WORK/pgdump_$db"
  psql -q "$SERVER/postgres" -c "DROP DATABASE ${db}_c" -c "DROP DATABASE ${db}_p"
done
