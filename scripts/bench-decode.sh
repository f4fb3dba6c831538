#!/usr/bin/env bash
# rqat's decode speed next to transformers' generate on the same model, prompt and thread
# count, measured in one run, with the ratios the targets are stated in.
# rqat measures batch-1 and batch-8 decode over REPEATS rounds (default 7), each decode between two
# memory-bandwidth measurements, and reports medians with their min-max spread.
# Needs the reference Python environment for the transformers side (see scripts/make-reference.py);
# without it only rqat's figures are printed.
#   THREADS (2), REPEATS (7), REF_PYTHON (/opt/rqat-ref/bin/python), SCRATCH_PATH (.build)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-2}"
repeats="${REPEATS:-7}"
python="${REF_PYTHON:-/opt/rqat-ref/bin/python}"
scratch="${SCRATCH_PATH:-.build}"
swift build -c release --product rqat --scratch-path "$scratch" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
rqat_json="$("$scratch"/release/rqat bench decode --threads "$threads" --repeats "$repeats" --json)"
echo "$rqat_json"
tf_json="[]"
if [ -x "$python" ]; then
  tf_json="$("$python" scripts/bench-transformers.py --threads "$threads" --batches 1)"
  echo "$tf_json"
else
  echo "($python not found: transformers comparison skipped)" >&2
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 scripts/bench-decode-summary.py "$rqat_json" "$tf_json"
