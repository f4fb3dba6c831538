#!/usr/bin/env python3
"""Fixture group ``tiny-tokenizer`` -> ``tiny-tokenizer/tokenizer.json``, ``tiny-tokenizer/cases.json``

A GPT-2 style byte-level BPE (ByteLevel pre-tokenizer with
add_prefix_space=False, ByteLevel decoder, vocab ~600, special tokens
``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``) trained with the
``tokenizers`` library on the 100 GSM questions and answers, to exercise
rqat's ``tokenizer.json`` loading path. ``cases.json``: ``{"cases":
[{"text", "ids", "decoded"}]}`` with ``add_special_tokens=False`` and
``decoded = decode(ids, skip_special_tokens=False)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import load_gsm, run_group, shown, write_json  # noqa: E402  (sets the environment first)


def train_tiny_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    return tk


def make(fixtures: Path, assets: Path) -> None:
    questions, answers = load_gsm(assets)
    tk = train_tiny_tokenizer(questions + answers)
    # Training must be deterministic for the fixture to be reproducible.
    assert train_tiny_tokenizer(questions + answers).to_str() == tk.to_str()

    out_dir = fixtures / "tiny-tokenizer"
    out_dir.mkdir(parents=True, exist_ok=True)
    tk.save(str(out_dir / "tokenizer.json"), pretty=True)
    print(f"wrote {shown(out_dir / 'tokenizer.json')} vocab {tk.get_vocab_size()}")

    texts = [
        questions[0],
        answers[0],
        answers[7],
        questions[42],
        "#### 10",
        "<<6*2=12>>12 inches",
        "The answer is 3.14159 or 1,234,567.",
        "Café naïve — 東京 你好 🙂👍🏽",
        "a  b\n\n\tc   ",
        "   leading and trailing   ",
        "\n\n\n",
        " ",
        "don't I'll we're they've",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "before<|endoftext|>after",
        "<|im_end|><|im_end|>",
        "Zebra xylophone quiz",
        "HELLO World hello WORLD",
        "tabs\tand\r\nwindows newlines",
        "$5.50 + 20% = ?",
    ]
    cases = []
    for t in texts:
        ids = tk.encode(t, add_special_tokens=False).ids
        decoded = tk.decode(ids, skip_special_tokens=False)
        cases.append({"text": t, "ids": ids, "decoded": decoded})
    write_json(out_dir / "cases.json", {"cases": cases})
    for c in cases:
        if c["decoded"] != c["text"]:
            print(f"  note: decode differs from text for {c['text']!r}")


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
