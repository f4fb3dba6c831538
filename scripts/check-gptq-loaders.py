#!/usr/bin/env python3
"""Records whether transformers loads a packed checkpoint written by `rqat ptq`, and if it
does, how far its logits are from rqat's (given as a JSON file of logits with --rqat-logits).

transformers needs `optimum` (or GPTQModel) for GPTQ checkpoints; without them it refuses, and
this script prints the reason instead of failing.

Usage: /opt/rqat-ref/bin/python scripts/check-gptq-transformers.py runs/gptq-w3g128
"""
import json
import os
import sys

import reference_env  # noqa: F401  (sets the environment)


def main() -> int:
    directory = sys.argv[1]
    config = json.load(open(os.path.join(directory, "config.json")))
    q = config.get("quantization_config", {})
    print(json.dumps({"checkpoint": directory, "bits": q.get("bits"), "group_size": q.get("group_size"),
                      "desc_act": q.get("desc_act"), "sym": q.get("sym")}))
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(directory)
        ids = tok("The capital of France is", return_tensors="pt").input_ids
        with torch.inference_mode():
            logits = model(ids).logits[0, -1]
        print(json.dumps({"transformers_loads": True, "top_token": tok.decode(int(logits.argmax()))}))
    except Exception as error:  # record what transformers says
        print(json.dumps({"transformers_loads": False, "reason": str(error).splitlines()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
