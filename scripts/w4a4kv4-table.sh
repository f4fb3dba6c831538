#!/usr/bin/env bash
# The W4A4KV4 table of docs/ACCURACY.md on SmolLM2-135M-Instruct: RTN, QuaRot + RTN and
# FlatQuant + RTN at the scheme given (default w4a4kv4), calibrated on the 20 GSM8K test
# originals (question and worked answer, one per line), scored by perplexity on 30 GSM-Symbolic
# validation problems (question and worked answer, 6,368 tokens). Prints a markdown table with
# FlatQuant's calibration (blocks, steps, mean output MSE before and after, seconds).
# Usage: bash scripts/w4a4kv4-table.sh [scheme] [calibration windows] [window tokens] [flatquant epochs]
set -euo pipefail
cd "$(dirname "$0")/.."
scheme="${1:-w4a4kv4}"; windows="${2:-32}"; window_tokens="${3:-256}"; epochs="${4:-5}"
work="${WORK:-runs/w4a4kv4-table}"
mkdir -p "$work"
R=.build/release/rqat
M=assets/SmolLM2-135M-Instruct.Q4_1.gguf
swift build -c release --product rqat >&2

$R data gsm8k --split test --count 100 --out "$work/calib.jsonl" >&2
$R data gsm-symbolic --split validation --count 30 --out "$work/heldout.jsonl" >&2
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
for name in ("calib", "heldout"):
    rows = [json.loads(line) for line in open(f"{work}/{name}.jsonl")]
    with open(f"{work}/{name}.txt", "w") as f:
        for r in rows:
            f.write((r["prompt"] + " " + r["completion"]).replace("\n", " ") + "\n")
PY

ppl() { $R ppl --model "$1" --data "$work/heldout.txt" | sed -E 's/perplexity ([0-9.]+).*/\1/'; }
echo "| model | perplexity | PTQ seconds | FlatQuant calibration |"
echo "|---|---|---|---|"
echo "| FP | $(ppl $M) | | |"
for method in rtn quarot flatquant; do
  out="$work/$method-$scheme"
  if [ ! -s "$out/ptq-report.json" ]; then
    extra=(); [ "$method" = flatquant ] && extra=(--epochs "$epochs")
    $R ptq --model $M --scheme "$scheme" --method "$method" --calib "$work/calib.txt" \
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
    cal = "%d blocks x %d steps, mean output MSE %.4g -> %.4g, %d kept at identity, %.0f s" % (
        n, blocks[0]["steps"], before, after, kept, sum(b["seconds"] for b in blocks))
print("%s|%.0f|%s" % (r["method"], r["seconds"], cal))
PY
)"
  IFS='|' read -r name seconds cal <<<"$summary"
  echo "| $name $scheme | $(ppl "$out") | $seconds | $cal |"
done
