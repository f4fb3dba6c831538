#!/usr/bin/env python3
"""Loads a GPTQ directory written by rqat (`rqat ptq --out DIR`, or a QAT run's `quantized/`)
UNMODIFIED in GPTQModel on CPU (float16: its torch kernel refuses float32) and in transformers
(AutoModelForCausalLM on CPU in float32, which goes through optimum and GPTQModel), scores the
sequences `rqat ppl` scores with each, and prints one JSON line (all of stdout; the loaders' logs
go to stderr) with every perplexity and the kernel each loader chose. With --rqat it also runs
`rqat ppl` on the same files and exits 1 when a loader fails or lands more than --tolerance
from it.

Matching `rqat ppl` (Sources/rqat/GenerateCommands.swift, Sources/Model/Perplexity.swift): one
sequence per non-blank line of a text file or per "text" of a JSONL file; the export's own
tokenizer.json without special tokens (rqat's encode adds no BOS); each sequence truncated to
--max-tokens (0: the config's max_position_embeddings) and scored from its first token, position
t predicting token t+1; perplexity = exp of the token-weighted mean NLL.

Needs a venv with `torch transformers optimum gptqmodel safetensors tokenizers accelerate`
(a reference tool, never a test or CI dependency; see docs/ACCURACY.md).

Usage: /opt/rqat-gptq/bin/python scripts/check-gptq-loaders.py EXPORT EVAL [--rqat .build/release/rqat]
"""
import argparse
import contextlib
import gc
import importlib.metadata
import json
import math
import os
import re
import subprocess
import sys
import time
import unicodedata

import reference_env  # noqa: F401  (sets the environment)

LOADERS = ("gptqmodel", "transformers")


def read_texts(path: str) -> list[str]:
    """The sequences of `rqat ppl --data path`, split as Swift splits a String on "\\n": a CRLF is
    one Character there, so only a newline not preceded by a carriage return separates lines."""
    content = open(path, encoding="utf-8").read()
    lines = [line for line in re.split(r"(?<!\r)\n", content) if line]
    if not path.endswith(".jsonl"):
        # Foundation's .whitespaces: tab and the Unicode space separators (not newlines).
        blank = lambda s: all(c == "\t" or unicodedata.category(c) == "Zs" for c in s)
        return [line for line in lines if not blank(line)]
    texts = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SystemExit(f"{path}: line {i + 1} is not a JSON object with a string field \"text\"")
        texts.append(record["text"])
    return texts


def token_sequences(export: str, texts: list[str], max_tokens: int) -> list[list[int]]:
    from tokenizers import Tokenizer
    path = os.path.join(export, "tokenizer.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path}: missing; rqat writes it into every export (re-export with rqat ptq)")
    tokenizer = Tokenizer.from_file(path)
    if max_tokens <= 0:
        max_tokens = json.load(open(os.path.join(export, "config.json")))["max_position_embeddings"]
    return [tokenizer.encode(text, add_special_tokens=False).ids[:max_tokens] for text in texts]


def perplexity(model, sequences: list[list[int]]) -> dict:
    import torch
    total, count = 0.0, 0
    with torch.inference_mode():
        for ids in sequences:
            if len(ids) < 2:
                continue
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
            targets = torch.tensor(ids[1:])
            total += float(-torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum())
            count += len(ids) - 1
    return {"perplexity": math.exp(total / count), "mean_nll": total / count, "predicted_tokens": count}


def quantized_kernel(model) -> str:
    """The class of the first module that holds a qweight: which kernel the loader chose."""
    for module in model.modules():
        if hasattr(module, "qweight"):
            return type(module).__name__
    return "none (no quantized module: the loader dequantized or ignored the GPTQ tensors)"


def load(loader: str, export: str, args):
    import torch
    if loader == "gptqmodel":
        from gptqmodel import GPTQModel
        return GPTQModel.load(export, device="cpu", dtype=getattr(torch, args.gptqmodel_dtype),
                              backend=args.gptqmodel_backend).model
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32, device_map="cpu")


