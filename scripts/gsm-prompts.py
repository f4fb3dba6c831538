#!/usr/bin/env python3
"""Writes GSM8K questions of the GSM-Symbolic `eng` templates (fetched into assets/ by
scripts/fetch-assets.sh, ordered by file name) as a JSONL file of {"prompt": question}, for
`rqat generate --prompts`.

    python3 scripts/gsm-prompts.py OUT START [END] [--repeat N]

Questions START..END-1 as Python slices them (negative counts from the end; END omitted: to the
last), the whole selection N times over.
"""
import argparse
import glob
import json
import tomllib


def questions() -> list[str]:
    files = sorted(glob.glob("assets/gsm-symbolic/eng/symbolic/*.toml"))
    if not files:
        raise SystemExit("no GSM-Symbolic templates in assets/gsm-symbolic/eng: run scripts/fetch-assets.sh")
    return [tomllib.load(open(f, "rb"))["question"] for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("start", type=int)
    parser.add_argument("end", type=int, nargs="?")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with open(args.out, "w") as f:
        for text in questions()[args.start:args.end] * args.repeat:
            f.write(json.dumps({"prompt": text}) + "\n")


if __name__ == "__main__":
    main()
