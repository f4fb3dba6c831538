#!/usr/bin/env python3
"""Fixture group ``act-quant`` -> ``act-quant.json``

The per-token activation fake-quantizer and the KV-cache fake-quantizer of rqat's
Sources/Quant/ActivationQuant.swift, written the usual PyTorch way: the grid from the detached
input, ``torch.round`` (half to even), and the straight-through estimator
``x + (fq(x) - x).detach()`` inside the clipped range (outside it the output is the detached
fq(x), so no gradient), with autograd for the gradient. Float32 throughout.

Per group of a row (group 0 = the whole row), clip ratio c, b bits:

    * asymmetric: max' = c max(x), min' = c min(x), s = (max' - min') / (2^b - 1),
      z = round(-min' / s), q = clamp(round(x / s) + z, 0, 2^b - 1), fq = (q - z) s;
      inside = min' <= x <= max';
    * symmetric: m = c max|x|, s = m / (2^(b-1) - 1), q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1),
      fq = q s; inside = |x| <= m;
    * a group with s = 0 passes through (fq = x, inside everywhere).

Input (seed 1301): 5 rows x 32: N(0,1); N(0,1) with an outlier 8 at column 5; a row of ties
(each 8 columns hold 0 and 15, so a4 with c = 1 has step 1, and halves .5 that round to even);
0.5 N(0,1) + 3 (all positive); the constant 0.75. Weights w ~ N(0,1), the same shape.

    ``act-quant.json``: ``rows``, ``width``, ``x``, ``w`` (row-major, float32 values written in
    their shortest form) and ``cases``: ``name``, ``bits``, ``symmetric``, ``clip``, ``group``,
    ``output`` (fq(x), float32), ``gradient`` (d sum(w * x̂) / dx by autograd), ``clipped``
    (entries outside the clipped range).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import run_group, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402

CASES = [
    ("a4-asym", 4, False, 1.0, 0),
    ("a8-asym", 8, False, 1.0, 0),
    ("a4-sym", 4, True, 1.0, 0),
    ("a4-asym-clip0.9", 4, False, 0.9, 0),
    ("kv4-asym-g8", 4, False, 1.0, 8),
    ("kv4-sym-clip0.9-g8", 4, True, 0.9, 8),
]


def fake_quant(x: torch.Tensor, bits: int, symmetric: bool, clip: float, group: int):
    """x̂ (with the STE's gradient) and fq(x) itself, both (rows, width); and the clipped count."""
    rows, width = x.shape
    g = width if group == 0 else group
    xg = x.reshape(rows, width // g, g)
    xd = xg.detach()
    c = torch.tensor(clip, dtype=torch.float32)
    if symmetric:
        qp = 2 ** (bits - 1) - 1
        m = xd.abs().amax(-1, keepdim=True) * c
        scale = m / qp
        ok = scale > 0
        s = torch.where(ok, scale, torch.ones_like(scale))
        fq = torch.clamp(torch.round(xd / s), -(qp + 1), qp) * s
        inside = (xd >= -m) & (xd <= m)
    else:
        qp = 2 ** bits - 1
        high = xd.amax(-1, keepdim=True) * c
        low = xd.amin(-1, keepdim=True) * c
        scale = (high - low) / qp
        ok = scale > 0
        s = torch.where(ok, scale, torch.ones_like(scale))
        zero = torch.round(-low / s)
        fq = (torch.clamp(torch.round(xd / s) + zero, 0, qp) - zero) * s
        inside = (xd >= low) & (xd <= high)
    fq = torch.where(ok, fq, xd)
    inside = inside | ~ok
    xhat = torch.where(inside, xg + (fq - xg).detach(), fq)
    clipped = int((~inside).sum().item())
    return xhat.reshape(rows, width), fq.reshape(rows, width), clipped


def f32(values) -> list[float]:
    """Float32 values as the shortest decimals that read back as the same float32."""
    import numpy as np

    return [float(str(np.float32(v))) for v in values]


def make(fixtures: Path, assets: Path) -> None:
    rows, width = 5, 32
    gen = torch.Generator().manual_seed(1301)
    x = torch.empty(rows, width, dtype=torch.float32)
    x[0] = torch.randn(width, generator=gen)
    x[1] = torch.randn(width, generator=gen)
    x[1, 5] = 8.0
    ties = [[0, 15, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5], [0, 15, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5],
            [0, 15, 12.5, 13.5, 14.5, 2.5, 4.5, 6.5], [15, 0, 1.5, 3.5, 5.5, 7.5, 9.5, 11.5]]
    x[2] = torch.tensor([v for chunk in ties for v in chunk])
    x[3] = 0.5 * torch.randn(width, generator=gen) + 3
    x[4] = 0.75
    w = torch.randn(rows, width, generator=gen, dtype=torch.float32)

    cases = []
    for name, bits, symmetric, clip, group in CASES:
        xv = x.clone().requires_grad_(True)
        xhat, fq, clipped = fake_quant(xv, bits, symmetric, clip, group)
        (w * xhat).sum().backward()
        # The STE's forward, x + (fq - x), is fq up to rounding of the sum.
        drift = (xhat.detach() - fq).abs().max().item()
        assert drift <= 2e-6, (name, drift)
        cases.append({"name": name, "bits": bits, "symmetric": symmetric, "clip": clip, "group": group,
                      "output": f32(fq.flatten().tolist()), "gradient": f32(xv.grad.flatten().tolist()),
                      "clipped": clipped})
        err = (fq - x).pow(2).mean().item()
        print(f"  {name:20s} mse {err:.3e}, {clipped} clipped, STE forward drift {drift:.1e}")

    write_json(fixtures / "act-quant.json", {
        "rows": rows, "width": width, "x": f32(x.flatten().tolist()), "w": f32(w.flatten().tolist()),
        "cases": cases,
    })


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
