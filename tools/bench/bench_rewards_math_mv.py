#!/usr/bin/env python3
"""Math-Verify side of tools/bench/bench_rewards_math.cpp: verifications per second on the same
golden corpus. Each verification = parse(gold in \\boxed{}) + parse(completion) + verify, the way
trainers call it (TRL / verl), with Math-Verify's default configs and its signal-based timeouts
(single process, main thread).

    bench_rewards_math_mv.py <math_golden.jsonl> [reps=1] [symbolic_ids]

With symbolic_ids (written by bench_rewards_math), also times the subset prism sent to GiNaC.
Prints one JSON line per mode.
"""
import json
import logging
import sys
import time

logging.disable(logging.WARNING)


def main():
    path = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rows = [json.loads(l) for l in open(path)]
    from math_verify import parse, verify

    def one(r):
        return verify(parse("\\boxed{" + r["gold"] + "}"), parse(r["completion"]))

    def time_it(batch):
        best = 1e30
        for _ in range(reps):
            t0 = time.perf_counter()
            for r in batch:
                one(r)
            best = min(best, time.perf_counter() - t0)
        return best

    for r in rows[:50]:  # warm-up (imports, compiled grammars)
        one(r)
    t = time_it(rows)
    print(json.dumps({"mode": "all", "threads": 1, "pairs": len(rows), "seconds": t, "per_s": len(rows) / t}))
    if len(sys.argv) > 3:
        ids = [int(l) for l in open(sys.argv[3]) if l.strip()]
        sub = [rows[i] for i in ids]
        if sub:
            t = time_it(sub)
            print(json.dumps({"mode": "symbolic", "threads": 1, "pairs": len(sub), "seconds": t, "per_s": len(sub) / t}))


if __name__ == "__main__":
    main()
