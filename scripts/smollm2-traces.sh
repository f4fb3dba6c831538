#!/usr/bin/env bash
# SmolLM2-135M-Instruct's own reasoning traces, the calibration and held-out text of the SmolLM2
# tables: the FP model answers GSM8K questions (GSM-Symbolic templates 0000-0063, two samples
# each, temperature 0.6, top-p 0.95, 256 tokens) -> WORK/calib-traces.jsonl; questions 0064-0099
# (one sample) -> WORK/heldout-traces.jsonl. Kept when already there.
# Usage: bash scripts/smollm2-traces.sh WORK
set -euo pipefail
cd "$(dirname "$0")/.."
work="$1"
mkdir -p "$work"
R=.build/release/rqat
M=assets/SmolLM2-135M-Instruct.Q4_1.gguf
python3 scripts/gsm-prompts.py "$work/calib-prompts.jsonl" 0 64 --repeat 2
python3 scripts/gsm-prompts.py "$work/heldout-prompts.jsonl" 64
for name in calib heldout; do
  if [ ! -s "$work/$name-traces.jsonl" ]; then
    $R generate --model $M --chat --prompts "$work/$name-prompts.jsonl" --out "$work/$name-traces.jsonl" \
      --max-tokens 256 --temperature 0.6 --top-p 0.95 --seed 42 --batch 8 >&2
  fi
done

