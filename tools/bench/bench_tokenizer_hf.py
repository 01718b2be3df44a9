#!/usr/bin/env python3
"""HF `tokenizers` side of tools/bench/bench_tokenizer.cpp: encode throughput on the same corpus.

    bench_tokenizer_hf.py <tokenizer.json|dir> <corpus.txt> [threads] [reps=3] [label]

Single thread = encode_batch with RAYON_NUM_THREADS=1; N threads = encode_batch with
RAYON_NUM_THREADS=N (the pool size is fixed at first use, so each setting runs in its own
subprocess). add_special_tokens=False, one untimed warm-up pass, as the C++ side. Prints Markdown rows.
"""
import os
import subprocess
import sys
import time


def child(path, corpus, threads, reps, label):
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from tokenizers import Tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    tok = Tokenizer.from_file(path)
    with open(corpus, encoding="utf-8", newline="") as fh:
        text = fh.read()
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n")
    nbytes = sum(len(l.encode("utf-8")) for l in lines)
    tok.encode_batch(lines, add_special_tokens=False)
    t0 = time.perf_counter()
    ntok = 0
    for _ in range(reps):
        ntok += sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
    s = time.perf_counter() - t0
    print(f"| hf-tokenizers | {label} | warm | {threads} | {nbytes * reps / s / 1e6:.2f} | {ntok / s / 1e6:.3f} |", flush=True)


def main(argv):
    if len(argv) >= 2 and argv[1] == "--child":
        child(argv[2], argv[3], int(argv[4]), int(argv[5]), argv[6])
        return 0
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, corpus = argv[1], argv[2]
    threads = int(argv[3]) if len(argv) > 3 else (os.cpu_count() or 1)
    reps = int(argv[4]) if len(argv) > 4 else 3
    label = argv[5] if len(argv) > 5 else path
    for th in sorted({1, threads}):
        subprocess.run([sys.executable, __file__, "--child", path, corpus, str(th), str(reps), label], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
