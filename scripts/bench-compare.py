#!/usr/bin/env python3
"""Old against new binary, side by side: `bench decode` and `bench train` of each, interleaved
round by round (old, new, new, old, ...), and the median over the rounds of the per-round
ratio new/old for batch-1 decode, batch-8 decode and both training shapes.

    python3 scripts/bench-compare.py OLD_RQAT NEW_RQAT [--rounds 5] [--only decode|train] [--json]

Each bench runs with its own defaults except a short decode (--repeats 3) per round; the ratio
of one round is taken between the two runs of that round, so slow drift of the machine cancels. `--only decode` runs only the decode benches, so that
many more rounds fit in the same time where one figure's spread is the question.
"""
import argparse
import json
import statistics
import subprocess
import sys


def measure(binary: str, bench: list[str]) -> dict:
    out = subprocess.run([binary, "bench", *bench, "--json"], check=True, capture_output=True, text=True).stdout
    figures = {}
    for line in out.splitlines():
        record = json.loads(line)
        if record.get("name") == "decode":
            figures[f"decode batch {record['batch']}"] = record["tokens_per_s"]
        elif record.get("name") == "train_step":
            figures[f"train {record['shape']}"] = record["tokens_per_s"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["decode", "train"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    benches = [bench for bench in (["decode", "--repeats", "3"], ["train"]) if args.only in (None, bench[0])]
    ratios: dict[str, list[float]] = {}
    rates: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for r in range(args.rounds):
        order = [("old", args.old), ("new", args.new)]
        if r % 2:
            order.reverse()
        for bench in benches:
            got = {label: measure(binary, bench) for label, binary in order}
            for key in got["old"]:
                if key in got["new"]:
                    ratios.setdefault(key, []).append(got["new"][key] / got["old"][key])
                    for label in ("old", "new"):
                        rates[label].setdefault(key, []).append(got[label][key])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = [{"figure": key, "rounds": len(v), "old_tokens_per_s_median": statistics.median(rates["old"][key]),
             "new_tokens_per_s_median": statistics.median(rates["new"][key]),
             "ratio_new_over_old_median": statistics.median(v), "ratio_min": min(v), "ratio_max": max(v)}
            for key, v in ratios.items()]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"{'figure':<24} {'old tok/s':>10} {'new tok/s':>10} {'new/old median [min-max]':>28}")
        for row in rows:
            print(f"{row['figure']:<24} {row['old_tokens_per_s_median']:>10.1f} {row['new_tokens_per_s_median']:>10.1f} "
                  f"{row['ratio_new_over_old_median']:>12.3f} [{row['ratio_min']:.3f}-{row['ratio_max']:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
