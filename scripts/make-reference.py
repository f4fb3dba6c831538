#!/usr/bin/env python3
"""Generate golden reference fixtures for the rqat Swift tests.

The fixtures are computed with Hugging Face transformers / tokenizers (the
reference implementation) and written to ``Tests/Fixtures/``. The Swift tests
load them and compare rqat's own GGUF/safetensors loaders, tokenizers and
forward passes against them. Nothing here is needed at build or run time.

Environment (this script installs nothing)::

    python3 -m venv /opt/rqat-ref
    /opt/rqat-ref/bin/pip install torch transformers gguf accelerate safetensors tokenizers
    HF_HUB_OFFLINE=1 /opt/rqat-ref/bin/python scripts/make-reference.py          # all groups
    HF_HUB_OFFLINE=1 /opt/rqat-ref/bin/python scripts/make-reference.py --only tokenizer-gguf

Generated with torch 2.15 (CPU), transformers 5.23, tokenizers 0.23. All
randomness is seeded, so a rerun with the same versions reproduces the files.

Fixture groups (``--only NAME``):

``smollm2`` -> ``smollm2-gguf-reference.json``
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

``tokenizer-gguf`` -> ``tokenizer-gguf.json``
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

``tiny-models`` -> ``tiny-qwen3/``, ``tiny-qwen2/``, ``tiny-logits.json``
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

``tiny-tokenizer`` -> ``tiny-tokenizer/tokenizer.json``, ``tiny-tokenizer/cases.json``
    A GPT-2 style byte-level BPE (ByteLevel pre-tokenizer with
    add_prefix_space=False, ByteLevel decoder, vocab ~600, special tokens
    ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``) trained with the
    ``tokenizers`` library on the 100 GSM questions and answers, to exercise
    rqat's ``tokenizer.json`` loading path. ``cases.json``: ``{"cases":
    [{"text", "ids", "decoded"}]}`` with ``add_special_tokens=False`` and
    ``decoded = decode(ids, skip_special_tokens=False)``.

``grads`` -> ``grad-qwen3/``, ``grad-llama/``, ``grad-reference.json``, ``grad-adamw.json``
    Golden gradients and optimizer steps for rqat's training engine.

    Checkpoints (``save_pretrained``, safetensors, float32, plus the classic
    top-level ``rope_theta`` key in config.json as for ``tiny-models``):

    * ``grad-qwen3/``: Qwen3, hidden 64, intermediate 96, 2 layers, 4 heads,
      2 KV heads, head_dim 16, vocab 128, rope_theta 1e4, rms_norm_eps 1e-6,
      max_position_embeddings 64, tied embeddings (the file holds only
      ``model.embed_tokens.weight``; there is no ``lm_head.weight``
      parameter), q_norm/k_norm, no biases. Weight seed 2001.
    * ``grad-llama/``: Llama, hidden 48, intermediate 80, 2 layers, 6 heads,
      2 KV heads (head_dim 8), vocab 96, rope_theta 1e4, rms_norm_eps 1e-5,
      max_position_embeddings 64, untied ``lm_head.weight``, no biases.
      Weight seed 2002.

    Weights as in ``tiny-models`` (``init_weights``): ``torch.manual_seed(seed)``
    and a ``torch.Generator`` seeded with ``seed``; in ``named_parameters()``
    order each tensor gets N(0,1) noise; names ending in ``norm.weight``
    (input/post-attention layernorms, q_norm, k_norm, final norm) become
    1 + 0.1*noise, everything else 0.1*noise. All reference numbers are
    computed on the model reloaded from disk with
    ``attn_implementation="eager"`` in float32, eval mode (no dropout; all
    dropout rates are 0 anyway).

    Batch (per model): B=2 sequences of T=10 token ids drawn with
    ``random.Random(2101)`` (qwen3) / ``random.Random(2102)`` (llama), no
    padding, no attention mask (plain causal), positions 0..9.

    Loss: ``logits = model(input_ids).logits`` (B, T, V). Prediction t
    (t = 0..T-2) is row ``logits[b, t]`` and targets ``input_ids[b, t+1]``.
    ``mask[b][t]`` in {0, 1} for t = 0..T-2 (T-1 = 9 entries per sequence):
    0 for t = 0, 1, 2 in both sequences ("prompt"), and 0 for t = T-2 = 8 in
    sequence 2 (index 1); 1 elsewhere, so 11 counted predictions.
    ``loss = sum_{b,t: mask=1} (logsumexp(logits[b,t]) - logits[b,t,target])
    / (number of counted predictions)``, i.e. one plain mean over the counted
    predictions of the whole batch (not a mean of per-sequence means). The
    gradients are those of this float32 loss w.r.t. every parameter. Checked
    here: a float64 log-softmax recomputation agrees to 1e-6 relative;
    transformers' own ``model(input_ids, labels=...)`` loss (labels =
    input_ids with -100 at position 0 and wherever the mask is 0;
    transformers shifts internally and averages over non-ignored targets)
    gives the same value; changing the last token of sequence 2 (only a masked
    target) leaves loss and grads bitwise unchanged; the fp32 grads agree with
    those of a float64 copy of the model to ~2e-6 relative L2 per tensor.

    ``grad-reference.json``: ``{"qwen3": E, "llama": E}`` with E =

    * ``input_ids``: [[10 ints], [10 ints]].
    * ``mask``: [[9 ints], [9 ints]] as above.
    * ``loss``: the loss as a float64 number (float64 log-softmax of the
      float32 logits).
    * ``grads``: {name: {"shape": [...], "values": [...]}} for every entry of
      ``model.named_parameters()`` (HF names, e.g.
      ``model.layers.0.self_attn.q_proj.weight``; shape as in PyTorch /
      safetensors, i.e. (out, in) for linear weights; values flattened
      row-major, 7 significant digits). Qwen3 (tied) has no
      ``lm_head.weight``: its ``model.embed_tokens.weight`` grad is the sum of
      the embedding-lookup and LM-head contributions. For the untied Llama the
      ``model.embed_tokens.weight`` grad is exactly 0 in the rows of tokens
      that do not occur in ``input_ids``.
    * ``grad_norms``: {name: L2 norm of that grad} (unrounded, summed in
      float64).

    ``grad-adamw.json``: ``{"adamw": A}`` (kept out of ``grad-reference.json``
    only so that each file stays below ~1.5 MB). Starting from the grad-llama
    checkpoint weights and the llama gradients G of ``grad-reference.json``
    (unrounded), two steps of ``torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.95),
    eps=1e-8, foreach=False)`` with two param groups: weight_decay 0.1 for
    ``decay_params`` (every 2-D weight except ``model.embed_tokens.weight``,
    i.e. all linear layers including ``lm_head.weight``), weight_decay 0 for
    the rest (``model.embed_tokens.weight`` and all norm weights). Each step:

    1. ``.grad = G`` (the same raw gradients at both steps, not recomputed).
    2. ``clip_grad_norm_(all params, max_norm=0.5)``:
       total = sqrt(sum of g^2 over all elements of all params),
       coef = min(1, 0.5 / (total + 1e-6)), g *= coef. Both steps therefore
       use identical clipped gradients. total is ~8.69, so clipping is
       active; since Adam is invariant to a global gradient scale except
       through eps, clipping shows in ``updated`` only via eps (still ~28k
       of the 44,784 step-1 values differ at 7 digits from an unclipped
       step, by up to 3.3e-4), so also test ``total_norm_before_clip`` and
       ``clip_coef`` directly.
    3. AdamW step k (k = 1, 2), per element, moments m, v starting at 0,
       wd = the element's group weight decay:
       p *= 1 - lr*wd;  m = 0.9 m + 0.1 g;  v = 0.95 v + 0.05 g^2;
       p -= (lr / (1 - 0.9^k)) * m / (sqrt(v) / sqrt(1 - 0.95^k) + eps).
       Elements with g = 0 move only by weight decay.

    A's fields: ``lr``, ``betas`` ([0.9, 0.95]), ``eps``, ``weight_decay``
    (0.1, the decay group's value), ``max_grad_norm`` (0.5),
    ``decay_params`` (names), ``total_norm_before_clip`` (torch's float32
    total norm), ``clip_coef`` (coef above), ``updated`` ({name: flat
    parameter values after step 1, 7 significant digits} for every llama
    parameter) and ``updated_step2`` (the same after step 2; checks bias
    correction at k = 2 and that the moments carry over). A float64
    re-implementation of the formulas above agrees with torch to < 1e-6
    absolute.

``gptq`` -> ``gptq-hessian.safetensors``, ``gptq-reference.json``
    A reference GPTQ (Frantar et al. 2022) written out in ``gptq_reference``
    below, on one random layer: W (256 out, 512 in) = 0.02*N(0,1) with input
    columns 3, 100, 301, 450 scaled x8 (outliers); a fixed Hessian
    H = 2/n X^T X (float64, then stored as float32; the algorithm uses the
    stored float32 values), X (n=2048, 512) = Z A D with Z, A ~ N(0,1)
    (A = I + 0.5 A'/sqrt(512): correlated columns), D = per-column scale
    exp(N(0, 0.7)) and input column 7 all zero (a dead input, H[7,7] = 0).
    Seed 3001. ``gptq-hessian.safetensors`` holds ``weight`` (256, 512) and
    ``hessian`` (512, 512), float32.

    Algorithm (same conventions as rqat's Sources/Quant/GPTQ.swift): dead
    inputs get H_ii = 1 and W[:, i] = 0; act-order permutes columns by
    descending diag(H) (stable sort, ties by index); damp = 0.01 *
    mean(diag H) on the diagonal; Hinv = upper Cholesky factor of H^-1
    (float64 linear algebra, then float32); W and all quantization in float32;
    blocks of 128 columns, error propagated column by column inside a block
    and by one matmul to the columns after it. Group grids (GPTQ
    convention: range min(x,0)..max(x,0), scale = (max-min)/maxq, zero =
    floor(-min/scale + 0.5), all-zero group -> range -1..1; then the scale is
    rounded to fp16, as stored) come from the current, error-updated weights
    of the group's columns each time the processing position reaches a
    multiple of the group size. With act-order the groups are therefore runs
    of 128 consecutive columns in the PERMUTED order ("g_idx" convention):
    g_idx[perm[j]] = j // 128, dequantization uses scales[g_idx[col]].
    Codes q = clamp(round_half_even(w/scale) + zero, 0, maxq).

    ``gptq-reference.json``: ``{"cases": [C...]}``, C = ``name``
    ("w4g128-asym" act_order false; "w3g128-asym-actorder" act_order true),
    ``bits``, ``group_size``, ``act_order``, ``damp`` (the absolute lambda),
    ``codes_hex`` (row-major (256, 512) codes in ORIGINAL column order, one
    hex digit per code), ``scales`` and ``zeros`` (laid out (groups, rows),
    flattened), ``g_idx`` (512 ints), ``perm`` (processing order),
    ``loss`` (GPTQ's sum of (w-q)^2/d^2/2), ``rel_error`` =
    sqrt(tr((W-Q) H (W-Q)^T) / tr(W H W^T)) with the stored H and the original
    W (float64), and ``rtn_rel_error`` (the same for plain round-to-nearest
    with the same group grids computed from the original weights).

``kd`` -> ``kd-loss.json``
    Knowledge-distillation loss (rqat's Sources/Train/KDLoss.swift): forward
    KL(teacher || student) at temperature T, written with torch autograd and
    independently of the Swift formulas. One fixed batch (seed 4001): N = 6
    rows, V = 64, student logits 1.5*N(0,1), teacher logits 3*N(0,1) (sharper),
    both float32; weights [1, 0, 0.5, 1, 1, 1] (row 1 masked), normalizer 5.5,
    T = 2. All loss arithmetic is float64 on the stored float32 inputs, with
    q = softmax(s/T) of the student:

    * ``full``: ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True,
      reduction='none').sum(-1)``.
    * ``topk`` (k = 8): the teacher's top-k ids by teacher logit (descending),
      their log-probabilities at T (stored as float32; the loss uses the stored
      values) and tail = 1 - sum_k p_k (float64 from the stored log-probs, then
      stored as float32 and used as stored). Student log q_k gathered at the
      ids; log q_tail = logsumexp of the student log-probs over the other
      V - k tokens. loss_r = sum_k p_k (log p_k - log q_k)
      + p_tail (log p_tail - log q_tail).
    * ``sampled`` (m = 16): 16 draws per row with replacement from
      softmax(t/T) (``torch.multinomial``, generator seed 4002), written as
      (id, count) pairs, ascending id. loss_r = -sum_j (c_j/m) log q_j (the
      cross-entropy part only; its gradient is (q - c/m)/T).

    Total = sum_r weight_r * loss_r / normalizer, times T^2 when
    ``scale_by_t2``; ``gradient`` = d total / d s by ``loss.backward()``.

    ``kd-loss.json``: ``n``, ``vocab``, ``temperature``, ``normalizer``,
    ``k``, ``m``, ``weights`` (N), ``student`` and ``teacher`` (N*V,
    row-major, the exact float32 values as float64 repr), ``topk_ids`` and
    ``topk_logprobs`` (N*k, row-major), ``tail`` (N), ``draws`` (per row a
    list of [id, count]), and ``cases``: one per encoding ("full", "topk",
    "sampled") and ``scale_by_t2`` (true, false), each with ``encoding``,
    ``scale_by_t2``, ``loss`` (float64) and ``gradient`` (N*V, 10
    significant digits).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tomllib
from pathlib import Path

from reference_env import GGUF_NAME, REPO  # noqa: E402  (sets the environment first)

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()

GROUPS = ("smollm2", "tokenizer-gguf", "tiny-models", "tiny-tokenizer", "grads", "gptq", "kd")

EDGE_CASES = [
    "Café naïve résumé — 東京タワー 你好 🙂👍🏽 ünïcödé",
    "1234567 and 3.14 and 0.001 and 1,000,000 and -42",
    "a  b\n\n\tc   ",
    "   leading and trailing spaces   ",
    "don't I'll we're they've she'd it's DON'T",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text right after<|im_end|>",
]


# --------------------------------------------------------------------------- helpers


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def round_list(values, decimals: int) -> list[float]:
    return [round(float(v), decimals) for v in values]


def sig_list(values, digits: int = 6) -> list[float]:
    return [float(f"{float(v):.{digits}g}") for v in values]


def load_gsm(assets: Path) -> tuple[list[str], list[str]]:
    """Questions and answers of eng/symbolic/0000..0099.toml, in file order."""
    questions, answers = [], []
    for i in range(100):
        with open(assets / "gsm-symbolic" / "eng" / "symbolic" / f"{i:04d}.toml", "rb") as f:
            doc = tomllib.load(f)
        questions.append(doc["question"])
        answers.append(doc["answer"])
    return questions, answers


def load_gguf_tokenizer(assets: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(assets), gguf_file=GGUF_NAME)


# --------------------------------------------------------------------------- smollm2


def make_smollm2(fixtures: Path, assets: Path) -> None:
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


# --------------------------------------------------------------------------- tokenizer-gguf


def make_tokenizer_gguf(fixtures: Path, assets: Path) -> None:
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


# --------------------------------------------------------------------------- tiny-models


def init_weights(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


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


def make_tiny_models(fixtures: Path, assets: Path) -> None:
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
        model.to(save_dtype).save_pretrained(str(out_dir), safe_serialization=True)
        cfg_path = out_dir / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["rope_theta"] = theta  # classic key used by real Qwen checkpoints
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

        loaded = AutoModelForCausalLM.from_pretrained(
            str(out_dir), dtype=torch.float32, attn_implementation="eager"
        )
        loaded.eval()
        assert loaded.config.rope_parameters["rope_theta"] == theta
        assert loaded.config.tie_word_embeddings == config.tie_word_embeddings
        reference[name] = tiny_reference(loaded, seqs)
        for f in sorted(out_dir.iterdir()):
            print(f"wrote {f.relative_to(REPO)} ({f.stat().st_size} bytes)")
        print(f"  {name}: greedy {reference[name]['greedy_ids']}")

    write_json(fixtures / "tiny-logits.json", reference)


# --------------------------------------------------------------------------- tiny-tokenizer


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


def make_tiny_tokenizer(fixtures: Path, assets: Path) -> None:
    questions, answers = load_gsm(assets)
    tk = train_tiny_tokenizer(questions + answers)
    # Training must be deterministic for the fixture to be reproducible.
    assert train_tiny_tokenizer(questions + answers).to_str() == tk.to_str()

    out_dir = fixtures / "tiny-tokenizer"
    out_dir.mkdir(parents=True, exist_ok=True)
    tk.save(str(out_dir / "tokenizer.json"), pretty=True)
    print(f"wrote {(out_dir / 'tokenizer.json').relative_to(REPO)} vocab {tk.get_vocab_size()}")

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


# --------------------------------------------------------------------------- grads

GRAD_T = 10  # tokens per sequence
GRAD_B = 2  # sequences per batch
GRAD_PROMPT = 3  # leading prediction slots masked out in every sequence
ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
MAX_GRAD_NORM = 0.5


def grad_configs():
    from transformers import LlamaConfig, Qwen3Config

    qwen3 = Qwen3Config(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=128,
        rope_theta=1e4,
        rms_norm_eps=1e-6,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    llama = LlamaConfig(
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=96,
        rope_theta=1e4,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        attention_bias=False,
    )
    # name -> (config, weight seed, batch seed)
    return {"qwen3": (qwen3, 2001, 2101), "llama": (llama, 2002, 2102)}


def grad_mask() -> list[list[int]]:
    """mask[b][t] for the T-1 predictions t = 0..T-2 (prediction t targets token t+1)."""
    mask = [[0 if t < GRAD_PROMPT else 1 for t in range(GRAD_T - 1)] for _ in range(GRAD_B)]
    mask[1][GRAD_T - 2] = 0  # last prediction of sequence 2
    return mask


def masked_next_token_loss(logits, input_ids, mask):
    """sum over counted predictions of CE(logits[b,t], input_ids[b,t+1]) / #counted."""
    targets = input_ids[:, 1:]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    m = mask.to(nll.dtype)
    return (nll * m).sum() / m.sum()


