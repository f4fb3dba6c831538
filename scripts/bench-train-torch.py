#!/usr/bin/env python3
"""Baseline: PyTorch eager training-step throughput on the shapes of `rqat bench train`.

For each shape (tiny: Qwen3 blocks, hidden 256, 4 layers, 4/2 heads, head_dim 64, MLP 768,
vocab 512, tied, batch 8 x 256; smol: the SmolLM2-135M Llama shape, batch 2 x 256), builds a
random-weight model with transformers (float32, eager attention), and times full steps:
forward, cross-entropy over all positions, backward, clip_grad_norm_(1.0), torch.optim.AdamW
(betas 0.9/0.95, weight decay 0.1), zero_grad. One warm-up step, then the median of --steps.
Prints one JSON line per shape: {"name": "torch_train_step", "shape", "batch", "seq_len",
"tokens_per_s", "threads"}.

Environment (installs nothing): the venv of scripts/make-reference.py.
    /opt/rqat-ref/bin/python scripts/bench-train-torch.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import reference_env  # noqa: E402,F401  (sets the environment)

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM  # noqa: E402

SHAPES = {
    "tiny": (Qwen3ForCausalLM, Qwen3Config(
        hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, vocab_size=512, rms_norm_eps=1e-6, rope_theta=1e6,
        max_position_embeddings=1024, tie_word_embeddings=True), 8, 256),
    "smol": (LlamaForCausalLM, LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, head_dim=64, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=1e5,
        max_position_embeddings=8192, tie_word_embeddings=True), 2, 256),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--shape", choices=["tiny", "smol", "both"], default="both")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = ["tiny", "smol"] if args.shape == "both" else [args.shape]
    for name in names:
        cls, config, batch, length = SHAPES[name]
        config._attn_implementation = "eager"
        model = cls(config).float().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        ids = torch.randint(0, config.vocab_size, (batch, length))
        times = []
        for i in range(args.steps + 1):
            start = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i > 0:
                times.append(time.perf_counter() - start)
        tps = batch * length / statistics.median(times)
        print(json.dumps({"name": "torch_train_step", "shape": name, "batch": batch, "seq_len": length,
                          "tokens_per_s": round(tps, 1), "threads": args.threads}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
