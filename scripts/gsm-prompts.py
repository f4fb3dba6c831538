#!/usr/bin/env python3
"""Writes GSM8K questions of the GSM-Symbolic `eng` templates (fetched into assets/ by
scripts/fetch-assets.sh, ordered by file name) as a JSONL file of {"prompt": question}, for
`rqat generate --prompts`.

    python3 scripts/gsm-prompts.py OUT START [END] [--repeat N] [--with-answer]

Questions START..END-1 as Python slices them (negative counts from the end; END omitted: to the
last), the whole selection N times over. With --with-answer OUT is plain text instead: per
question a line with the question and a line with its reference answer (the part after "####").
"""
import argparse
import glob
import json
import tomllib


def problems() -> list[dict]:
    files = sorted(glob.glob("assets/gsm-symbolic/eng/symbolic/*.toml"))
    if not files:
        raise SystemExit("no GSM-Symbolic templates in assets/gsm-symbolic/eng: run scripts/fetch-assets.sh")
    return [tomllib.load(open(f, "rb")) for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("start", type=int)
    parser.add_argument("end", type=int, nargs="?")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--with-answer", action="store_true",
                        help="plain text: each question on one line, its reference answer on the next")
    args = parser.parse_args()
    with open(args.out, "w") as f:
        for item in problems()[args.start:args.end] * args.repeat:
            if args.with_answer:
                f.write(item["question"] + "\n" + item["answer"].split("####")[-1].strip() + "\n")
            else:
                f.write(json.dumps({"prompt": item["question"]}) + "\n")


if __name__ == "__main__":
    main()
