#!/usr/bin/env python3
"""Generate golden reference fixtures for the rqat Swift tests.

The fixtures are computed with Hugging Face transformers / tokenizers (the
reference implementation) and written to ``Tests/Fixtures/``. The Swift tests
load them and compare rqat's own GGUF/safetensors loaders, tokenizers and
forward passes against them. Nothing here is needed at build or run time.

Each fixture group is its own script under ``scripts/reference/`` (its
docstring says what it writes and how); this one runs all of them, or one,
in a single process. Their shared helpers and command line are in
``scripts/reference_env.py``.

Environment (this script installs nothing)::

    python3 -m venv /opt/rqat-ref
    /opt/rqat-ref/bin/pip install torch transformers gguf accelerate safetensors tokenizers
    /opt/rqat-ref/bin/python scripts/make-reference.py                       # all groups
    /opt/rqat-ref/bin/python scripts/make-reference.py --only tokenizer-gguf # one group
    /opt/rqat-ref/bin/python scripts/reference/tokenizer_gguf.py             # the same, on its own

Options (also of every group script): ``--fixtures DIR`` (default
``Tests/Fixtures``), ``--assets DIR`` (default ``assets``), ``--threads N``
(default 2; the float results depend on it).

Generated with torch 2.15 (CPU), transformers 5.23, tokenizers 0.23. All
randomness is seeded, so on one machine a rerun with the same torch build and
thread count rewrites the files byte for byte (transformers' version shows only
in the checkpoints' config.json). Another torch build or CPU may change the last
written digit of some float values (smollm2, tiny-models, grads); the tokenizer,
gptq and kd files and all weights were the same on the machine tried.

Fixture groups (``--only NAME``) and their scripts:

    smollm2         reference/smollm2.py         smollm2-gguf-reference.json
    tokenizer-gguf  reference/tokenizer_gguf.py  tokenizer-gguf.json
    tiny-models     reference/tiny_models.py     tiny-qwen3/, tiny-qwen2/, tiny-logits.json
    tiny-tokenizer  reference/tiny_tokenizer.py  tiny-tokenizer/
    grads           reference/grads.py           grad-qwen3/, grad-llama/, grad-reference.json, grad-adamw.json
    gptq            reference/gptq.py            gptq-hessian.safetensors, gptq-reference.json
    kd              reference/kd.py              kd-loss.json
    kd-divergences  reference/kd_divergences.py  kd-divergences.json
    grpo            reference/grpo.py            grpo-loss.json
    act-quant       reference/act_quant.py       act-quant.json

GGUF fixtures have standalone scripts (run them on their own; see their docstrings):
scripts/reference-gguf-kquants.py (gguf-kquants.gguf: K-quant, Q5 and IQ4_NL blocks, needs
llama-cpp-python for the llama.cpp-quantized group) and scripts/reference-gguf-qwen.py
(tiny-gguf/: Qwen3/Qwen2 GGUF files and transformers' logits on them).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from reference_env import parse_args, start  # noqa: E402  (sets the environment first)

GROUPS = ("smollm2", "tokenizer-gguf", "tiny-models", "tiny-tokenizer", "grads", "gptq", "kd", "kd-divergences", "grpo", "act-quant")


def load_group(name: str):
    path = Path(__file__).resolve().parent / "reference" / f"{name.replace('-', '_')}.py"
    spec = importlib.util.spec_from_file_location(f"reference_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv, groups=GROUPS)
    start(args.threads)
    for name in GROUPS:
        if args.only in (None, name):
            print(f"[{name}]")
            load_group(name).make(args.fixtures.resolve(), args.assets.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