def run_loader(loader: str, export: str, sequences: list[list[int]], args) -> dict:
    start = time.time()
    try:
        # The loaders log to stdout; keep it for the JSON line.
        with contextlib.redirect_stdout(sys.stderr):
            model = load(loader, export, args)
            result = {"kernel": quantized_kernel(model)}
            result.update(perplexity(model, sequences))
    except Exception as error:  # record what the loader says, as one line
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    finally:
        gc.collect()
    result["seconds"] = round(time.time() - start, 1)
    return result


def run_rqat(binary: str, export: str, data: str, max_tokens: int) -> dict:
    out = subprocess.run([binary, "ppl", "--model", export, "--data", data, "--max-tokens", str(max_tokens)],
                         capture_output=True, text=True)
    found = re.search(r"mean NLL ([0-9.]+) over (\d+) predicted tokens", out.stdout)
    if out.returncode != 0 or not found:
        said = (out.stderr or out.stdout).strip().splitlines()
        return {"error": said[-1] if said else f"exit status {out.returncode}"}
    nll = float(found.group(1))
    return {"perplexity": math.exp(nll), "mean_nll": nll, "predicted_tokens": int(found.group(2))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="a GPTQ directory written by rqat")
    parser.add_argument("data", help="the eval file, as for `rqat ppl --data` (.txt or .jsonl with \"text\")")
    parser.add_argument("--max-tokens", type=int, default=0, help="as `rqat ppl --max-tokens` (0: the model's context)")
    parser.add_argument("--loaders", default=",".join(LOADERS), help="comma-separated: gptqmodel, transformers")
    parser.add_argument("--gptqmodel-backend", default="auto",
                        help="GPTQModel's kernel choice (BACKEND value, e.g. gptq_torch); auto lets it pick")
    # GPTQModel.load refuses float32 for its torch kernel ("only supports [torch.float16,
    # torch.bfloat16]"), which transformers runs in float32; fp16 keeps 11 bits of mantissa.
    parser.add_argument("--gptqmodel-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--rqat", help="the rqat binary: also run `rqat ppl` and compare")
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest relative perplexity difference to rqat")
    args = parser.parse_args()
    loaders = args.loaders.split(",")
    if unknown := set(loaders) - set(LOADERS):
        parser.error(f"unknown loader {sorted(unknown)}; choose from {', '.join(LOADERS)}")

    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    q = json.load(open(os.path.join(args.export, "config.json"))).get("quantization_config", {})
    sequences = token_sequences(args.export, read_texts(args.data), args.max_tokens)
    report = {"checkpoint": args.export, "data": args.data,
              **{k: q.get(k) for k in ("bits", "group_size", "sym", "desc_act", "format", "checkpoint_format")},
              "gptqmodel_backend": args.gptqmodel_backend, "gptqmodel_dtype": args.gptqmodel_dtype,
              "sequences": len(sequences), "predicted_tokens": sum(max(len(s) - 1, 0) for s in sequences),
              "versions": {p: importlib.metadata.version(p) for p in ("torch", "transformers", "optimum", "gptqmodel")}}
    for loader in loaders:
        report[loader] = run_loader(loader, args.export, sequences, args)
    failed = [loader for loader in loaders if "error" in report[loader]]
    if args.rqat:
        rqat = report["rqat"] = run_rqat(args.rqat, args.export, args.data, args.max_tokens)
        if "error" in rqat:
            failed.append("rqat")
        else:
            if rqat["predicted_tokens"] != report["predicted_tokens"]:
                failed.append("tokenization")  # rqat scored other tokens: the comparison means nothing
            for loader in loaders:
                if "perplexity" in report[loader]:
                    diff = report[loader]["perplexity"] / rqat["perplexity"] - 1
                    report[loader]["vs_rqat"] = round(diff, 6)
                    if abs(diff) > args.tolerance:
                        failed.append(loader)
    report["failed"] = failed
    print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
