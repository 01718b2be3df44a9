#!/usr/bin/env python3
"""Baseline side of the CPU forward benchmark: transformers (eager PyTorch) Llama / Nemotron-H.

    bench_forward_hf.py --config NAME [--threads N] [--batch 1] [--seq 256] [--iters K] [--json]
    bench_forward_hf.py --config NAME --save DIR [--dtype fp32|bf16]   # write the model for the C++ side
    bench_forward_hf.py --config NAME --load DIR ...                   # benchmark exactly those weights

Model: built from a LlamaConfig with random init (torch.manual_seed(0)), fp32,
attn_implementation="eager"; or, with --load, read from DIR (fp32, eager). Sizes:
  tiny  the `llama` test fixture shape: V128 D64 F96, 3 layers, 8 heads / 2 kv, llama3 RoPE.
  125m  V32000 D768 F2048, 12 layers, 12 heads / 12 kv (~134M parameters with the untied head).
  hybrid100m  NemotronH V32000 D768, pattern M-M-*-M-M-*-M-M- (6 Mamba2 H24 P64 N64, 2 attention,
        8 relu2 MLPs F2048), ~100M parameters; transformers runs its torch (no mamba-ssm) path.
  llama1b  Llama-3.2-1B's shape: V128256 D2048 F8192, 16 layers, 32 heads / 8 kv (head dim 64), tied
        embeddings, RoPE theta 500000 with llama3 scaling (factor 32, original 8192): 1.236B parameters.
  hybrid1b  Nemotron-H-8B's recipe scaled to D2048: V131072 (untied), pattern M-M-M*-M-M-M*-M-M-
        (8 Mamba2 I4096 H64 P64 N128 n_groups 8 K4 chunk 128, 2 attention 16 heads / 8 kv, head
        dim 128, no RoPE, 8 relu2 MLPs F8192): ~1.07B parameters (537M of them embedding + head).
  The two 1B configs are the GPU training benchmark's (tools/bench/run_train_bench_gpu.sh).
Timing: torch.set_num_threads(N), torch.inference_mode(), use_cache=False (no KV cache is built),
full logits [batch, seq, V]; `--warmup` untimed forwards, then `--iters` timed ones on the same
random ids. tokens/s = batch * seq * iters / elapsed.
--save writes DIR with save_pretrained (safetensors + config.json; fp32, or bf16 with --dtype bf16:
the fp32 init rounded once) and exits, unless --iters is given too (then it also benchmarks).
With --json the last stdout line is one JSON object:
{"impl": "transformers", "config": ..., "threads": ..., "batch": ..., "seq": ..., "tokens_per_s": ...}.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def make_config(name):
    from transformers import LlamaConfig

    if name == "tiny":
        return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5,
                           rope_theta=500000.0,
                           rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_max_position_embeddings=256),
                           max_position_embeddings=2048, tie_word_embeddings=False,
                           attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2)
    if name == "125m":
        return LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                           num_attention_heads=12, num_key_value_heads=12, rms_norm_eps=1e-5,
                           rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False,
                           attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2)
    if name == "hybrid100m":
        # Nemotron-H-style hybrid, ~100M parameters: 6 Mamba2, 2 attention (no RoPE), 8 relu2-MLP blocks.
        from transformers import NemotronHConfig

        return NemotronHConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048,
                               hybrid_override_pattern="M-M-*-M-M-*-M-M-", num_attention_heads=12,
                               num_key_value_heads=4, head_dim=64, mamba_num_heads=24, mamba_head_dim=64,
                               n_groups=1, ssm_state_size=64, conv_kernel=4, chunk_size=128,
                               use_conv_bias=True, use_bias=False, layer_norm_epsilon=1e-5,
                               max_position_embeddings=2048, tie_word_embeddings=False,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if name == "llama1b":
        # Llama-3.2-1B's config.json values (random weights).
        return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                           num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
                           rope_theta=500000.0,
                           rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_max_position_embeddings=8192),
                           max_position_embeddings=131072, tie_word_embeddings=True, hidden_act="silu",
                           attention_bias=False, mlp_bias=False, bos_token_id=128000, eos_token_id=128001)
    if name == "hybrid1b":
        # Nemotron-H-8B (architectures.md §4: 24 M / 4 attention / 24 MLP, D4096, I = 2D, n_groups 8,
        # N128, P64, attention head dim 128, relu2 MLP) at D2048: the M-M-M(-M)* period kept, 18 blocks.
        from transformers import NemotronHConfig

        return NemotronHConfig(vocab_size=131072, hidden_size=2048, intermediate_size=8192,
                               hybrid_override_pattern="M-M-M*-M-M-M*-M-M-", num_attention_heads=16,
                               num_key_value_heads=8, head_dim=128, mamba_num_heads=64, mamba_head_dim=64,
                               n_groups=8, ssm_state_size=128, conv_kernel=4, chunk_size=128,
                               use_conv_bias=True, use_bias=False, mamba_proj_bias=False, mlp_bias=False,
                               attention_bias=False, layer_norm_epsilon=1e-5, residual_in_fp32=False,
                               max_position_embeddings=8192, tie_word_embeddings=False,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0)
    raise ValueError(f"unknown config {name!r}")


CONFIGS = ["tiny", "125m", "hybrid100m", "llama1b", "hybrid1b"]


def build(name):
    import torch
    from transformers import AutoModelForCausalLM

    cfg = make_config(name)
    cfg.dtype = "float32"
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).to(torch.float32)
    model.config._attn_implementation = "eager"
    return model.eval()


def load(path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description="transformers CPU forward throughput (baseline for prism)")
    ap.add_argument("--config", choices=CONFIGS, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=None, help="timed forwards (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed forwards first")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--save", metavar="DIR", help="save the model (HF format, --dtype) to DIR")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="dtype of the weights --save writes (the benchmark itself runs fp32)")
    ap.add_argument("--load", metavar="DIR", help="benchmark the checkpoint in DIR instead of a fresh init")
    a = ap.parse_args(argv)

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(a.threads)

    model = load(a.load) if a.load else build(a.config)
    if a.save:
        if a.dtype == "bf16":
            model.to(torch.bfloat16).save_pretrained(a.save)  # config.json records dtype bfloat16
            model.to(torch.float32)  # exact: the benchmark below runs on the rounded weights
        else:
            model.save_pretrained(a.save)
        msg = {"saved": os.path.abspath(a.save), "config": a.config, "dtype": a.dtype,
               "parameters": sum(p.numel() for p in model.parameters())}
        print(json.dumps(msg) if a.json else f"saved {a.config} ({msg['parameters']} parameters) to {a.save}")
        if a.iters is None:
            return 0
    iters = 5 if a.iters is None else a.iters
    if iters < 1 or a.batch < 1 or a.seq < 1:
        ap.error("--iters, --batch and --seq must be >= 1")

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (a.batch, a.seq), generator=g, dtype=torch.int64)
    with torch.inference_mode():
        for _ in range(a.warmup):
            model(ids, use_cache=False)
        t0 = time.perf_counter()
        for _ in range(iters):
            out = model(ids, use_cache=False)
        dt = time.perf_counter() - t0
    assert out.logits.shape == (a.batch, a.seq, model.config.vocab_size)
    tps = a.batch * a.seq * iters / dt
    res = {"impl": "transformers", "config": a.config, "threads": a.threads, "batch": a.batch, "seq": a.seq,
           "iters": iters, "ms_per_iter": round(1000.0 * dt / iters, 3), "tokens_per_s": round(tps, 1),
           "torch": torch.__version__, "transformers": transformers.__version__}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"transformers {a.config}: batch {a.batch} x seq {a.seq}, {a.threads} threads: "
              f"{tps:.0f} tokens/s ({res['ms_per_iter']:.1f} ms/forward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