def masked_loss_f64(logits, input_ids, mask) -> float:
    """The same loss with an explicit float64 log-softmax (independent check)."""
    z = logits.detach().double()[:, :-1]
    zmax = z.max(dim=-1, keepdim=True).values
    logz = zmax.squeeze(-1) + torch.log(torch.exp(z - zmax).sum(dim=-1))
    targets = input_ids[:, 1:]
    nll = logz - z.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    total, count = 0.0, 0
    for b in range(nll.shape[0]):
        for t in range(nll.shape[1]):
            if int(mask[b, t]):
                total += float(nll[b, t])
                count += 1
    return total / count


def model_grads(model, input_ids, mask):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids).logits
    loss = masked_next_token_loss(logits, input_ids, mask)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def grad_entry(model, name: str, batch_seed: int) -> tuple[dict, dict]:
    vocab = model.config.vocab_size
    rng = random.Random(batch_seed)
    ids = [[rng.randrange(vocab) for _ in range(GRAD_T)] for _ in range(GRAD_B)]
    mask_list = grad_mask()
    input_ids = torch.tensor(ids)
    mask = torch.tensor(mask_list)

    logits, loss32, grads = model_grads(model, input_ids, mask)
    assert logits.dtype == torch.float32 and logits.shape == (GRAD_B, GRAD_T, vocab)
    loss64 = masked_loss_f64(logits, input_ids, mask)
    assert abs(float(loss32) - loss64) <= 1e-6 * abs(loss64), (name, float(loss32), loss64)

    # transformers' own causal-LM loss (shift inside, ignore_index -100, mean over
    # non-ignored targets) must agree with the definition above.
    labels = input_ids.clone()
    labels[:, 0] = -100
    labels[:, 1:][mask == 0] = -100
    with torch.no_grad():
        hf_loss = float(model(input_ids, labels=labels).loss)
    assert abs(hf_loss - loss64) <= 1e-5 * abs(loss64), (name, hf_loss, loss64)

    # The last token of sequence 2 is only the target of a masked prediction (and
    # the input of no prediction), so changing it must not change loss or grads.
    other = input_ids.clone()
    other[1, -1] = (other[1, -1] + 1) % vocab
    _, loss_o, grads_o = model_grads(model, other, mask)
    assert float(loss_o) == float(loss32), name
    assert all(torch.equal(grads[n], grads_o[n]) for n in grads), name

    # float32 grads vs a float64 copy of the model: how close a correct fp32
    # implementation can be expected to get.
    m64 = copy.deepcopy(model).double()
    _, loss_d, grads_d = model_grads(m64, input_ids, mask)
    assert abs(float(loss_d) - loss64) <= 1e-5 * abs(loss64), name
    worst = 0.0
    for n, g in grads.items():
        gd = grads_d[n]
        assert torch.isfinite(g).all() and float(g.norm()) > 0, (name, n)
        rel = float((g.double() - gd).norm() / gd.norm())
        worst = max(worst, rel)
    print(f"  {name}: loss {loss64:.7f}, {int(mask.sum())} counted predictions, "
          f"fp32 vs fp64 grads worst per-tensor relative L2 error {worst:.2e}")

    entry = {
        "input_ids": ids,
        "mask": mask_list,
        "loss": loss64,
        "grads": {
            n: {"shape": list(g.shape), "values": sig_list(g.flatten().tolist(), 7)} for n, g in grads.items()
        },
        "grad_norms": {n: float(g.double().norm()) for n, g in grads.items()},
    }
    return entry, grads


