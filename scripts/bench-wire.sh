#!/usr/bin/env bash
# The wire benchmark of docs/WIRE.md ("Measurements"): SmolLM2-135M-Instruct as teacher, its RTN
# W3G128 copy as student, on the teacher's own reasoning traces for the GSM-Symbolic questions.
#   1. builds rqat (release);
#   2. writes the traces if runs/wire/traces.jsonl is missing (100 questions, 200 new tokens each);
#   3. runs `rqat bench wire`: tables on stdout and in runs/wire/bench.txt, JSON lines in
#      runs/wire/bench.jsonl.
# About 25-35 minutes on 2 cores (the traces 5-15 more). Extra arguments go to `rqat bench wire`,
# e.g. a quick variant:  bash scripts/bench-wire.sh --steps 4 --wire-batches 2 --runs full,top-64
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH="${SCRATCH:-.build}"
M=assets/SmolLM2-135M-Instruct.Q4_1.gguf
W=runs/wire
[ -s "$M" ] || bash scripts/fetch-assets.sh
swift build -c release --scratch-path "$SCRATCH" --product rqat >&2
R="$SCRATCH/release/rqat"
mkdir -p "$W"

if [ ! -s "$W/traces.jsonl" ]; then
  python3 scripts/gsm-prompts.py "$W/prompts.jsonl" 0
  $R generate --model $M --chat --prompts "$W/prompts.jsonl" --out "$W/traces.jsonl.part" \
      --max-tokens 200 --temperature 0.6 --top-p 0.95 --seed 42 --batch 8
  mv "$W/traces.jsonl.part" "$W/traces.jsonl"
fi

rm -f "$W/bench.jsonl"
$R bench wire --teacher $M --scheme w3g128 --data "$W/traces.jsonl" --heldout-count 16 \
    --seq-len 256 --rows 2 --wire-batches 8 --steps 30 --lr 5e-5 --warmup 2 --seed 0 \
    --json-out "$W/bench.jsonl" "$@" | tee "$W/bench.txt"
