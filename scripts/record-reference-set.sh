#!/usr/bin/env bash
# Records Tests/Fixtures/reference-set-<OpenBLAS core>-<CPU vendor>.json: CRC-32C hashes of SmolLM2 logits, GPTQ codes and the
# weights after 3 SFT / KD steps (one process and 1 teacher + 2 students), computed by the debug
# build the tests use. Run once, at dd45000 (before the architecture change); afterwards
# ReferenceSetTests checks that every commit reproduces them bit for bit. Re-recording to make a
# change pass defeats the point: a change that moves a last bit says which kernel and by how much.
# On a machine whose OpenBLAS picks another kernel set than the original's (sgemm rounds
# differently), record that machine's set with the code of a commit that reproduced the original
# set (check it out first) and commit the file with that commit named in the message.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-assets.sh
swift build --build-tests
RQAT_RECORD_REFERENCE_SET=1 swift test --skip-build --disable-swift-testing --filter ReferenceSetTests
echo "wrote Tests/Fixtures/reference-set-<OpenBLAS core>-<CPU vendor>.json (see the test output for the core)"
