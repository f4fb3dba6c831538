#!/usr/bin/env python3
"""Fixture group ``tiny-models`` -> ``tiny-qwen3/``, ``tiny-qwen2/``, ``tiny-logits.json``

Two tiny random checkpoints saved with ``save_pretrained`` (safetensors):
hidden 64, intermediate 128, 2 layers, 4 heads, 2 KV heads, vocab 256,
rms_norm_eps 1e-6, max_position_embeddings 128.
Qwen3: explicit head_dim 32 (!= 64/4), rope_theta 1e6, untied lm_head,
float32 weights. Qwen2: head_dim implied (16), rope_theta 1e4, tied
embeddings, q/k/v biases, weights stored as bfloat16; the reference is
computed after reloading from disk in float32, so both sides use the same
bf16-representable weights. Weights ~ N(0, 0.1^2), biases likewise, norm
weights 1 + 0.1*N(0,1). transformers 5 writes ``rope_parameters``
({"rope_theta", "rope_type"}) in config.json; this script additionally
writes the classic top-level ``rope_theta`` key found in real Qwen
checkpoints. ``tiny-logits.json``: per model ``input_ids`` (2 seeded random
sequences of 12 and 7 tokens), ``logits`` ([sequence][position][vocab],
each sequence its own batch-1 float32 forward, 6 significant digits) and
``greedy_ids`` (10 greedy new tokens continuing the first sequence).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import init_weights, print_written, run_group, save_checkpoint, sig_list, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402


def tiny_reference(model, seqs: list[list[int]]) -> dict:
    logits = []
    with torch.no_grad():
        for s in seqs:
            out = model(torch.tensor([s])).logits[0].float()
            logits.append([sig_list(row) for row in out.tolist()])
        first = torch.tensor([seqs[0]])
        gen = model.generate(
            first,
            attention_mask=torch.ones_like(first),
            do_sample=False,
            max_new_tokens=10,
            min_new_tokens=10,
            pad_token_id=0,
        )
    return {"input_ids": seqs, "logits": logits, "greedy_ids": gen[0, len(seqs[0]):].tolist()}


def make(fixtures: Path, assets: Path) -> None:
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

    common = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        rms_norm_eps=1e-6,
        max_position_embeddings=128,
    )
    specs = {
        "qwen3": (
            Qwen3Config(**common, head_dim=32, rope_theta=1e6, tie_word_embeddings=False),
            torch.float32,
            1001,
            1e6,
        ),
        "qwen2": (
            Qwen2Config(**common, rope_theta=1e4, tie_word_embeddings=True),
            torch.bfloat16,
            1002,
            1e4,
        ),
    }

    rng = random.Random(1234)
    seqs = [[rng.randrange(256) for _ in range(12)], [rng.randrange(256) for _ in range(7)]]

    reference = {}
    for name, (config, save_dtype, seed, theta) in specs.items():
        out_dir = fixtures / f"tiny-{name}"
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        init_weights(model, seed)
        save_checkpoint(model.to(save_dtype), out_dir, theta)

        loaded = AutoModelForCausalLM.from_pretrained(
            str(out_dir), dtype=torch.float32, attn_implementation="eager"
        )
        loaded.eval()
        assert loaded.config.rope_parameters["rope_theta"] == theta
        assert loaded.config.tie_word_embeddings == config.tie_word_embeddings
        reference[name] = tiny_reference(loaded, seqs)
        print_written(out_dir)
        print(f"  {name}: greedy {reference[name]['greedy_ids']}")

    write_json(fixtures / "tiny-logits.json", reference)


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
