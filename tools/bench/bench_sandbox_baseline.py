#!/usr/bin/env python3
"""Baseline for bench_sandbox: HumanEval canonical solutions run with a plain
`subprocess.run([python3, file], timeout=10)` per candidate (no isolation at all), in a loop
(workers=1) or on a thread pool (workers=N). Same programs as the sandbox bench (prompt + solution +
test + check(entry_point)), same protocol (one warm-up pass, best of `reps`). Prints one JSON line.

    bench_sandbox_baseline.py humaneval.jsonl [--workers 2] [--reps 3] [--python /usr/bin/python3]
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--python", default="/usr/bin/python3")
    args = ap.parse_args()
    rows = [json.loads(l) for l in open(args.data, encoding="utf-8") if l.strip()]
    programs = [r["prompt"] + r["canonical_solution"] + "\n" + r["test"] + "\n" + f"check({r['entry_point']})\n"
                for r in rows]

    def run_one(program):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "main.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(program)
            try:
                r = subprocess.run([args.python, path], cwd=d, capture_output=True, timeout=10)
                return r.returncode == 0
            except subprocess.TimeoutExpired:
                return False

    def one_pass():
        if args.workers == 1:
            return sum(run_one(p) for p in programs)
        with concurrent.futures.ThreadPoolExecutor(args.workers) as ex:
            return sum(ex.map(run_one, programs))

    one_pass()
    best, ok = 1e30, 0
    for _ in range(args.reps):
        t0 = time.perf_counter()
        ok = one_pass()
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"impl": "subprocess.run", "workers": args.workers, "candidates": len(programs), "passed": ok,
                      "seconds": round(best, 3), "candidates_per_s": round(len(programs) / best, 1)}))


if __name__ == "__main__":
    main()
