#!/usr/bin/env python3
"""Baseline side of the training-step benchmark: transformers + PyTorch (torch AdamW), CPU or CUDA.

    bench_train_hf.py --load DIR [--config NAME] [--attn eager|sdpa] [--threads N] [--batch 1]
                      [--seq 256] [--iters K] [--warmup 2] [--device cpu|cuda] [--dtype fp32|bf16]
                      [--ckpt] [--peak-tflops X] [--json]

The model is read from DIR (written by bench_forward_hf.py --save), in train() mode (all dropouts
of these configs are 0). One step, mirroring tools/bench/bench_train.cpp:
  optimizer.zero_grad(set_to_none=True); logits = model(ids, use_cache=False).logits;
  loss = cross_entropy(logits.view(-1, V), labels.view(-1), reduction="sum") / tokens;
  loss.backward(); clip_grad_norm_(params, 1.0); optimizer.step()
with torch.optim.AdamW(fused=True, lr 1e-4, betas (0.9, 0.95), eps 1e-8), weight decay 0.1 on
every parameter except norms, biases and the Mamba2 A_log / D / dt_bias (prism's default
no_decay). Ids: torch.randint(V, (batch, seq)) from a generator seeded with 0 (on the CPU, then
moved); labels are the ids shifted left with -100 at each row's last position
(tokens = batch * (seq - 1)). `--warmup` untimed steps, then `--iters` timed ones; tokens/s counts
input tokens.

--dtype bf16 is mixed precision the PyTorch way, the fair "transformers + PyTorch" counterpart of
prism's bf16 training: parameters, gradients and AdamW states stay fp32 and the forward (and so
the backward) runs under torch.autocast(dtype=bfloat16). Prism keeps bf16 parameters with fp32
master weights, fp32 gradient accumulation and fp32 moments in its optimizer (DistributedAdamW):
the same arithmetic on the weights that matter (fp32 master, fp32 update), and matmuls in bf16 on
both sides. Loading the model in bf16 with AdamW on bf16 parameters would be cheaper but is a
different (lossy: bf16 updates) algorithm, so it is not the baseline. Note what autocast does and
prism does not: it keeps fp32 weights and re-casts them to bf16 on every use, and F.cross_entropy
runs on fp32 logits (as transformers' own loss does). --dtype fp32 (the CPU default): plain fp32.

--device cuda: the model and ids on the GPU, attention "sdpa" unless --attn says otherwise (eager
on the CPU, as before), torch.cuda.synchronize() at every phase boundary, peak memory =
torch.cuda.max_memory_allocated() since the model was loaded (the caching allocator's peak, the
number prism's bench_train reads too). --ckpt: transformers' gradient checkpointing per decoder
layer (use_reentrant=False), the counterpart of bench_train --ckpt.

MFU uses prism's convention (include/prism/train/metrics.h, PaLM appendix B): FLOPs per token =
6 N + 12 L H Q T, N = parameters without the input embedding (unless tied: then it is counted once,
as the lm_head), L = attention layers (NemotronH: the "*" blocks only), H query heads, Q head dim,
T = seq; peak = H100 SXM dense bf16 989.4e12 FLOP/s on CUDA (--peak-tflops overrides; no MFU on
the CPU without it).
With --json the last stdout line is one JSON object:
{"impl": "transformers", "attn": ..., "device": ..., "dtype": ..., "step_ms": ... (mean),
 "step_ms_min": ... (fastest step), "fwd_ms": ..., "bwd_ms": ..., "opt_ms": ..., "loss0": ...,
 "params": ..., "flops_per_token": ..., "mfu": ..., "peak_mem_gib": ..., "tokens_per_s": ...}.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def decays(name, p):
    """prism's parameter kinds (CausalLM::parameter_kinds) + default no_decay {norm, bias, ssm}: True = weight decay."""
    if name.endswith(".bias"):
        return False
    if name.endswith("A_log") or name.endswith(".D") or name.endswith("dt_bias"):
        return False
    return p.dim() > 1  # 1-D weights are norms; embedding and lm_head do get decay


H100_BF16_PEAK_FLOPS = 989.4e12  # include/prism/train/metrics.h kH100Bf16PeakFlops


