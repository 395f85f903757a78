# Shared set-up of the PostgreSQL benchmarks (sourced, not run): installs /usr/bin/time when
# missing, builds cairn in release mode, starts the private servers of scripts/test-env.sh and
# defines CAIRN, WORK, BIN, SERVER, PGPASSWORD and elapsed.

[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
cargo build --release --locked --quiet
CAIRN=$PWD/target/release/cairn

# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
WORK=$(mktemp -d /tmp/cairn-bench.XXXXXX)
trap 'cairn_test_env_stop; rm -rf "$WORK"' EXIT
BIN=$CAIRN_TEST_PG_BIN
SERVER=${CAIRN_TEST_PG_URL%/*}
export PGPASSWORD=cairn-test-pw
# Seconds since START (from `date +%s.%N`).
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }
