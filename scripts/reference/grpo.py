#!/usr/bin/env python3
"""Fixture group ``grpo`` -> ``grpo-loss.json``

GRPO's loss and its gradient (rqat's Sources/RL), written the way TRL's GRPOTrainer computes
them, with torch autograd, independently of the Swift formulas: per-completion tensors (B, L)
and a completion mask, not rqat's flat positions with per-token coefficients.

Fixed batch (seed 5001, float32 inputs, float64 arithmetic): 2 prompts x G = 3 completions
(B = 6 rows), L = 7 positions, V = 16; logits 2*N(0,1); targets uniform; completion lengths
[7, 3, 5, 1, 6, 4] (mask 1 on the first `length` positions of each row); rewards
[1, 0, 1, 0, 0, 1]; sampling temperature T = 0.8; old log-probs = the current ones + 0.3*N(0,1)
(ratios about 0.5-2, so both clip sides act); reference log-probs = the current ones + 0.5*N(0,1);
clip 0.2 low, 0.28 high; generation budget 8 (Dr. GRPO's constant).

    * advantages: (r - group mean) / (group std (unbiased) + 1e-4);
    * logp = log_softmax(logits / T).gather(target); ratio = exp(logp - old);
      per-token loss = -min(ratio * A, clamp(ratio, 1 - 0.2, 1 + 0.28) * A) + beta * kl, where
      kl is k1 = logp - ref, k2 = (ref - logp)^2 / 2 or k3 = exp(ref - logp) - (ref - logp) - 1;
    * token-mean: sum(loss * mask) / sum(mask); seq-mean: mean over rows of
      sum(loss * mask, row) / sum(mask, row); dr-grpo: sum(loss * mask) / (B * budget).

    ``grpo-loss.json``: ``rows``, ``length`` (L), ``vocab``, ``group``, ``temperature``,
    ``clip_low``, ``clip_high``, ``budget``, ``lengths``, ``rewards``, ``logits`` (B*L*V),
    ``targets``, ``old_logprobs``, ``ref_logprobs`` (B*L, float32 as used), ``advantages`` (B)
    and ``cases``: per aggregation (``token-mean``, ``seq-mean``, ``dr-grpo``) x KL (none, k3 at
    beta 0.04), and k1, k2 at beta 0.1 with token-mean: ``aggregation``, ``kl`` (null or the
    estimator), ``beta``, ``loss`` (float64), ``clipped`` (masked tokens whose ratio term is the
    clipped one), ``gradient`` (B*L*V, 10 significant digits).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import run_group, sig_list, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402


def make(fixtures: Path, assets: Path) -> None:
    import torch.nn.functional as F

    b, length, v, group = 6, 7, 16, 3
    T, clip_low, clip_high, budget = 0.8, 0.2, 0.28, 8
    g = torch.Generator().manual_seed(5001)
    logits = (2.0 * torch.randn(b, length, v, generator=g)).float()
    targets = torch.randint(0, v, (b, length), generator=g)
    lengths = [7, 3, 5, 1, 6, 4]
    mask = torch.zeros(b, length, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)

    grouped = rewards.view(-1, group)
    mean = grouped.mean(dim=1).repeat_interleave(group)
    std = grouped.std(dim=1).repeat_interleave(group)
    advantages = (rewards - mean) / (std + 1e-4)

    def logps(z):
        return F.log_softmax(z / T, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    current = logps(logits.double())
    old = (current + 0.3 * torch.randn(b, length, generator=g, dtype=torch.float64)).float().double()
    ref = (current + 0.5 * torch.randn(b, length, generator=g, dtype=torch.float64)).float().double()

    def kl_of(logp, estimator):
        r = ref - logp
        if estimator == "k1":
            return -r
        if estimator == "k2":
            return 0.5 * r * r
        return torch.exp(r) - r - 1

    cases = []
    settings = [(agg, None, 0.0) for agg in ("token-mean", "seq-mean", "dr-grpo")]
    settings += [(agg, "k3", 0.04) for agg in ("token-mean", "seq-mean", "dr-grpo")]
    settings += [("token-mean", "k1", 0.1), ("token-mean", "k2", 0.1)]
    for agg, estimator, beta in settings:
        z = logits.double().requires_grad_(True)
        logp = logps(z)
        ratio = torch.exp(logp - old)
        clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
        a = advantages.unsqueeze(1)
        per_token = -torch.min(ratio * a, clipped * a)
        if estimator is not None:
            per_token = per_token + beta * kl_of(logp, estimator)
        if agg == "token-mean":
            loss = (per_token * mask).sum() / mask.sum()
        elif agg == "seq-mean":
            loss = ((per_token * mask).sum(-1) / mask.sum(-1)).mean()
        else:
            loss = (per_token * mask).sum() / (b * budget)
        loss.backward()
        n_clipped = int((((ratio * a) > (clipped * a)) & (mask > 0)).sum().item())
        cases.append({"aggregation": agg, "kl": estimator, "beta": beta, "loss": loss.item(), "clipped": n_clipped,
                      "gradient": sig_list(z.grad.flatten().tolist(), 10)})
        print(f"  {agg:10s} kl={estimator} beta={beta}: loss {loss.item():.6f}, {n_clipped} clipped")

    write_json(fixtures / "grpo-loss.json", {
        "rows": b, "length": length, "vocab": v, "group": group, "temperature": T,
        "clip_low": clip_low, "clip_high": clip_high, "budget": budget, "lengths": lengths,
        "rewards": rewards.tolist(),
        "logits": [float(x) for x in logits.flatten().tolist()],
        "targets": [int(x) for x in targets.flatten().tolist()],
        "old_logprobs": [float(x) for x in old.float().flatten().tolist()],
        "ref_logprobs": [float(x) for x in ref.float().flatten().tolist()],
        "advantages": advantages.tolist(),
        "cases": cases,
    })


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
