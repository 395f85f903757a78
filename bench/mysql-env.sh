# Shared set-up of the MySQL/MariaDB benchmarks (sourced, not run): installs the tools named in
# BENCH_TOOLS when missing, builds cairn in release mode, starts the private servers of
# scripts/test-env.sh and defines CAIRN, WORK, HOST, PORT, USER, PASS, SERVER and SQL.

missing=()
for tool in ${BENCH_TOOLS:-}; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked --quiet
CAIRN=$PWD/target/release/cairn

# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
WORK=$(mktemp -d /tmp/cairn-bench.XXXXXX)
trap 'cairn_test_env_stop; rm -rf "$WORK"' EXIT
HOSTPORT=${CAIRN_TEST_MYSQL_URL#*@}
HOSTPORT=${HOSTPORT%%/*}
HOST=${HOSTPORT%:*}
PORT=${HOSTPORT#*:}
USER=cairn
PASS=cairn-test-pw
SERVER="mysql://$USER:$PASS@$HOST:$PORT"
SQL() { mariadb --no-defaults -h "$HOST" -P "$PORT" -u "$USER" -p"$PASS" -N "$@"; }
