#!/usr/bin/env python3
"""Turns the JSONL traces of `rqat generate --prompts` into SFT data for `rqat sft --data`: one
{"prompt", "completion"} line per trace, every other field dropped.

    python3 scripts/traces-to-sft.py TRACES.jsonl OUT.jsonl
"""
import json
import sys


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    with open(sys.argv[2], "w") as out:
        for line in open(sys.argv[1]):
            r = json.loads(line)
            out.write(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n")


if __name__ == "__main__":
    main()
