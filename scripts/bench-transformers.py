#!/usr/bin/env python3
"""Baseline: transformers' float32 greedy ``generate`` throughput on SmolLM2 (GGUF).

Loads ``assets/SmolLM2-135M-Instruct.Q4_1.gguf`` with transformers (dequantised
to float32), and for each batch size times one greedy ``generate`` call of
``--new-tokens`` tokens (``min_new_tokens`` = ``max_new_tokens`` so EOS cannot
stop it early) on the prompt "The capital of France is" repeated ``batch``
times (identical rows, so no padding). One untimed warm-up call per batch size.
Prints one JSON line per batch size:

    {"name": "transformers_generate", "batch": 1, "tokens_per_s": x, "threads": 2}

``tokens_per_s`` counts generated tokens over all rows (batch * new_tokens)
divided by the wall time of the call (prefill included).

Environment (this script installs nothing)::

    python3 -m venv /opt/rqat-ref
    /opt/rqat-ref/bin/pip install torch transformers gguf accelerate safetensors tokenizers
    HF_HUB_OFFLINE=1 /opt/rqat-ref/bin/python scripts/bench-transformers.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from reference_env import GGUF_NAME, REPO  # noqa: E402  (sets the environment first)

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()

PROMPT = "The capital of France is"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, default=REPO / "assets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.assets), gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(
        str(args.assets), gguf_file=GGUF_NAME, dtype=torch.float32
    )
    model.eval()
    ids = tok(PROMPT, add_special_tokens=False, return_tensors="pt").input_ids

    for batch in args.batches:
        input_ids = ids.repeat(batch, 1)
        kwargs = dict(
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            pad_token_id=tok.eos_token_id,
        )
        with torch.inference_mode():
            model.generate(input_ids, **kwargs)  # warm-up
            start = time.perf_counter()
            out = model.generate(input_ids, **kwargs)
            elapsed = time.perf_counter() - start
        generated = (out.shape[1] - input_ids.shape[1]) * batch
        assert generated == batch * args.new_tokens
        print(
            json.dumps(
                {
                    "name": "transformers_generate",
                    "batch": batch,
                    "tokens_per_s": round(generated / elapsed, 2),
                    "threads": args.threads,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
