#!/usr/bin/env bash
# The main job on the embedded default: the Reasoning-QAT pipeline (configs/arith.json) on the
# built-in arith task, on 1 teacher + 2 student MPI ranks on this machine (cluster/launch.sh):
#   teacher trained from scratch (kept: a re-run skips it) -> its reasoning traces -> calibration
#   -> PTQ (RTN, GPTQ at W3G128 and W2G64) -> QAT with SFT and with KD -> accuracy of every model;
# report in runs/arith/report.md and report.html. A re-run skips unchanged stages.
# Pass another config as the first argument (e.g. configs/smollm2-gsm.json).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-configs/arith.json}"
bash scripts/setup.sh
bash scripts/fetch-assets.sh
swift build -c release --product rqat >&2
bash cluster/launch.sh --teachers 1 --students 2 -- "$PWD/.build/release/rqat" pipeline --config "$CONFIG" --assets "$PWD/assets"
