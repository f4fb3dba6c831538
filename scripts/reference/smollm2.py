#!/usr/bin/env python3
"""Fixture group ``smollm2`` -> ``smollm2-gguf-reference.json``

The real model ``assets/SmolLM2-135M-Instruct.Q4_1.gguf`` loaded by
transformers (which dequantises every tensor to float32 and undoes the
llama.cpp Q/K row permutation), run in float32 on four prompts:
two chat prompts (a GSM-Symbolic question from ``0000.toml`` and a short
everyday question, each a single user message; SmolLM2's chat template
inserts its default system prompt) and two plain-text prompts. Per prompt:
``name``, ``chat``, ``text`` (the exact string given to the tokenizer; for
chat prompts the templated ChatML string with the assistant generation
prompt), ``messages`` (or null), ``input_ids``, ``last_logits`` (all 49152
logits of the last prompt position, 4 decimals), ``logits_range``
(max - min of ``last_logits``), ``greedy_ids`` (the new tokens of
``generate(do_sample=False, max_new_tokens=48)``; if EOS id 2 is produced
early the list ends with that EOS id) and ``greedy_top2_gap`` (per
generated token, top-1 minus top-2 raw logit at that step; small gaps mark
steps where tiny numerical differences may legitimately flip the argmax).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import GGUF_NAME, load_gguf_tokenizer, load_gsm, round_list, run_group, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402


def make(fixtures: Path, assets: Path) -> None:
    from transformers import AutoModelForCausalLM

    tok = load_gguf_tokenizer(assets)
    model = AutoModelForCausalLM.from_pretrained(
        str(assets), gguf_file=GGUF_NAME, dtype=torch.float32
    )
    model.eval()
    eos_id = tok.eos_token_id
    assert eos_id == 2, eos_id

    questions, _ = load_gsm(assets)
    prompts = [
        ("chat_gsm_0000", [{"role": "user", "content": questions[0]}]),
        ("chat_everyday", [{"role": "user", "content": "What is a good way to keep bread fresh?"}]),
        ("plain_capital", "The capital of France is"),
        (
            "plain_digits",
            "In 2023 the bakery sold 1,284 loaves at $3.75 each, and on 12 March it "
            "baked 96 more, so the total number of loaves sold that year was",
        ),
    ]

    entries = []
    for name, prompt in prompts:
        chat = isinstance(prompt, list)
        if chat:
            text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        else:
            text = prompt
        ids = tok(text, add_special_tokens=False).input_ids
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            last = model(input_ids).logits[0, -1].float()
            out = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=48,
                eos_token_id=eos_id,
                pad_token_id=eos_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
        new_ids = out.sequences[0, len(ids):].tolist()
        if eos_id in new_ids:
            new_ids = new_ids[: new_ids.index(eos_id) + 1]
        gaps = []
        for step, tid in enumerate(new_ids):
            step_logits = out.logits[step][0].float()
            top2 = torch.topk(step_logits, 2)
            assert int(top2.indices[0]) == tid, (name, step, int(top2.indices[0]), tid)
            gaps.append(round(float(top2.values[0] - top2.values[1]), 4))
        # The first generate step must reproduce the plain forward pass.
        assert torch.allclose(out.logits[0][0].float(), last, atol=1e-3), name
        entries.append(
            {
                "name": name,
                "chat": chat,
                "text": text,
                "messages": prompt if chat else None,
                "input_ids": ids,
                "last_logits": round_list(last.tolist(), 4),
                "logits_range": round(float(last.max() - last.min()), 4),
                "greedy_ids": new_ids,
                "greedy_top2_gap": gaps,
            }
        )
        print(f"  {name}: {len(ids)} prompt tokens -> {tok.decode(new_ids)!r}")
        print(f"    min top2 gap {min(gaps):.4f}")

    write_json(fixtures / "smollm2-gguf-reference.json", {"model": GGUF_NAME, "prompts": entries})


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
