#!/usr/bin/env python3
"""Fixture group ``tokenizer-gguf`` -> ``tokenizer-gguf.json``

transformers' tokenizer built from the GGUF metadata. ``cases``: all 100
``question`` strings then all 100 ``answer`` strings of
``assets/gsm-symbolic/eng/symbolic/0000..0099.toml``, followed by a few
hand-written edge cases (unicode, digits, whitespace runs, contractions,
inline special tokens). ``ids`` use ``add_special_tokens=False``; special
tokens written inline are matched as single ids (transformers' default).
Also records ``add_special_tokens_default_adds`` (ids transformers prepends
or appends by default; empty means no BOS), ``pre_tokenizer``,
``normalizer``, ``decoder`` (the JSON sections of the backend tokenizer),
``special_tokens`` ({content: id} for all added tokens), and
``llamacpp_digit_split_mismatches``: the cases whose ids change if digits
are split individually before the byte-level regex, as llama.cpp does for
``tokenizer.ggml.pre = "smollm"`` (and as the original HF tokenizer.json
does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import GGUF_NAME, load_gguf_tokenizer, load_gsm, run_group, write_json  # noqa: E402  (sets the environment first)

EDGE_CASES = [
    "Café naïve résumé — 東京タワー 你好 🙂👍🏽 ünïcödé",
    "1234567 and 3.14 and 0.001 and 1,000,000 and -42",
    "a  b\n\n\tc   ",
    "   leading and trailing spaces   ",
    "don't I'll we're they've she'd it's DON'T",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text right after<|im_end|>",
]


def make(fixtures: Path, assets: Path) -> None:
    from tokenizers import Tokenizer, pre_tokenizers

    tok = load_gguf_tokenizer(assets)
    backend = json.loads(tok.backend_tokenizer.to_str())

    probe = "hello world 123"
    plain = tok(probe, add_special_tokens=False).input_ids
    default = tok(probe).input_ids
    # Whatever transformers adds by default around the plain encoding.
    prefix_len = next(
        (i for i in range(len(default) - len(plain) + 1) if default[i : i + len(plain)] == plain), None
    )
    assert prefix_len is not None, (default, plain)
    default_adds = default[:prefix_len] + default[prefix_len + len(plain) :]

    questions, answers = load_gsm(assets)
    texts = questions + answers + EDGE_CASES
    cases = [{"text": t, "ids": tok(t, add_special_tokens=False).input_ids} for t in texts]

    # Cross-check: llama.cpp's "smollm" pre-tokenizer (and the original HF
    # tokenizer.json) splits every digit before the GPT-2 regex.
    digits = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    digits.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), tok.backend_tokenizer.pre_tokenizer]
    )
    mismatches = [
        i for i, c in enumerate(cases) if digits.encode(c["text"], add_special_tokens=False).ids != c["ids"]
    ]

    # Round trip sanity.
    for c in cases:
        assert tok.decode(c["ids"]) == c["text"], c["text"]

    special = {a["content"]: a["id"] for a in backend["added_tokens"]}
    write_json(
        fixtures / "tokenizer-gguf.json",
        {
            "model": GGUF_NAME,
            "add_special_tokens_default_adds": default_adds,
            "pre_tokenizer": backend["pre_tokenizer"],
            "pre_tokenizer_repr": repr(tok.backend_tokenizer.pre_tokenizer),
            "normalizer": backend["normalizer"],
            "decoder": backend["decoder"],
            "special_tokens": special,
            "llamacpp_digit_split_mismatches": mismatches,
            "cases": cases,
        },
    )
    print(f"  default adds {default_adds}; pre_tokenizer {backend['pre_tokenizer']}")
    print(f"  cases differing under llama.cpp-style digit split: {mismatches}")


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