def adamw_reference(model, grads: dict) -> dict:
    """Two AdamW steps (same raw gradients, clipped before each step) on ``model``."""
    named = list(model.named_parameters())
    decay = [n for n, p in named if p.ndim == 2 and n != "model.embed_tokens.weight"]
    params = {n: p for n, p in named}
    start = {n: p.detach().clone() for n, p in named}
    opt = torch.optim.AdamW(
        [
            {"params": [params[n] for n in decay], "weight_decay": ADAMW["weight_decay"]},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        ],
        lr=ADAMW["lr"],
        betas=ADAMW["betas"],
        eps=ADAMW["eps"],
        foreach=False,
    )

    def step() -> float:
        for n, p in named:
            p.grad = grads[n].clone()
        total = float(torch.nn.utils.clip_grad_norm_([p for _, p in named], max_norm=MAX_GRAD_NORM))
        opt.step()
        return total

    total1 = step()
    updated1 = {n: p.detach().clone() for n, p in named}
    total2 = step()
    updated2 = {n: p.detach().clone() for n, p in named}
    assert total1 == total2

    # Independent float64 re-implementation of clip + decoupled-decay AdamW.
    b1, b2 = ADAMW["betas"]
    lr, eps = ADAMW["lr"], ADAMW["eps"]
    g64 = {n: grads[n].double() for n in grads}
    norm64 = float(torch.sqrt(sum((g * g).sum() for g in g64.values())))
    assert abs(norm64 - total1) <= 1e-5 * norm64, (norm64, total1)
    coef = min(1.0, MAX_GRAD_NORM / (norm64 + 1e-6))
    p64 = {n: start[n].double() for n in start}
    mom = {n: torch.zeros_like(p64[n]) for n in p64}
    vel = {n: torch.zeros_like(p64[n]) for n in p64}
    for k, want in ((1, updated1), (2, updated2)):
        for n in p64:
            g = g64[n] * coef
            wd = ADAMW["weight_decay"] if n in decay else 0.0
            p64[n] = p64[n] * (1 - lr * wd)
            mom[n] = b1 * mom[n] + (1 - b1) * g
            vel[n] = b2 * vel[n] + (1 - b2) * g * g
            denom = torch.sqrt(vel[n]) / (1 - b2**k) ** 0.5 + eps
            p64[n] = p64[n] - (lr / (1 - b1**k)) * mom[n] / denom
            err = float((p64[n] - want[n].double()).abs().max())
            assert err < 1e-6, (k, n, err)
            moved = float((p64[n] - start[n].double()).abs().max())
            assert moved > 1e-4, (k, n, moved)  # the step is visible at 7 digits
    print(f"  adamw: total grad norm {total1:.6f} (clip coefficient {coef:.6f}), "
          f"{len(decay)} decayed / {len(named) - len(decay)} non-decayed tensors")

    return {
        "lr": ADAMW["lr"],
        "betas": list(ADAMW["betas"]),
        "eps": ADAMW["eps"],
        "weight_decay": ADAMW["weight_decay"],
        "max_grad_norm": MAX_GRAD_NORM,
        "decay_params": decay,
        "total_norm_before_clip": total1,
        "clip_coef": coef,
        "updated": {n: sig_list(v.flatten().tolist(), 7) for n, v in updated1.items()},
        "updated_step2": {n: sig_list(v.flatten().tolist(), 7) for n, v in updated2.items()},
    }


