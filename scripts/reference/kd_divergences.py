#!/usr/bin/env python3
"""Fixture group ``kd-divergences`` -> ``kd-divergences.json``

The KD divergences besides forward KL (rqat's Sources/Train/KDDivergence.swift), written with
torch autograd and independently of the Swift formulas, on the same fixed batch as group ``kd``
(kd.py: seed 4001, N = 6, V = 64, student 1.5*N(0,1), teacher 3*N(0,1), float32; weights
[1, 0, 0.5, 1, 1, 1], normalizer 5.5, T = 2; top-k k = 8 by teacher logit, log-probs and tail
stored as float32 and used as stored). All loss arithmetic is float64; q = softmax(s/T),
p = softmax(t/T).

    * ``rkl``: reverse KL(q || p) = sum_j q_j (log q_j - log p_j).
    * ``jsd`` with ``beta`` in {0.5, 0.9}: M = beta p + (1 - beta) q (a mixture of
      probabilities, not of logits), loss = beta KL(p || M) + (1 - beta) KL(q || M).

    ``full``: over the V tokens. ``topk``: over k + 1 buckets, the teacher's top-k tokens and one
    tail bucket: teacher bucket masses (p_k from the stored log-probs, p_tail = the stored tail),
    student bucket masses (q_k, q_tail = the sum of q over the other V - k tokens, as
    exp(logsumexp) of their log-probs). For rkl the teacher's tail enters as
    log max(p_tail, 2^-23) (a zero tail would make the reverse KL infinite).

    Total = sum_r weight_r * loss_r / normalizer, times T^2 when ``scale_by_t2``;
    ``gradient`` = d total / d s by ``loss.backward()``.

    ``kd-divergences.json``: the inputs as in ``kd-loss.json`` (``n``, ``vocab``,
    ``temperature``, ``normalizer``, ``k``, ``weights``, ``student``, ``teacher``,
    ``topk_ids``, ``topk_logprobs``, ``tail``; the same values) and ``cases``: one per
    divergence (``rkl``, ``jsd``), ``beta`` (jsd only), encoding (``full``, ``topk``) and
    ``scale_by_t2``, each with ``divergence``, ``beta`` (null for rkl), ``encoding``,
    ``scale_by_t2``, ``loss`` (float64) and ``gradient`` (N*V, 10 significant digits).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import run_group, sig_list, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402

TAIL_FLOOR = 2.0 ** -23   # Float.ulpOfOne: the rounding of 1 - sum_k p_k in float32


def make(fixtures: Path, assets: Path) -> None:
    import torch.nn.functional as F

    n, v, k = 6, 64, 8
    T, normalizer = 2.0, 5.5
    g = torch.Generator().manual_seed(4001)            # the batch of kd.py, drawn the same way
    student = (1.5 * torch.randn(n, v, generator=g)).float()
    teacher = (3.0 * torch.randn(n, v, generator=g)).float()
    weights32 = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 1.0], dtype=torch.float32)
    weights = weights32.double()
    logp = F.log_softmax(teacher.double() / T, dim=-1)
    topk_ids = torch.topk(teacher, k, dim=-1).indices
    topk_lp = logp.gather(1, topk_ids).float()
    tail = (1.0 - topk_lp.double().exp().sum(-1)).float()

    def buckets(s):
        """(teacher, student) bucket probabilities (n, k + 1): the top-k tokens, then the tail."""
        lq = F.log_softmax(s / T, dim=-1)
        outside = torch.ones(n, v, dtype=torch.bool)
        outside.scatter_(1, topk_ids, False)
        lq_tail = torch.logsumexp(lq.masked_fill(~outside, float("-inf")), dim=-1, keepdim=True)
        log_q = torch.cat([lq.gather(1, topk_ids), lq_tail], dim=1)
        p = torch.cat([topk_lp.double().exp(), tail.double().unsqueeze(1)], dim=1)
        return p, log_q

    def kl(a, log_a, log_b):
        """sum a (log a - log b) per row, with 0 log 0 = 0."""
        return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)

    def jsd(p, log_p, q, log_q, beta):
        m = beta * p + (1 - beta) * q
        return beta * kl(p, log_p, m.log()) + (1 - beta) * kl(q, log_q, m.log())

    def rows(divergence, beta, encoding, s):
        if encoding == "full":
            lq = F.log_softmax(s / T, dim=-1)
            if divergence == "rkl":
                return F.kl_div(logp, lq, log_target=True, reduction="none").sum(-1)
            return jsd(logp.exp(), logp, lq.exp(), lq, beta)
        p, log_q = buckets(s)
        if divergence == "rkl":
            log_p = torch.cat([topk_lp.double(), tail.double().clamp_min(TAIL_FLOOR).log().unsqueeze(1)], dim=1)
            return kl(log_q.exp(), log_q, log_p)
        return jsd(p, torch.where(p > 0, p.log(), torch.zeros_like(p)), log_q.exp(), log_q, beta)

    cases = []
    for divergence, beta in (("rkl", None), ("jsd", 0.5), ("jsd", 0.9)):
        for encoding in ("full", "topk"):
            for scaled in (True, False):
                s = student.double().requires_grad_(True)
                total = (weights * rows(divergence, beta, encoding, s)).sum() / normalizer
                loss = total * (T * T) if scaled else total
                loss.backward()
                grad = s.grad
                assert torch.all(grad[1] == 0), "masked row has a zero gradient"
                assert math.isfinite(loss.item())
                cases.append({"divergence": divergence, "beta": beta, "encoding": encoding, "scale_by_t2": scaled,
                              "loss": loss.item(), "gradient": sig_list(grad.flatten().tolist(), 10)})
                print(f"  {divergence} beta={beta} {encoding:5s} scaled={scaled!s:5s} loss {loss.item():.6f}"
                      f"  max|grad| {grad.abs().max():.3e}")

    write_json(fixtures / "kd-divergences.json", {
        "n": n, "vocab": v, "temperature": T, "normalizer": normalizer, "k": k,
        "weights": [float(x) for x in weights32.tolist()],
        "student": [float(x) for x in student.flatten().tolist()],
        "teacher": [float(x) for x in teacher.flatten().tolist()],
        "topk_ids": [int(x) for x in topk_ids.flatten().tolist()],
        "topk_logprobs": [float(x) for x in topk_lp.flatten().tolist()],
        "tail": [float(x) for x in tail.tolist()],
        "cases": cases,
    })


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
