#!/usr/bin/env python3
"""Baseline for `prism-train analyze weights`: the per-tensor script a user writes with
safetensors + torch (tensor by tensor, float64), computing the same numbers: ||dW||, ||W||, the
changed counts at the six thresholds. Prints a JSON line with seconds and the totals so the run
can be checked against prism's weights.json.

    bench_analysis_weights_hf.py <base_dir> <new_dir> [--threads N]
"""
import argparse
import json
import os
import time

import torch
from safetensors import safe_open

T = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1]


def files(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        wm = json.load(open(idx))["weight_map"]
        return {k: os.path.join(d, v) for k, v in wm.items()}
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        return {k: os.path.join(d, "model.safetensors") for k in f.keys()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    fb, fn = files(a.base), files(a.new)
    w2 = d2 = 0.0
    changed = [0] * len(T)
    numel = 0
    handles = {}

    def get(path, name):
        if path not in handles:
            handles[path] = safe_open(path, "pt")
        return handles[path].get_tensor(name)

    with torch.no_grad():
        for name in sorted(fb):
            w = get(fb[name], name).double()
            d = get(fn[name], name).double() - w
            w2 += float((w * w).sum())
            d2 += float((d * d).sum())
            ad, aw = d.abs(), w.abs()
            for i, t in enumerate(T):
                changed[i] += int((ad > t * aw).sum())
            numel += w.numel()
    print(json.dumps({"seconds": time.time() - t0, "numel": numel, "l2": (d2 / w2) ** 0.5,
                      "changed": [c / numel for c in changed]}))


if __name__ == "__main__":
    main()
