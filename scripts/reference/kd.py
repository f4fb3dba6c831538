#!/usr/bin/env python3
"""Fixture group ``kd`` -> ``kd-loss.json``

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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import run_group, sig_list, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402


def kd_total(rows: torch.Tensor, weights: torch.Tensor, normalizer: float, T: float, scaled: bool):
    """sum_r weight_r * rows_r / normalizer, times T^2 if scaled."""
    total = (weights * rows).sum() / normalizer
    return total * (T * T) if scaled else total


def make(fixtures: Path, assets: Path) -> None:
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


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
