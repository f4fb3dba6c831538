"""The common start of the reference scripts (transformers on CPU, in the venv of
scripts/make-reference.py): offline and quiet, and where the repository and the model file are.
Import it before torch and transformers; it imports neither at import time, so a script can still
report their absence itself.

Also the helpers the fixture generators under scripts/reference/ share (JSON writing, rounding,
the GSM-Symbolic questions, the GGUF tokenizer, seeded tiny checkpoints) and `run_group`, the
command line every generator has: ``--fixtures DIR --assets DIR --threads N``."""
import os
from pathlib import Path

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                     ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TQDM_DISABLE", "1")):
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------- fixture helpers


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (fixtures may go elsewhere)."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def write_json(path: Path, obj) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {shown(path)} ({path.stat().st_size} bytes)")


def round_list(values, decimals: int) -> list[float]:
    return [round(float(v), decimals) for v in values]


def sig_list(values, digits: int = 6) -> list[float]:
    return [float(f"{float(v):.{digits}g}") for v in values]


def load_gsm(assets: Path) -> tuple[list[str], list[str]]:
    """Questions and answers of eng/symbolic/0000..0099.toml, in file order."""
    import tomllib

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


def init_weights(model, seed: int) -> None:
    """In named_parameters() order each tensor gets N(0,1) noise from a generator seeded with
    ``seed``: norm weights become 1 + 0.1*noise, everything else 0.1*noise."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def save_checkpoint(model, out_dir: Path, rope_theta: float) -> None:
    """save_pretrained (safetensors) plus the classic top-level ``rope_theta`` key of real
    checkpoints in config.json (transformers 5 writes only ``rope_parameters``)."""
    import json

    model.save_pretrained(str(out_dir), safe_serialization=True)
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rope_theta"] = rope_theta
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def print_written(out_dir: Path) -> None:
    for f in sorted(out_dir.iterdir()):
        print(f"wrote {shown(f)} ({f.stat().st_size} bytes)")


# --------------------------------------------------------------------------- command line


def parse_args(description: str, argv=None, groups=None):
    import argparse

    parser = argparse.ArgumentParser(description=description)
    if groups is not None:
        parser.add_argument("--only", choices=groups, help="regenerate a single fixture group")
    parser.add_argument("--fixtures", type=Path, default=REPO / "Tests" / "Fixtures")
    parser.add_argument("--assets", type=Path, default=REPO / "assets")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def start(threads: int) -> None:
    """What every run does before the first group: thread count, global seeds, quiet transformers.
    (Each group seeds its own generators; the global seeds are only a safety net.)"""
    import random

    import torch

    try:
        import transformers
    except ImportError:  # the kd and gptq groups need only torch
        pass
    else:
        transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    random.seed(0)


def run_group(module_doc: str, make, argv=None) -> int:
    """The ``__main__`` of a generator under scripts/reference/: one group, on its own."""
    args = parse_args(module_doc.split("\n\n")[0], argv)
    start(args.threads)
    make(args.fixtures.resolve(), args.assets.resolve())
    return 0
