#!/usr/bin/env python3
"""Baseline side of the CPU training-step benchmark: transformers (eager PyTorch) + torch AdamW.

    bench_train_hf.py --load DIR [--config NAME] [--attn eager|sdpa] [--threads N] [--batch 1]
                      [--seq 256] [--iters K] [--warmup 2] [--json]

The model is read from DIR (written by bench_forward_hf.py --save), fp32, in train() mode (all
dropouts of these configs are 0). One step, mirroring tools/bench/bench_train.cpp:
  optimizer.zero_grad(set_to_none=True); logits = model(ids, use_cache=False).logits;
  loss = cross_entropy(logits.view(-1, V), labels.view(-1), reduction="sum") / tokens;
  loss.backward(); clip_grad_norm_(params, 1.0); optimizer.step()
with torch.optim.AdamW(fused=True, lr 1e-4, betas (0.9, 0.95), eps 1e-8), weight decay 0.1 on
every parameter except norms, biases and the Mamba2 A_log / D / dt_bias (prism's default
no_decay). Ids: torch.randint(V, (batch, seq)) from a generator seeded with 0; labels are the ids
shifted left with -100 at each row's last position (tokens = batch * (seq - 1)).
`--warmup` untimed steps, then `--iters` timed ones; tokens/s counts input tokens.
With --json the last stdout line is one JSON object:
{"impl": "transformers", "attn": ..., "step_ms": ... (mean), "step_ms_min": ... (fastest step), "fwd_ms": ..., "bwd_ms": ..., "opt_ms": ...,
 "loss0": ..., "tokens_per_s": ...}.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def decays(name, p):
    """prism's parameter_kind + default no_decay {norm, bias, ssm}: True = weight decay."""
    if name.endswith(".bias"):
        return False
    if name.endswith("A_log") or name.endswith(".D") or name.endswith("dt_bias"):
        return False
    return p.dim() > 1  # 1-D weights are norms; embedding and lm_head do get decay


def main(argv=None):
    ap = argparse.ArgumentParser(description="transformers CPU training-step throughput (baseline for prism)")
    ap.add_argument("--load", metavar="DIR", required=True, help="HF checkpoint directory")
    ap.add_argument("--config", default=None, help="label for the JSON output")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    a = ap.parse_args(argv)
    if a.iters < 1 or a.batch < 1 or a.seq < 2:
        ap.error("--iters and --batch must be >= 1, --seq >= 2")

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(a.threads)

    model = AutoModelForCausalLM.from_pretrained(a.load, dtype=torch.float32, attn_implementation=a.attn)
    model.train()
    V = model.config.vocab_size
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if decays(n, p)], "weight_decay": 0.1},
              {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    params = [p for _, p in named]

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(V, (a.batch, a.seq), generator=g, dtype=torch.int64)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    labels = labels.view(-1)
    tokens = a.batch * (a.seq - 1)

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(ids, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, V), labels, ignore_index=-100, reduction="sum") / tokens
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t3 = time.perf_counter()
        return loss.item(), norm.item(), (t1 - t0, t2 - t1, t3 - t2)

    loss0 = None
    for _ in range(a.warmup):
        l, _, _ = step()
        loss0 = l if loss0 is None else loss0
    split = [0.0, 0.0, 0.0]
    best = float("inf")
    t0 = time.perf_counter()
    for _ in range(a.iters):
        ts = time.perf_counter()
        loss, norm, s = step()
        best = min(best, time.perf_counter() - ts)
        split = [x + y for x, y in zip(split, s)]
    dt = time.perf_counter() - t0
    if loss0 is None:
        loss0 = loss
    res = {"impl": "transformers", "attn": a.attn, "config": a.config or a.load, "threads": a.threads,
           "batch": a.batch, "seq": a.seq, "iters": a.iters, "step_ms": round(1000.0 * dt / a.iters, 1),
           "step_ms_min": round(1000.0 * best, 1),
           "fwd_ms": round(1000.0 * split[0] / a.iters, 1), "bwd_ms": round(1000.0 * split[1] / a.iters, 1),
           "opt_ms": round(1000.0 * split[2] / a.iters, 1), "loss0": round(loss0, 6), "loss": round(loss, 6),
           "grad_norm": round(norm, 6), "tokens_per_s": round(a.batch * a.seq * a.iters / dt, 1),
           "torch": torch.__version__, "transformers": transformers.__version__}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"transformers ({a.attn}) {res['config']}: batch {a.batch} x seq {a.seq}, {a.threads} threads: "
              f"{res['tokens_per_s']:.0f} tokens/s ({res['step_ms']:.1f} ms/step: forward {res['fwd_ms']}, "
              f"backward {res['bwd_ms']}, optimizer {res['opt_ms']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
