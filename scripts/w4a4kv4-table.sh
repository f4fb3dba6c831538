#!/usr/bin/env bash
# The W4A4KV4 table of docs/ACCURACY.md on SmolLM2-135M-Instruct: RTN, QuaRot + RTN and
# FlatQuant + RTN at the scheme given (default w4a4kv4), calibrated on the model's own reasoning
# traces and scored by perplexity on held-out traces (scripts/smollm2-traces.sh). Prints a
# markdown table with FlatQuant's calibration (blocks, steps, mean block-output MSE at the
# start and after, blocks that kept the start, seconds).
# Usage: bash scripts/w4a4kv4-table.sh [scheme] [calibration windows] [window tokens] [flatquant epochs]
set -euo pipefail
cd "$(dirname "$0")/.."
scheme="${1:-w4a4kv4}"; windows="${2:-32}"; window_tokens="${3:-256}"; epochs="${4:-5}"
work="${WORK:-runs/w4a4kv4-table}"
mkdir -p "$work"
R=.build/release/rqat
M=assets/SmolLM2-135M-Instruct.Q4_1.gguf
swift build -c release --product rqat >&2

bash scripts/smollm2-traces.sh "$work"

ppl() { $R ppl --model "$1" --data "$work/heldout-traces.jsonl" | sed -E 's/perplexity ([0-9.]+).*/\1/'; }
echo "| model | perplexity | PTQ seconds | FlatQuant calibration |"
echo "|---|---|---|---|"
echo "| FP | $(ppl $M) | | |"
for method in rtn quarot flatquant; do
  out="$work/$method-$scheme"
  if [ ! -s "$out/ptq-report.json" ]; then
    extra=(); [ "$method" = flatquant ] && extra=(--epochs "$epochs")
    $R ptq --model $M --scheme "$scheme" --method "$method" --calib "$work/calib-traces.jsonl" \
      --calib-samples "$windows" --seq-len "$window_tokens" --out "$out" "${extra[@]}" >&2
  fi
  summary="$(python3 - "$out/ptq-report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
blocks = r.get("flatquant_blocks") or []
cal = ""
if blocks:
    n = len(blocks)
    before = sum(b["mse_before"] for b in blocks) / n
    after = sum(b["mse_after"] for b in blocks) / n
    kept = sum(b["kept_initial"] for b in blocks)
    cal = "%d blocks x %d steps, mean output MSE %.4g -> %.4g, %d kept the start, %.0f s" % (
        n, blocks[0]["steps"], before, after, kept, sum(b["seconds"] for b in blocks))
print("%s|%.0f|%s" % (r["method"], r["seconds"], cal))
PY
)"
  IFS='|' read -r name seconds cal <<<"$summary"
  echo "| $name $scheme | $(ppl "$out") | $seconds | $cal |"
done
