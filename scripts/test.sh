#!/usr/bin/env bash
# The test command of README.md: formatting, lints and every test, against private database
# servers this script starts (and stops) itself, and an S3 server the tests start in-process.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet

# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh

# Everything the tests and the binary leave in the temporary folder (the in-process S3 server's
# root, replay work folders, lock files) goes into one folder removed at the end, so repeated
# runs leave /tmp as they found it. Set after the servers started: they keep the system's.
CAIRN_TEST_TMP=$(mktemp -d /tmp/cairn-test-tmp.XXXXXX)
trap 'cairn_test_env_stop; rm -rf "$CAIRN_TEST_TMP"' EXIT
export TMPDIR="$CAIRN_TEST_TMP"

# Doc tests first, so the closing line of this run is the test suite's own summary.
cargo test --locked --doc
cargo test --locked --all-targets
