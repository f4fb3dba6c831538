#!/usr/bin/env bash
# rqat's training-step throughput next to PyTorch eager on the same shapes and thread count,
# measured in one run, with the ratios the targets are stated in. The PyTorch side needs the
# reference environment of scripts/make-reference.py; without it only rqat's figures print.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-2}"
python="${REF_PYTHON:-/opt/rqat-ref/bin/python}"
swift build -c release --product rqat >&2
ours="$(.build/release/rqat bench train --threads "$threads" --json)"
echo "$ours"
if [ -x "$python" ]; then
  theirs="$("$python" scripts/bench-train-torch.py --threads "$threads")"
  echo "$theirs"
  python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours = {m["shape"]: m for m in map(json.loads, sys.argv[1].split("\n")) if m["name"] == "train_step"}
torch = {m["shape"]: m for m in map(json.loads, sys.argv[2].split("\n"))}
for shape in ours:
    o, t = ours[shape], torch[shape]
    print(f"{shape}: rqat {o['tokens_per_s']:.0f} tok/s vs PyTorch eager {t['tokens_per_s']:.0f} tok/s = "
          f"{o['tokens_per_s'] / t['tokens_per_s']:.2f}x (target >= 1x); {100 * o['fraction_of_sgemm']:.0f}% of sgemm"
          + (" (target >= 50%)" if shape == "smol" else ""))
PY
else
  echo "($python not found: PyTorch comparison skipped)" >&2
fi
