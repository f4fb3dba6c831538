#!/usr/bin/env python3
"""One line per run of scripts/bench-cluster-netns.sh: the step-time breakdown of each "cluster"
JSON line of `rqat bench cluster --json` read from stdin."""
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print("   step %.2f s (median %.2f), student compute %.2f s, wait for teacher %.2f s, allreduce wait %.2f s per step; signal %.1f MB, allreduce %.0f MB per step"
          % (d["step_s"], d["step_s_median"], d["student_compute_s_per_step"], d["student_wait_s_per_step"],
             d.get("allreduce_wait_s_per_step", 0), d["signal_bytes_per_step"] / 1e6, d.get("allreduce_bytes_per_step", 0) / 1e6))
