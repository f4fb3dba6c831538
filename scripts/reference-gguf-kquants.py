#!/usr/bin/env python3
"""Writes Tests/Fixtures/gguf-kquants.gguf: blocks of every GGUF type rqat decodes beyond
Q4_0/Q4_1/Q8_0 (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q5_0, Q5_1, IQ4_NL), each next to the values
gguf-py's reference dequantizer (`gguf.quants.dequantize`) gives for it, stored as F32.

Two groups per type, each a [4, cols] tensor (rows are whole blocks, so any rows of a tensor
stand on their own):

- ``random.<TYPE>``: random block bytes with random finite fp16 scales (normal and subnormal,
  both signs) written over the scale fields. Every bit of a block is then a code or a scale, so
  this reaches every code, scale and high-bit combination a decoder must handle.
- ``llama_cpp.<TYPE>``: the first 4 rows of a tensor of that type in a file written by llama.cpp's
  own quantizer (llama-cpp-python's ``llama_model_quantize``) from a tiny random Llama (hidden
  256, so the K-quants apply): Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q5_0, Q5_1 and IQ4_NL files.
  The metadata key ``rqat.source.<TYPE>`` names the file type and tensor it came from.

``<name>.expected`` holds gguf.quants.dequantize of ``<name>``. The Swift test
(FormatsTests/GGUFKQuantTests) decodes each and compares to 1 ulp of fp32.

Environment (nothing here is needed at build or test time)::

    python3 -m venv /opt/rqat-ref
    /opt/rqat-ref/bin/pip install numpy gguf llama-cpp-python   # llama-cpp-python builds from source (cmake)
    /opt/rqat-ref/bin/python scripts/reference-gguf-kquants.py [--out Tests/Fixtures/gguf-kquants.gguf]

Without llama-cpp-python it writes the random group only (and says so). All randomness is
seeded, so a rerun with the same gguf and llama.cpp versions rewrites the same bytes.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFReader, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

REPO = Path(__file__).resolve().parent.parent
TYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_0, T.Q5_1, T.IQ4_NL]
# Byte offsets of the fp16 fields (scales, mins) inside one block of each type.
HALF_FIELDS = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
               T.Q5_0: [0], T.Q5_1: [0, 2], T.IQ4_NL: [0]}
ROWS = 4
# llama.cpp file types (llama.h's LLAMA_FTYPE_MOSTLY_*) quantized from the tiny model.
FILE_TYPES = {"Q2_K": 10, "Q3_K_M": 12, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18,
              "Q5_0": 8, "Q5_1": 9, "IQ4_NL": 25}


def random_blocks(qtype: T, rng: np.random.Generator) -> np.ndarray:
    """ROWS rows of random blocks (512 values a row for K-quants, 256 otherwise) as uint8."""
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    cols = 512 if block_size == 256 else 256
    blocks = rng.integers(0, 256, size=(ROWS * cols // block_size, block_bytes), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype]:
        # |scale| = 2^e with e in [-20, 1): some fp16 subnormals, mostly normal values.
        magnitude = np.exp2(rng.uniform(-20, 1, size=blocks.shape[0]))
        sign = np.where(rng.integers(0, 2, size=blocks.shape[0]) == 1, -1.0, 1.0)
        halves = (sign * magnitude).astype(np.float16)
        blocks[:, offset:offset + 2] = halves.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(ROWS, -1)


def write_tiny_llama(path: Path, rng: np.random.Generator) -> None:
    """A 1-block random Llama in F32 with the hparams llama.cpp's quantizer reads."""
    hidden, ffn, vocab = 256, 512, 256
    w = GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(ffn)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(hidden // 4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)

    def matrix(rows, cols):
        # Student-t noise: heavier tails than a normal, like real weights.
        return (0.02 * rng.standard_t(5, size=(rows, cols))).astype(np.float32)

    w.add_tensor("token_embd.weight", matrix(vocab, hidden))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", matrix(hidden, hidden))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", matrix(ffn, hidden))
    w.add_tensor("blk.0.ffn_up.weight", matrix(ffn, hidden))
    w.add_tensor("blk.0.ffn_down.weight", matrix(hidden, ffn))
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    w.add_tensor("output.weight", matrix(vocab, hidden))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cpp_blocks(rng: np.random.Generator) -> dict[T, tuple[np.ndarray, str]]:
    """For each type, the first ROWS rows of the first tensor of that type llama.cpp wrote."""
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed: writing the random group only", file=sys.stderr)
        return {}
    found: dict[T, tuple[np.ndarray, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "tiny-f32.gguf"
        write_tiny_llama(source, rng)
        for ftype_name, ftype in FILE_TYPES.items():
            out = Path(tmp) / f"tiny-{ftype_name}.gguf"
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
            if rc != 0:
                raise SystemExit(f"llama_model_quantize to {ftype_name} failed ({rc})")
            for t in GGUFReader(str(out)).tensors:
                qtype = T(t.tensor_type)
                if qtype in TYPES and qtype not in found:
                    found[qtype] = (np.array(t.data[:ROWS], dtype=np.uint8), f"{ftype_name} {t.name}")
    missing = [t.name for t in TYPES if t not in found]
    if missing:
        print(f"llama.cpp's files had no tensor of type {', '.join(missing)}", file=sys.stderr)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "Tests" / "Fixtures" / "gguf-kquants.gguf")
    args = parser.parse_args()

    rng = np.random.default_rng(20260214)
    tensors: list[tuple[str, T, np.ndarray]] = [(f"random.{t.name}", t, random_blocks(t, rng)) for t in TYPES]
    sources = {}
    for qtype, (blocks, source) in sorted(llama_cpp_blocks(rng).items()):
        tensors.append((f"llama_cpp.{qtype.name}", qtype, blocks))
        sources[qtype.name] = source

    w = GGUFWriter(str(args.out), "rqat-fixture")
    for type_name, source in sources.items():
        w.add_string(f"rqat.source.{type_name}", source)
    for name, qtype, blocks in tensors:
        values = dequantize(blocks, qtype).astype(np.float32)
        assert np.isfinite(values).all(), name
        w.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=qtype)
        w.add_tensor(f"{name}.expected", values)
        print(f"{name:20s} {values.shape} {sources.get(qtype.name, '') if name.startswith('llama') else ''}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
