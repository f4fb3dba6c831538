#!/usr/bin/env python3
"""Fixture group ``gptq`` -> ``gptq-hessian.safetensors``, ``gptq-reference.json``

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
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for reference_env
from reference_env import run_group, shown, write_json  # noqa: E402  (sets the environment first)

import torch  # noqa: E402


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


# Why a GPTQ here at all: GPTQTests.testMatchesReference compares rqat's GPTQ with this one's
# output on the stored layer (>= 98% of codes_hex equal, >= 98% of scales within 1e-3, g_idx
# exactly, damp, rel_error within 1%; rtn_rel_error within 1% for rqat's RTN), so the fixture needs
# an independent GPTQ with the same conventions, and transformers has none (it only loads GPTQ
# checkpoints; quantizing goes through optimum/GPTQModel, which take a model and calibration text,
# not a given W and H). Only what the two cases need is written out: asymmetric grids, one group =
# one block = 128 columns, optional act-order.
GROUP = 128


def gptq_reference(W, H, bits: int, actorder: bool) -> dict:
    """GPTQ on W (rows, cols) float32 with Hessian H (cols, cols), groups of GROUP columns."""
    maxq = 2 ** bits - 1
    W, H = W.clone().float(), H.clone().double()
    rows, cols = W.shape
    assert cols % GROUP == 0, cols
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True, stable=True) if actorder else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    damp = 0.01 * torch.mean(torch.diag(H)).item()
    H += damp * torch.eye(cols, dtype=torch.float64)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()

    codes = torch.zeros(rows, cols)
    scales, zeros = torch.zeros(cols // GROUP, rows), torch.zeros(cols // GROUP, rows)
    loss = 0.0
    for g, i1 in enumerate(range(0, cols, GROUP)):
        i2 = i1 + GROUP
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        scale, zero = gptq_grid(W1, maxq)  # from the current (error-updated) weights
        scales[g], zeros[g] = scale, zero
        for i in range(GROUP):
            w, d = W1[:, i], Hinv1[i, i]
            q = gptq_codes(w, scale, zero, maxq)
            dq = scale * (q - zero)
            codes[:, i1 + i] = q
            loss += (((w - dq) ** 2) / d ** 2 / 2).double().sum().item()
            err = (w - dq) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)  # within the block
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # to the columns after the block, in one matmul

    g_idx = torch.zeros(cols, dtype=torch.long)
    g_idx[perm] = torch.arange(cols) // GROUP
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


def make(fixtures: Path, assets: Path) -> None:
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
    print(f"wrote {shown(fixtures / 'gptq-hessian.safetensors')}")

    cases = []
    for name, bits, actorder in (("w4g128-asym", 4, False), ("w3g128-asym-actorder", 3, True)):
        r = gptq_reference(W, H, bits, actorder)
        Q = gptq_dequant(r["codes"], r["scales"], r["zeros"], r["g_idx"])
        # RTN with the same grids from the original weights, in original column order.
        maxq = 2 ** bits - 1
        Wd = W.clone()
        Wd[:, torch.diag(H) == 0] = 0
        rtn = torch.zeros_like(W)
        for c0 in range(0, cols, GROUP):
            s, z = gptq_grid(Wd[:, c0:c0 + GROUP], maxq)
            q = gptq_codes(Wd[:, c0:c0 + GROUP], s.unsqueeze(1), z.unsqueeze(1), maxq)
            rtn[:, c0:c0 + GROUP] = s.unsqueeze(1) * (q - z.unsqueeze(1))
        case = {
            "name": name, "bits": bits, "group_size": GROUP, "act_order": actorder,
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


if __name__ == "__main__":
    sys.exit(run_group(__doc__, make))