def flops_per_token(model, seq):
    """(N, 6 N + 12 L H Q T) as prism's trainer counts them (metrics.h flops_per_token)."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())  # a tied embedding / lm_head is one parameter
    if not getattr(cfg, "tie_word_embeddings", False):
        n -= model.get_input_embeddings().weight.numel()
    if cfg.model_type == "nemotron_h":
        pattern = getattr(cfg, "hybrid_override_pattern", None)
        if pattern:
            attn_layers = pattern.count("*")
        else:
            attn_layers = sum(t in ("attention", "full_attention") for t in cfg.layers_block_type)
    else:
        attn_layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return n, 6.0 * n + 12.0 * attn_layers * heads * head_dim * seq


def mamba_fast_path(model):
    """Whether transformers' NemotronH / Mamba2 mixer would use the mamba-ssm + causal-conv1d kernels."""
    import importlib

    mod = importlib.import_module(type(model).__module__)
    return bool(getattr(mod, "is_fast_path_available", False))


def main(argv=None):
    ap = argparse.ArgumentParser(description="transformers training-step throughput (baseline for prism)")
    ap.add_argument("--load", metavar="DIR", required=True, help="HF checkpoint directory")
    ap.add_argument("--config", default=None, help="label for the JSON output")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default=None, help="default: sdpa on CUDA, eager on CPU")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: fp32 parameters and AdamW, forward under torch.autocast(bfloat16)")
    ap.add_argument("--ckpt", action="store_true", help="gradient checkpointing per decoder layer")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="peak FLOP/s for MFU (default: H100 dense bf16 on CUDA, none on CPU)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    a = ap.parse_args(argv)
    if a.attn is None:
        a.attn = "sdpa" if a.device.startswith("cuda") else "eager"
    if a.iters < 1 or a.batch < 1 or a.seq < 2:
        ap.error("--iters and --batch must be >= 1, --seq >= 2")

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(a.threads)

    device = torch.device(a.device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    model = AutoModelForCausalLM.from_pretrained(a.load, dtype=torch.float32, attn_implementation=a.attn)
    model.to(device)
    model.train()
    if a.ckpt:  # every decoder layer, non-reentrant (activation_checkpointing_enable is v5's name)
        kw = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)  # the loader's transient copies
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
    ids = ids.to(device)
    labels = labels.view(-1).to(device)
    tokens = a.batch * (a.seq - 1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = model(ids, use_cache=False).logits
            loss = F.cross_entropy(logits.view(-1, V), labels, ignore_index=-100, reduction="sum") / tokens
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sync()
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
    sync()
    dt = time.perf_counter() - t0
    if loss0 is None:
        loss0 = loss
    tps = a.batch * a.seq * a.iters / dt
    n_params, fpt = flops_per_token(model, a.seq)
    peak = a.peak_tflops * 1e12 if a.peak_tflops > 0 else (H100_BF16_PEAK_FLOPS if cuda else 0.0)
    mfu = round(tps * fpt / peak, 4) if peak > 0 else None
    peak_gib = round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if cuda else None
    res = {"impl": "transformers", "attn": a.attn, "config": a.config or a.load, "device": a.device,
           "dtype": a.dtype, "ckpt": a.ckpt, "threads": a.threads,
           "batch": a.batch, "seq": a.seq, "iters": a.iters, "step_ms": round(1000.0 * dt / a.iters, 1),
           "step_ms_min": round(1000.0 * best, 1),
           "fwd_ms": round(1000.0 * split[0] / a.iters, 1), "bwd_ms": round(1000.0 * split[1] / a.iters, 1),
           "opt_ms": round(1000.0 * split[2] / a.iters, 1), "loss0": round(loss0, 6), "loss": round(loss, 6),
           "grad_norm": round(norm, 6), "params": n_params, "flops_per_token": fpt, "mfu": mfu,
           "peak_mem_gib": peak_gib, "tokens_per_s": round(tps, 1),
           "torch": torch.__version__, "transformers": transformers.__version__}
    if model.config.model_type in ("nemotron_h", "mamba2", "bamba", "granitemoehybrid"):
        res["mamba_kernels"] = mamba_fast_path(model)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"transformers ({a.attn}, {a.device}, {a.dtype}) {res['config']}: batch {a.batch} x seq {a.seq}, "
              f"{a.threads} threads: "
              f"{res['tokens_per_s']:.0f} tokens/s ({res['step_ms']:.1f} ms/step: forward {res['fwd_ms']}, "
              f"backward {res['bwd_ms']}, optimizer {res['opt_ms']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
