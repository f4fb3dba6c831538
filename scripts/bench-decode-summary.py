#!/usr/bin/env python3
"""The summary of scripts/bench-decode.sh: rqat's decode figures next to transformers', as the
ratios the targets are stated in.

    python3 scripts/bench-decode-summary.py RQAT_JSON TF_JSON

RQAT_JSON: the JSON lines of `rqat bench decode --json`; TF_JSON: those of
scripts/bench-transformers.py, or "[]" when transformers was not run.
"""
import json
import sys

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
