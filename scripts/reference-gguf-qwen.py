#!/usr/bin/env python3
"""Writes tiny random Qwen3 and Qwen2 checkpoints as GGUF files, F16 and Q8_0, the way
llama.cpp's converter (convert_hf_to_gguf.py) lays them out, and the logits transformers
computes when it loads those same files (``from_pretrained(..., gguf_file=...)``).

Output (Tests/Fixtures/tiny-gguf/):

- ``qwen3-f16.gguf``, ``qwen3-q8_0.gguf``: hidden 64, 2 layers, 2 heads, 1 KV head,
  ``qwen3.attention.key_length`` 128 (head_dim != hidden / heads; 128 because transformers'
  GGUF loader does not read key_length for qwen3 and falls back to Qwen3Config's 128),
  intermediate 128, vocab 256, rope_theta 1e6, attn_q_norm / attn_k_norm, untied output.weight.
- ``qwen2-f16.gguf``, ``qwen2-q8_0.gguf``: hidden 64, 2 layers, 4 heads, 2 KV heads (head_dim
  16 implied), intermediate 128, vocab 256, rope_theta 1e4, attn_q/k/v biases, tied embeddings
  (no output.weight).
- ``logits.json``: per file, ``input_ids`` (two seeded sequences of 10 and 6 tokens) and
  ``logits`` ([sequence][position][vocab], batch-1 float32 eager forward, 6 significant digits).

As the converter does: 2-D weights are F16 (or Q8_0, quantized by gguf-py), norms and biases
F32; metadata ``general.architecture``, ``<arch>.block_count``, ``context_length``,
``embedding_length``, ``feed_forward_length``, ``attention.head_count``, ``head_count_kv``,
``rope.freq_base``, ``attention.layer_norm_rms_epsilon``, ``attention.key_length`` /
``value_length`` (when the config states head_dim), ``general.file_type``, and a byte-level
"gpt2" tokenizer (254 byte tokens and two control tokens; no merges). Qwen's q/k rows are not
permuted (only the llama converter does that). Weights ~ N(0, 0.1^2), norms 1 + 0.1 N(0, 1).

Environment: the venv of scripts/make-reference.py (torch, transformers, gguf)::

    /opt/rqat-ref/bin/python scripts/reference-gguf-qwen.py
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_env import REPO, init_weights, sig_list, write_json  # noqa: E402  (sets the environment first)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType  # noqa: E402
from gguf.quants import quantize  # noqa: E402

VOCAB = 256

# Hugging Face module -> llama.cpp stem (what convert_hf_to_gguf's tensor map does for Qwen).
BLOCK_STEMS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
ROOT_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}


def gguf_name(hf: str) -> str:
    if hf in ROOT_NAMES:
        return ROOT_NAMES[hf]
    _, _, layer, rest = hf.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{layer}.{BLOCK_STEMS[module]}.{suffix}"


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet (what a byte-level BPE vocabulary starts with)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_gguf(path: Path, arch: str, config, state: dict, q8: bool) -> None:
    w = GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(config.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    if getattr(config, "head_dim", None) is not None and arch == "qwen3":
        w.add_key_length(config.head_dim)
        w.add_value_length(config.head_dim)
    w.add_file_type(LlamaFileType.MOSTLY_Q8_0 if q8 else LlamaFileType.MOSTLY_F16)

    tokens = byte_tokens()[:VOCAB - 2] + ["<|endoftext|>", "<|im_end|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([TokenType.NORMAL] * (VOCAB - 2) + [TokenType.CONTROL] * 2)
    w.add_bos_token_id(VOCAB - 2)
    w.add_eos_token_id(VOCAB - 1)

    for hf, t in state.items():
        a = t.detach().to(torch.float32).numpy()
        if a.ndim == 1:
            w.add_tensor(gguf_name(hf), a.astype(np.float32))
        elif q8:
            w.add_tensor(gguf_name(hf), quantize(a, GGMLQuantizationType.Q8_0),
                         raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name(hf), a.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def main() -> int:
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

    torch.set_num_threads(2)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=VOCAB,
                  rms_norm_eps=1e-6, max_position_embeddings=128)
    specs = {
        "qwen3": (Qwen3Config(**common, num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                              rope_theta=1e6, tie_word_embeddings=False), 2001),
        "qwen2": (Qwen2Config(**common, num_attention_heads=4, num_key_value_heads=2, rope_theta=1e4,
                              tie_word_embeddings=True), 2002),
    }
    out_dir = REPO / "Tests" / "Fixtures" / "tiny-gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(4321)
    seqs = [[rng.randrange(VOCAB) for _ in range(10)], [rng.randrange(VOCAB) for _ in range(6)]]

    reference = {}
    for arch, (config, seed) in specs.items():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        init_weights(model, seed)
        state = {k: v for k, v in model.state_dict().items() if not (config.tie_word_embeddings and k == "lm_head.weight")}
        for kind in ("f16", "q8_0"):
            name = f"{arch}-{kind}.gguf"
            write_gguf(out_dir / name, arch, config, state, q8=kind == "q8_0")
            loaded = AutoModelForCausalLM.from_pretrained(str(out_dir), gguf_file=name, dtype=torch.float32,
                                                          attn_implementation="eager")
            loaded.eval()
            assert loaded.config.model_type == arch
            assert loaded.config.tie_word_embeddings == config.tie_word_embeddings
            # transformers initialises what it cannot map at random: every tensor must be the one
            # written (exactly, for F16; to Q8_0's error otherwise).
            got = loaded.state_dict()
            for hf, t in model.state_dict().items():
                want = t if t.ndim == 1 or kind == "q8_0" else t.to(torch.float16).to(torch.float32)
                tol = 0.0 if kind == "f16" else 2e-2
                assert got[hf].shape == want.shape and (got[hf] - want).abs().max().item() <= tol, (name, hf)
            with torch.no_grad():
                logits = [[sig_list(row) for row in loaded(torch.tensor([s])).logits[0].float().tolist()] for s in seqs]
            reference[name] = {"input_ids": seqs, "logits": logits}
    write_json(out_dir / "logits.json", reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