def make_grads(fixtures: Path, assets: Path) -> None:
    from transformers import AutoModelForCausalLM

    reference = {}
    for name, (config, seed, batch_seed) in grad_configs().items():
        out_dir = fixtures / f"grad-{name}"
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        init_weights(model, seed)
        model.save_pretrained(str(out_dir), safe_serialization=True)
        cfg_path = out_dir / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["rope_theta"] = 1e4  # classic top-level key, as in real checkpoints
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        for f in sorted(out_dir.iterdir()):
            print(f"wrote {f.relative_to(REPO)} ({f.stat().st_size} bytes)")

        # Everything below runs on the checkpoint as reloaded from disk.
        loaded = AutoModelForCausalLM.from_pretrained(
            str(out_dir), dtype=torch.float32, attn_implementation="eager"
        )
        loaded.eval()  # no dropout (all dropout rates are 0 anyway)
        assert loaded.config.tie_word_embeddings == config.tie_word_embeddings
        assert loaded.config.rope_parameters["rope_theta"] == 1e4
        names = [n for n, _ in loaded.named_parameters()]
        assert ("lm_head.weight" in names) == (not config.tie_word_embeddings), names
        if config.tie_word_embeddings:
            assert loaded.lm_head.weight is loaded.model.embed_tokens.weight

        entry, grads = grad_entry(loaded, name, batch_seed)
        if name == "llama":
            reference["adamw"] = adamw_reference(loaded, grads)
        reference[name] = entry

    # Two files so that each stays below ~1.5 MB.
    write_json(fixtures / "grad-reference.json", {k: reference[k] for k in ("qwen3", "llama")})
    write_json(fixtures / "grad-adamw.json", {"adamw": reference["adamw"]})


