#!/usr/bin/env bash
# The main job on the embedded default, from a fresh Debian/Ubuntu machine: installs the
# system libraries, fetches the real SmolLM2-135M-Instruct model and GSM8K problems,
# builds rqat in release mode, then answers a real GSM8K test question with the model.
# (The full Reasoning-QAT pipeline replaces this job as it lands; see docs/ and the issues.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-assets.sh
swift build -c release --product rqat >&2
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
question="$(python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["question"])' \
            assets/gsm-symbolic/eng/symbolic/0001.toml)"
.build/release/rqat info "$model"
echo
echo "Q: $question"
echo -n "A: "
.build/release/rqat generate --model "$model" --chat --prompt "$question" --max-tokens 200 --temperature 0
echo "Reference answer: $(python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["answer"].split("####")[-1].strip())' \
        assets/gsm-symbolic/eng/symbolic/0001.toml)"
