#!/usr/bin/env python3
"""Fixture group ``grads`` -> ``grad-qwen3/``, ``grad-llama/``, ``grad-reference.json``, ``grad-adamw.json``

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

Weights as in ``tiny-models`` (``init_weights`` in reference_env.py): ``torch.manual_seed(seed)``
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
"""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import init_weights, print_written, run_group, save_checkpoint, sig_list, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402

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


def make(fixtures: Path, assets: Path) -> None:
    from transformers import AutoModelForCausalLM

    reference = {}
    for name, (config, seed, batch_seed) in grad_configs().items():
        out_dir = fixtures / f"grad-{name}"
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        init_weights(model, seed)
        save_checkpoint(model, out_dir, 1e4)
        print_written(out_dir)

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


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
