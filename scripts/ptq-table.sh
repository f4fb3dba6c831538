#!/usr/bin/env bash
# The PTQ accuracy table of docs/ACCURACY.md, end to end, on SmolLM2-135M-Instruct:
#  1. teacher traces (scripts/smollm2-traces.sh): the FP model answers GSM8K questions
#     (templates 0000-0063, two samples each) -> calibration; 0064-0099 -> held-out text;
#  2. a plain-text calibration set of the other domain: English prose from Python's own
#     documentation topics (pydoc_data), one paragraph per line;
#  3. RTN, RTN+clip, GPTQ, GPTQ+act-order at the scheme given (default w3g128), calibrated on each
#     domain; for each: the sum of relative output errors over the 210 matrices and the held-out
#     perplexity on the teacher traces. Prints a markdown table.
# Usage: bash scripts/ptq-table.sh [scheme] [calibration windows] [window tokens]
set -euo pipefail
cd "$(dirname "$0")/.."
scheme="${1:-w3g128}"; windows="${2:-64}"; window_tokens="${3:-256}"
work="${WORK:-runs/ptq-table}"
mkdir -p "$work"
R=.build/release/rqat
M=assets/SmolLM2-135M-Instruct.Q4_1.gguf
swift build -c release --product rqat >&2

python3 - "$work" <<'PY'
import sys
import pydoc_data.topics as topics
work = sys.argv[1]
with open(f"{work}/plain.txt", "w") as f:
    for key in sorted(topics.topics):
        for para in topics.topics[key].split("\n\n"):
            para = " ".join(para.split())
            if len(para) > 200:
                f.write(para + "\n")
PY

bash scripts/smollm2-traces.sh "$work"

ppl() { $R ppl --model "$1" --data "$work/heldout-traces.jsonl" | sed -E 's/perplexity ([0-9.]+).*/\1/'; }
fp="$(ppl $M)"
echo "| method | calibration | sum of relative output errors (210 matrices) | held-out perplexity |"
echo "|---|---|---|---|"
echo "| FP (fp32) | - | 0 | $fp |"
for domain in traces plain; do
  calib="$work/calib-traces.jsonl"; [ "$domain" = plain ] && calib="$work/plain.txt"
  for variant in "rtn" "rtn --clip" "gptq" "gptq --act-order"; do
    set -- $variant
    method="$1"; shift
    tag="$scheme-$method${1:+-${1#--}}-$domain"
    out="$work/$tag"
    if ! log="$($R ptq --model $M --scheme "$scheme" --method "$method" "$@" --calib "$calib" \
                --calib-samples "$windows" --seq-len "$window_tokens" --out "$out" 2>&1)"; then
      echo "$log" >&2
      exit 1
    fi
    # The sum as rqat ptq prints it (4 decimals), from the report it writes next to the checkpoint.
    err="$(python3 -c 'import json, sys; print("%.4f" % json.load(open(sys.argv[1]))["sum_relative_output_error"])' "$out/ptq-report.json")"
    echo "| $method${1:+ $1} | $domain | $err | $(ppl "$out") |"
  done
done
