#!/usr/bin/env bash
# Mutation testing of cairn's guards: cargo-mutants changes the code one mutant at a time (a
# condition negated, a function that returns early, a check removed) and runs the tests; a
# mutant the tests do not notice is a guard without a test. Slow — a build and a test run per
# mutant — so it is not part of CI; docs/testing.md records the results.
#
#   scripts/mutants.sh                      every safety-critical file, the whole suite
#   scripts/mutants.sh src/repo/envelope.rs      one file
#   MUTANTS_TESTS="--lib" scripts/mutants.sh src/repo/envelope.rs   only the unit tests (fast)
#
# Results land in mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null 2>&1; then
  cargo install cargo-mutants --locked
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(
    src/repo/envelope.rs src/repo/codec.rs src/repo/status/mod.rs src/repo/status/query.rs src/repo/lock.rs
    src/repo/writer.rs src/repo/reader.rs src/repo/file_kind.rs
    src/storage/local.rs src/storage/s3/*.rs src/jobs/backup.rs src/engine/pool.rs src/retry.rs
    src/engine/mysql/capture.rs src/engine/mysql/capture_read.rs src/engine/mysql/segment.rs
    src/engine/mysql/scope.rs src/engine/mysql/replay/*.rs
  )
fi

# The integration tests need the private servers.
# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
trap cairn_test_env_stop EXIT

file_args=()
for file in "${files[@]}"; do
  file_args+=(--file "$file")
done
# shellcheck disable=SC2086
cargo mutants --no-shuffle --jobs 1 --timeout 600 "${file_args[@]}" -- ${MUTANTS_TESTS:-}
