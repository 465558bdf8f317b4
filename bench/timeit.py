#!/usr/bin/env python3
"""Wall-time a command: one warm-up, then N rounds; stdout to /dev/null.

Usage: timeit.py ROUNDS -- CMD [ARGS...]
Prints one line: "median_ms min_ms max_ms" (3 decimals). Exits 1 if any run fails.
"""
import statistics
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    rounds = int(sys.argv[1])
    cmd = sys.argv[3:]
    samples = []
    for i in range(rounds + 1):  # run 0 is the warm-up, not recorded
        t0 = time.perf_counter_ns()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t1 = time.perf_counter_ns()
        if r.returncode != 0:
            sys.stderr.write(r.stderr.decode(errors="replace"))
            print(f"command failed (exit {r.returncode}): {' '.join(cmd)}", file=sys.stderr)
            return 1
        if i > 0:
            samples.append((t1 - t0) / 1e6)
    print(f"{statistics.median(samples):.3f} {min(samples):.3f} {max(samples):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
