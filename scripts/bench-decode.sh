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
python3 - "$rqat_json" "$tf_json" <<'PY'
import json, sys
ours = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
tf = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip() and l.strip() != "[]"]
dec = {m["batch"]: m for m in ours if m["name"] == "decode"}
bw = next(m for m in ours if m["name"] == "memory_bandwidth")
d1 = dec[1]
b1 = d1["tokens_per_s"]
n = bw["repeats"]
print(f"medians of {n} interleaved rounds [min-max]:")
print(f"copy bandwidth {bw['copy_gb_per_s']:.1f} GB/s [{bw['copy_gb_per_s_min']:.1f}-{bw['copy_gb_per_s_max']:.1f}]")
if tf:
    tf1 = next(m for m in tf if m["batch"] == 1)["tokens_per_s"]
    print(f"batch-1 decode: rqat {b1:.1f} tok/s [{d1['tokens_per_s_min']:.1f}-{d1['tokens_per_s_max']:.1f}]"
          f" vs transformers {tf1:.1f} tok/s = {b1 / tf1:.2f}x (target >= 2x)")
print(f"batch-1 decode streams weights at {d1['implied_gb_per_s']:.1f} GB/s = "
      f"{100 * d1['fraction_of_copy_bandwidth']:.0f}% of the copy bandwidth measured around each decode "
      f"(median of {n}, min-max {100 * d1['fraction_of_copy_bandwidth_min']:.0f}-{100 * d1['fraction_of_copy_bandwidth_max']:.0f}%; "
      f"{100 * d1['fraction_of_copy_bandwidth_of_medians']:.0f}% of the median copy) (target >= 60%)")
bn = max(dec)
if bn > 1:
    d = dec[bn]
    print(f"batch-{bn} decode: {d['tokens_per_s']:.1f} tok/s [{d['tokens_per_s_min']:.1f}-{d['tokens_per_s_max']:.1f}]"
          f" = {d['speedup_over_batch_1']:.2f}x batch 1 (per round min/median/max {d['speedup_over_batch_1_per_round_min']:.2f}/"
          f"{d['speedup_over_batch_1_per_round_median']:.2f}/{d['speedup_over_batch_1_per_round_max']:.2f}x) (target >= 5x); "
          f"weights at {d['implied_gb_per_s']:.1f} GB/s")
PY
