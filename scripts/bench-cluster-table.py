#!/usr/bin/env python3
"""The closing table of scripts/bench-cluster-netns.sh: measured step times next to the cost
model of docs/SCALING.md ("Checking the model").

    python3 scripts/bench-cluster-table.py RESULTS.jsonl ALLREDUCE_ALGORITHM

RESULTS.jsonl: the script's --out file (the JSON lines of `rqat bench cluster --json` with
"scenario", "link", "probe_gbit_per_s" and "repeat" added); ALLREDUCE_ALGORITHM: the libnbc
iallreduce algorithm number the runs used (rqat's default is 3).
"""
import json, math, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["name"] == "cluster":
        runs[(d["scenario"], d["link"])].append(d)
algorithm = int(sys.argv[2])
def mean(xs): return sum(xs) / len(xs)
def spread(xs): return "%.2f" % mean(xs) if len(xs) == 1 else "%.2f-%.2f" % (min(xs), max(xs))
def link_bytes_per_s(link, probe_gbit):
    # Nominal rate of a shaped link; the probe's goodput for the unshaped veth.
    if link == "unlimited": return probe_gbit * 1e9 / 8
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6)):
        if link.endswith(unit): return float(link[:-len(unit)]) * scale / 8
    raise ValueError(link)
def allreduce_factor(S):
    # Gradient buffers that cross the busiest student link one after the other.
    if S < 2: return 0
    if algorithm in (1, 3): return 2 * (S - 1) / S          # ring, reduce-scatter + allgather
    if algorithm == 4: return math.ceil(math.log2(S))         # recursive doubling
    return 2 * math.ceil(math.log2(S))                        # binomial reduce, then binomial bcast
print()
print("allreduce algorithm: %s" % {0: "libnbc default (binomial, as chosen for MPI_IN_PLACE)", 1: "ring", 2: "binomial",
                                   3: "reduce-scatter + allgather (rqat's default)", 4: "recursive doubling"}[algorithm])
print("%-9s %-9s %6s | %-11s %7s %7s | %-11s %7s | %-11s %7s" % ("scenario", "link", "probe", "step", "serial", "overlap",
                                                              "ar wait", "model", "wait", "model"))
for scenario in sorted({s for s, _ in runs}):
    base = runs.get((scenario, "unlimited"))
    if not base: continue
    s0 = mean([d["step_s"] for d in base]); w0 = mean([d["student_wait_s_per_step"] for d in base])
    a0 = mean([d.get("allreduce_wait_s_per_step", 0) for d in base])
    W0 = link_bytes_per_s("unlimited", mean([d["probe_gbit_per_s"] for d in base]))
    for link in sorted({l for s, l in runs if s == scenario}, key=lambda l: -link_bytes_per_s(l, 100)):
        ds = runs[(scenario, link)]
        S = ds[0]["students"]
        G = mean([d["signal_bytes_per_step"] for d in ds])
        A = allreduce_factor(S) * mean([d.get("allreduce_bytes_per_step", 0) for d in ds])
        W = min(link_bytes_per_s(link, 0), W0) if link != "unlimited" else W0   # a veth gives no more than unshaped
        delta = 1 / W - 1 / W0   # seconds per byte the slower link adds
        serial = s0 + (G + A) * delta
        overlap = max(s0 + A * delta, (G + A) / W)
        print("%-9s %-9s %6.2f | %-11s %7.2f %7.2f | %-11s %7.2f | %-11s %7.2f" % (
            scenario, link, mean([d["probe_gbit_per_s"] for d in ds]),
            spread([d["step_s"] for d in ds]), serial, overlap,
            spread([d.get("allreduce_wait_s_per_step", 0) for d in ds]), a0 + A * delta,
            spread([d["student_wait_s_per_step"] for d in ds]), w0 + G * delta))
print("Seconds per optimizer step. probe: Gbit/s of one TCP stream teacher -> student 1 over that link.")
print("step: measured (range over repeats); serial: unshaped step + every byte of the step (signal and allreduce)")
print("at the lower rate; overlap: the signal hidden behind compute by the look-ahead, the allreduce exposed.")
print("ar wait / wait: measured allreduce wait after backward and wait for the teacher; model: the unshaped")
print("figure + the allreduce bytes (resp. signal bytes) at the lower rate.")
