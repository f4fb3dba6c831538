#!/usr/bin/env bash
# The main job on the embedded default, from a fresh Debian/Ubuntu machine: the Reasoning-QAT
# workflow in miniature on the real SmolLM2-135M-Instruct and real GSM8K problems, with the
# stages that exist today (GRPO and GSM8K accuracy evaluation follow in the issues):
#   1. the full-precision teacher writes reasoning traces for GSM8K questions;
#   2. PTQ init: GPTQ at W3G128, calibrated on those traces (reasoning domain);
#   3. QAT of the fake-quant W3G128 student (straight-through) from the GPTQ weights, twice with
#      the same steps: (a) SFT on the traces; (b) knowledge distillation from the FP teacher,
#      run on the cluster runtime: cluster/launch.sh starts 1 teacher rank and 1 student rank
#      under mpirun, the teacher sends its top-64 log-probabilities as compressed frames;
#   4. evaluation: perplexity of FP, PTQ and both QAT models on held-out teacher traces, and
#      each model's answer to a held-out question.
# Everything goes to runs/demo (re-running reuses finished stages). Small sizes keep it to a few
# minutes on 2 cores; scale them with the variables below.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN_QUESTIONS="${TRAIN_QUESTIONS:-24}"; HELDOUT_QUESTIONS="${HELDOUT_QUESTIONS:-8}"
TRACE_TOKENS="${TRACE_TOKENS:-192}"; QAT_STEPS="${QAT_STEPS:-12}"
bash scripts/setup.sh
bash scripts/fetch-assets.sh
swift build -c release --product rqat >&2
R=.build/release/rqat
M=assets/SmolLM2-135M-Instruct.Q4_1.gguf
W=runs/demo
mkdir -p "$W"

python3 scripts/gsm-prompts.py "$W/train-prompts.jsonl" 0 "$TRAIN_QUESTIONS"
python3 scripts/gsm-prompts.py "$W/heldout-prompts.jsonl" "-$HELDOUT_QUESTIONS"
python3 scripts/gsm-prompts.py "$W/question.txt" -1 --with-answer

echo "== 1. teacher traces (FP model, temperature 0.6, top-p 0.95)"
for split in train heldout; do
  [ -s "$W/$split-traces.jsonl" ] || $R generate --model $M --chat --prompts "$W/$split-prompts.jsonl" \
      --out "$W/$split-traces.jsonl" --max-tokens "$TRACE_TOKENS" --temperature 0.6 --top-p 0.95 --seed 42
done

echo "== 2. PTQ init: GPTQ W3G128 calibrated on the teacher's traces"
[ -s "$W/gptq-w3g128/config.json" ] || $R ptq --model $M --scheme w3g128 --method gptq \
    --calib "$W/train-traces.jsonl" --calib-samples 32 --seq-len 256 --out "$W/gptq-w3g128"

echo "== 3. QAT: fake-quant W3G128 fine-tuning on the traces, from the GPTQ weights"
python3 scripts/traces-to-sft.py "$W/train-traces.jsonl" "$W/train-sft.jsonl"
QAT_ARGS=(--qat w3g128 --data "$W/train-sft.jsonl" --steps "$QAT_STEPS" --seq-len 384 --batch-tokens 1536
          --lr 2e-5 --warmup 2 --drop-long)
echo "-- 3a. SFT (cross-entropy on the traces)"
$R sft --model "$W/gptq-w3g128" --out "$W/qat" "${QAT_ARGS[@]}"
echo "-- 3b. KD (forward KL to the FP teacher's top-64 signal), 1 teacher + 1 student rank under mpirun"
bash cluster/launch.sh --teachers 1 --students 1 -- "$R" train --teacher $M --student "$W/gptq-w3g128" \
    --loss kd --signal top-64 --out "$W/qat-kd" "${QAT_ARGS[@]}"
QAT="$W/qat/quantized"; QAT_KD="$W/qat-kd/quantized"   # results in the packed W3G128 format

echo "== 4. evaluation on held-out teacher traces"
for model in "$M" "$W/gptq-w3g128" "$QAT" "$QAT_KD"; do
  printf '%-48s ' "$model"; $R ppl --model "$model" --data "$W/heldout-traces.jsonl"
done
question="$(head -1 "$W/question.txt")"; answer="$(sed -n 2p "$W/question.txt")"
echo
echo "Q: $question  (reference answer: $answer)"
for model in "$M" "$W/gptq-w3g128" "$QAT" "$QAT_KD"; do
  echo "-- $model:"
  $R generate --model "$model" --chat --prompt "$question" --max-tokens 160 --temperature 0 2>/dev/null
done
