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
  python3 scripts/bench-train-summary.py "$ours" "$theirs"
else
  echo "($python not found: PyTorch comparison skipped)" >&2
fi
