#!/usr/bin/env bash
# rqat's decode speed next to transformers' generate on the same model, prompt and thread
# count, measured in one run, with the ratios the targets are stated in.
# Needs the reference Python environment for the transformers side (see scripts/make-reference.py);
# without it only rqat's figures are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-2}"
python="${REF_PYTHON:-/opt/rqat-ref/bin/python}"
swift build -c release --product rqat >&2
rqat_json="$(.build/release/rqat bench decode --threads "$threads" --json)"
echo "$rqat_json"
if [ -x "$python" ]; then
  tf_json="$("$python" scripts/bench-transformers.py --threads "$threads" --batches 1)"
  echo "$tf_json"
  python3 - "$rqat_json" "$tf_json" <<'PY'
import json, sys
ours = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
tf = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip()]
dec = {m["batch"]: m for m in ours if m["name"] == "decode"}
tf1 = next(m for m in tf if m["batch"] == 1)["tokens_per_s"]
b1 = dec[1]["tokens_per_s"]
bn = max(dec)
print(f"batch-1 decode: rqat {b1:.1f} tok/s vs transformers {tf1:.1f} tok/s = {b1 / tf1:.2f}x (target >= 2x)")
print(f"batch-1 decode streams weights at {100 * dec[1]['fraction_of_copy_bandwidth']:.0f}% of copy bandwidth (target >= 60%)")
print(f"batch-{bn} decode: {dec[bn]['tokens_per_s']:.1f} tok/s = {dec[bn]['speedup_over_batch_1']:.2f}x batch 1 (target >= 5x)")
PY
else
  echo "($python not found: transformers comparison skipped)" >&2
fi
