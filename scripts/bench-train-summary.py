#!/usr/bin/env python3
"""The summary of scripts/bench-train.sh: rqat's training-step throughput next to PyTorch eager's,
per shape, as the ratios the targets are stated in.

    python3 scripts/bench-train-summary.py RQAT_JSON TORCH_JSON

RQAT_JSON: the JSON lines of `rqat bench train --json`; TORCH_JSON: those of
scripts/bench-train-torch.py.
"""
import json
import sys

ours = {m["shape"]: m for m in map(json.loads, sys.argv[1].split("\n")) if m["name"] == "train_step"}
torch = {m["shape"]: m for m in map(json.loads, sys.argv[2].split("\n"))}
for shape in ours:
    o, t = ours[shape], torch[shape]
    print(f"{shape}: rqat {o['tokens_per_s']:.0f} tok/s vs PyTorch eager {t['tokens_per_s']:.0f} tok/s = "
          f"{o['tokens_per_s'] / t['tokens_per_s']:.2f}x (target >= 1x); {100 * o['fraction_of_sgemm']:.0f}% of sgemm"
          + (" (target >= 50%)" if shape == "smol" else ""))
