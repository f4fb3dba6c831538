#!/usr/bin/env bash
# Records Tests/Fixtures/reference-set.json: CRC-32C hashes of SmolLM2 logits, GPTQ codes and the
# weights after 3 SFT / KD steps (one process and 1 teacher + 2 students), computed by the debug
# build the tests use. Run once, at dd45000 (before the architecture change); afterwards
# ReferenceSetTests checks that every commit reproduces them bit for bit. Re-recording to make a
# change pass defeats the point: a change that moves a last bit says which kernel and by how much.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-assets.sh
swift build --build-tests
RQAT_RECORD_REFERENCE_SET=1 swift test --skip-build --disable-swift-testing --filter ReferenceSetTests
echo "wrote Tests/Fixtures/reference-set.json"