# --------------------------------------------------------------------------- gptq


def gptq_grid(x: torch.Tensor, maxq: int):
    """Per-row grid of x (rows, n), float32: scale (fp16-rounded) and zero (rows,)."""
    xmin = x.min(1).values.clamp(max=0)
    xmax = x.max(1).values.clamp(min=0)
    both0 = (xmin == 0) & (xmax == 0)
    xmin[both0], xmax[both0] = -1.0, 1.0
    scale = (xmax - xmin) / maxq
    zero = torch.floor(-xmin / scale + 0.5)
    return scale.half().float(), zero


def gptq_codes(w: torch.Tensor, scale, zero, maxq: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def gptq_reference(W, H, bits: int, groupsize: int, actorder: bool,
                   blocksize: int = 128, percdamp: float = 0.01) -> dict:
    """GPTQ on W (rows, cols) float32 with Hessian H (cols, cols)."""
    maxq = 2 ** bits - 1
    W = W.clone().float()
    H = H.clone().double()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.arange(cols)
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
    damp = percdamp * torch.mean(torch.diag(H)).item()
    H += damp * torch.eye(cols, dtype=torch.float64)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()

    codes = torch.zeros(rows, cols)
    ngroups = (cols + groupsize - 1) // groupsize
    scales, zeros = torch.zeros(ngroups, rows), torch.zeros(ngroups, rows)
    loss = 0.0
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if j % groupsize == 0:  # grid from the current (error-updated) weights
                end = min(j + groupsize, cols)
                cur = torch.cat([W1[:, i:], W[:, i2:end]], 1)[:, : end - j]
                scale, zero = gptq_grid(cur, maxq)
                scales[j // groupsize], zeros[j // groupsize] = scale, zero
            w, d = W1[:, i], Hinv1[i, i]
            q = gptq_codes(w, scale, zero, maxq)
            dq = scale * (q - zero)
            codes[:, j] = q
            loss += (((w - dq) ** 2) / d ** 2 / 2).double().sum().item()
            err = (w - dq) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    g_idx = torch.zeros(cols, dtype=torch.long)
    g_idx[perm] = torch.arange(cols) // groupsize
    out = torch.zeros_like(codes)
    out[:, perm] = codes
    return {"codes": out.to(torch.long), "scales": scales, "zeros": zeros, "g_idx": g_idx,
            "perm": perm, "damp": damp, "loss": loss}


def gptq_dequant(codes, scales, zeros, g_idx):
    rows_idx = torch.arange(codes.shape[0]).unsqueeze(1)
    s = scales[g_idx.unsqueeze(0), rows_idx]
    z = zeros[g_idx.unsqueeze(0), rows_idx]
    return s * (codes.float() - z)


def gptq_rel_error(W, Q, H) -> float:
    W, Q, H = W.double(), Q.double(), H.double()
    D = W - Q
    return float(torch.sqrt(torch.trace(D @ H @ D.T) / torch.trace(W @ H @ W.T)))


def make_gptq(fixtures: Path, assets: Path) -> None:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3001)
    rows, cols, n = 256, 512, 2048
    W = 0.02 * torch.randn(rows, cols, generator=g)
    W[:, [3, 100, 301, 450]] *= 8
    Z = torch.randn(n, cols, generator=g, dtype=torch.float64)
    A = torch.eye(cols, dtype=torch.float64) + 0.5 * torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols ** 0.5
    D = torch.exp(0.7 * torch.randn(cols, generator=g, dtype=torch.float64))
    X = Z @ A * D
    X[:, 7] = 0
    H = (2.0 / n * X.T @ X).float()
    save_file({"weight": W.contiguous(), "hessian": H.contiguous()}, str(fixtures / "gptq-hessian.safetensors"))
    print(f"wrote {(fixtures / 'gptq-hessian.safetensors').relative_to(REPO)}")

    cases = []
    for name, bits, actorder in (("w4g128-asym", 4, False), ("w3g128-asym-actorder", 3, True)):
        r = gptq_reference(W, H, bits, 128, actorder)
        Q = gptq_dequant(r["codes"], r["scales"], r["zeros"], r["g_idx"])
        # RTN with the same grids from the original weights, in original column order.
        maxq = 2 ** bits - 1
        Wd = W.clone()
        Wd[:, torch.diag(H) == 0] = 0
        rtn = torch.zeros_like(W)
        for c0 in range(0, cols, 128):
            s, z = gptq_grid(Wd[:, c0:c0 + 128], maxq)
            q = gptq_codes(Wd[:, c0:c0 + 128], s.unsqueeze(1), z.unsqueeze(1), maxq)
            rtn[:, c0:c0 + 128] = s.unsqueeze(1) * (q - z.unsqueeze(1))
        case = {
            "name": name, "bits": bits, "group_size": 128, "act_order": actorder,
            "damp": r["damp"],
            "codes_hex": "".join("0123456789abcdef"[c] for c in r["codes"].flatten().tolist()),
            "scales": [float(v) for v in r["scales"].flatten().tolist()],
            "zeros": [int(v) for v in r["zeros"].flatten().tolist()],
            "g_idx": r["g_idx"].tolist(), "perm": r["perm"].tolist(),
            "loss": r["loss"], "rel_error": gptq_rel_error(W, Q, H),
            "rtn_rel_error": gptq_rel_error(W, rtn, H),
        }
        print(f"  {name}: rel_error {case['rel_error']:.5f}  rtn {case['rtn_rel_error']:.5f}  loss {r['loss']:.4f}")
        cases.append(case)
    write_json(fixtures / "gptq-reference.json", {"cases": cases})


# --------------------------------------------------------------------------- kd


def kd_total(rows: torch.Tensor, weights: torch.Tensor, normalizer: float, T: float, scaled: bool):
    """sum_r weight_r * rows_r / normalizer, times T^2 if scaled."""
    total = (weights * rows).sum() / normalizer
    return total * (T * T) if scaled else total


def make_kd(fixtures: Path, assets: Path) -> None:
    import torch.nn.functional as F

    n, v, k, m = 6, 64, 8, 16
    T, normalizer = 2.0, 5.5
    g = torch.Generator().manual_seed(4001)
    student = (1.5 * torch.randn(n, v, generator=g)).float()
    teacher = (3.0 * torch.randn(n, v, generator=g)).float()
    weights32 = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 1.0], dtype=torch.float32)
    weights = weights32.double()
    t64 = teacher.double()

    # Teacher signals, computed once from the float32 teacher and stored as float32;
    # every loss below uses the stored values.
    logp = F.log_softmax(t64 / T, dim=-1)
    topk_ids = torch.topk(teacher, k, dim=-1).indices                      # by teacher logit
    topk_lp = logp.gather(1, topk_ids).float()                             # stored float32
    tail = (1.0 - topk_lp.double().exp().sum(-1)).float()                  # stored float32
    draws_idx = torch.multinomial(logp.exp(), m, replacement=True,
                                  generator=torch.Generator().manual_seed(4002))
    counts = torch.stack([torch.bincount(draws_idx[r], minlength=v) for r in range(n)]).double()
    draws = [[[j, int(counts[r, j])] for j in range(v) if counts[r, j] > 0] for r in range(n)]
    assert all(sum(c for _, c in row) == m for row in draws)

    def rows_full(s):
        lq = F.log_softmax(s / T, dim=-1)
        return F.kl_div(lq, logp, log_target=True, reduction="none").sum(-1)

    def rows_topk(s):
        lq = F.log_softmax(s / T, dim=-1)
        lp_k = topk_lp.double()
        lq_k = lq.gather(1, topk_ids)
        outside = torch.ones(n, v, dtype=torch.bool)
        outside.scatter_(1, topk_ids, False)
        lq_tail = torch.logsumexp(lq.masked_fill(~outside, float("-inf")), dim=-1)
        p_tail = tail.double()
        return (lp_k.exp() * (lp_k - lq_k)).sum(-1) + p_tail * (p_tail.log() - lq_tail)

    def rows_sampled(s):
        lq = F.log_softmax(s / T, dim=-1)
        return -((counts / m) * lq).sum(-1)

    cases = []
    for name, rows_fn in (("full", rows_full), ("topk", rows_topk), ("sampled", rows_sampled)):
        for scaled in (True, False):
            s = student.double().requires_grad_(True)
            loss = kd_total(rows_fn(s), weights, normalizer, T, scaled)
            loss.backward()
            grad = s.grad
            assert torch.all(grad[1] == 0), "masked row has a zero gradient"
            cases.append({"encoding": name, "scale_by_t2": scaled, "loss": loss.item(),
                          "gradient": sig_list(grad.flatten().tolist(), 10)})
            print(f"  {name:8s} scaled={scaled!s:5s} loss {loss.item():.6f}  max|grad| {grad.abs().max():.3e}")

    write_json(fixtures / "kd-loss.json", {
        "n": n, "vocab": v, "temperature": T, "normalizer": normalizer, "k": k, "m": m,
        "weights": [float(x) for x in weights32.tolist()],
        "student": [float(x) for x in student.flatten().tolist()],
        "teacher": [float(x) for x in teacher.flatten().tolist()],
        "topk_ids": [int(x) for x in topk_ids.flatten().tolist()],
        "topk_logprobs": [float(x) for x in topk_lp.flatten().tolist()],
        "tail": [float(x) for x in tail.tolist()],
        "draws": draws,
        "cases": cases,
    })


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=GROUPS, help="regenerate a single fixture group")
    parser.add_argument("--fixtures", type=Path, default=REPO / "Tests" / "Fixtures")
    parser.add_argument("--assets", type=Path, default=REPO / "assets")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)

    makers = {
        "smollm2": make_smollm2,
        "tokenizer-gguf": make_tokenizer_gguf,
        "tiny-models": make_tiny_models,
        "tiny-tokenizer": make_tiny_tokenizer,
        "grads": make_grads,
        "gptq": make_gptq,
        "kd": make_kd,
    }
    for name in GROUPS:
        if args.only in (None, name):
            print(f"[{name}]")
            makers[name](args.fixtures.resolve(), args.assets.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
