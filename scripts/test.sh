#!/usr/bin/env bash
# Runs every test from a fresh Debian/Ubuntu machine: system libraries, assets, build, tests.
# Idempotent; what is already there is not installed or fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-assets.sh
# Tests run with two OpenBLAS threads (the machine's cores) unless told otherwise.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-2}"
swift build --build-tests
# XCTest only: the package has no swift-testing tests, whose empty summary would read as "0 tests".
swift test --skip-build --disable-swift-testing "$@"
