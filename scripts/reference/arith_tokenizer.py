#!/usr/bin/env python3
"""Checks that the arith task's tokenizer, as `rqat init --tokenizer arith` writes it, loads in
Hugging Face `tokenizers` and transformers and gives the ids `rqat tokenize` gives.

    scripts/reference/arith_tokenizer.py RQAT_BINARY MODEL_DIR

MODEL_DIR is an `rqat init` output (tokenizer.json + tokenizer_config.json). Run with the
reference venv (/opt/rqat-gptq/bin/python). Prints one line per text and a summary; exits 1 on
any difference. Reference only: no test needs it.
"""
import json
import subprocess
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

TEXTS = [
    "Ann has 7 apples. Ann gets 5 more. Ann gives away 3. How many apples does Ann have now?\n",
    "7+5=12\n12-3=9\n#### 9",
    "Jo has 4 shells. Jo ends up with 3 times as many. Jo gives away 9. How many shells does Jo have now?\n12-9=3\n#### 3",
    "Numbers 1234567890 stay digit by digit, 3.14 and -42 too.",
    "Text outside the task: Zoë's café, naïve 3½ €, tabs\tand  spaces.",
    "<|endoftext|>",
]


def main() -> int:
    rqat, model = sys.argv[1], sys.argv[2]
    raw = Tokenizer.from_file(f"{model}/tokenizer.json")
    auto = AutoTokenizer.from_pretrained(model)
    config = json.load(open(f"{model}/config.json"))
    failures = 0
    for text in TEXTS:
        ours = json.loads(subprocess.run([rqat, "tokenize", "--model", model, "--text", text],
                                         check=True, capture_output=True, text=True).stdout)
        theirs = raw.encode(text, add_special_tokens=False).ids
        hf = auto(text, add_special_tokens=False)["input_ids"]
        decoded = auto.decode(hf)
        ok = ours == theirs == hf and decoded == text
        failures += not ok
        print(("ok  " if ok else "DIFF") + f" {len(ours):3d} tokens  {text[:60]!r}" + ("" if ok else f"\n  rqat {ours}\n  hf   {hf}\n  dec  {decoded!r}"))
    digits = [auto.convert_ids_to_tokens(auto(str(d), add_special_tokens=False)["input_ids"]) for d in range(10)]
    single = all(len(t) == 1 for t in digits)
    no_mixed = not any(any(c.isdigit() for c in tok) and len(tok) > 1 for tok in auto.get_vocab())
    print(f"vocab {len(auto)} (config {config['vocab_size']}), eos {auto.eos_token!r} "
          f"id {auto.eos_token_id} (config {config.get('eos_token_id')}), pad {auto.pad_token!r}; "
          f"digits single tokens: {single}; no token mixes a digit with other text: {no_mixed}")
    failures += not (single and no_mixed and auto.eos_token_id == config.get("eos_token_id"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
