#!/usr/bin/env python3
"""`prism-train merge` against a torch computation (CTest `py_merge_oracle`).

Environment: PRISM_BIN (directory of prism-train), PRISM_SOURCE (the source tree).

Checkpoints are random tiny models made with transformers (Llama with tied embeddings and biases;
Nemotron-H with attention, relu2 MLP and Mamba2 blocks), saved by save_pretrained in bf16 or fp32,
single-file or sharded. The oracle reads every tensor with safetensors.torch, computes
sum_i w_i * W_i in float64 (acc.add_(W_i, alpha=w_i)) and rounds once to the reference checkpoint's
dtype; prism's output must equal it bit for bit, and lie within one ulp of the unfused
acc + w_i * W_i (decimal weights put many fp32/bf16 results on exact ties, where the last fp64
bit decides the rounding). Also checked: the shard layout
(the reference's, or greedy by --shard-size), copied non-weight files, the config form, that
transformers loads the result, one-line errors naming the tensor for architecture / shape / name
mismatches, and the peak memory of a streamed merge.
Prints one line per check and ends with `N passed, M failed`.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from oracle_common import BIN, PRISM, SRC, check, finish  # noqa: E402  (sibling module)


def run(args, timeout=600):
    p = subprocess.run([PRISM] + args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def make_model(kind, seed, **over):
    import transformers
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    if kind == "nemotron_h":
        cfg = transformers.NemotronHConfig(
            vocab_size=96, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            intermediate_size=over.get("intermediate_size", 48), hybrid_override_pattern="M-*-", mamba_num_heads=4,
            mamba_head_dim=8, n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=8, use_conv_bias=True,
            use_bias=False, layer_norm_epsilon=1e-5, max_position_embeddings=128, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = transformers.NemotronHForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(
            vocab_size=over.get("vocab_size", 96), hidden_size=over.get("hidden_size", 32),
            intermediate_size=over.get("intermediate_size", 48), num_hidden_layers=over.get("layers", 2),
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=128,
            tie_word_embeddings=over.get("tie", True), attention_bias=True, mlp_bias=True, bos_token_id=1,
            eos_token_id=2, pad_token_id=None)
        model = transformers.LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + 0.01)
    return model


def save(model, path, dtype, shard="5GB"):
    m = model.to(dtype)
    m.config.dtype = str(dtype).replace("torch.", "")
    m.save_pretrained(path, max_shard_size=shard)
    model.to(torch.float32)
    return path


def layout(path):
    """tensor name -> shard file name."""
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        return json.load(open(idx))["weight_map"]
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as fh:
        return {k: "model.safetensors" for k in fh.keys()}


def read_tensors(path):
    out = {}
    for f in sorted(set(layout(path).values())):
        with safe_open(os.path.join(path, f), "pt") as fh:
            for k in fh.keys():
                out[k] = fh.get_tensor(k)
    return out


def term_scale(paths, weights):
    """sum_i |w_i| |W_i| per element (fp64): the size of the rounding errors of the fp64 sum."""
    ts = [read_tensors(p) for p in paths]
    return {n: sum(abs(w) * t[n].to(torch.float64).abs() for t, w in zip(ts, weights)) for n in ts[0]}


def oracle(paths, weights, fused=True):
    """sum_i w_i W_i in float64, rounded once to the first checkpoint's dtypes. fused: each term
    added as acc.add_(W_i, alpha=w_i) (one rounding per term, as ATen's add with alpha); else
    acc + w_i * W_i (two). Mixes with decimal weights land on exact fp32/bf16 ties often, and the
    last fp64 bit then decides the final rounding, so only the fused form can be bit-exact."""
    ts = [read_tensors(p) for p in paths]
    out = {}
    for name, ref in ts[0].items():
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for t, w in zip(ts, weights):
            if fused:
                acc.add_(t[name].to(torch.float64), alpha=w)
            else:
                acc = acc + w * t[name].to(torch.float64)
        out[name] = acc.to(ref.dtype)
    return out


def compare(what, got_dir, paths, weights):
    want, loose = oracle(paths, weights), oracle(paths, weights, fused=False)
    scale = term_scale(paths, weights)
    got = read_tensors(got_dir)
    check(set(got) == set(want), f"{what}: same tensor names", f"{sorted(set(got) ^ set(want))[:4]}")
    bad, far, total, ok_meta, worst = 0, 0, 0, True, ""
    for n, w in want.items():
        g = got.get(n)
        if g is None:
            continue
        ok_meta &= g.dtype == w.dtype and g.shape == w.shape
        if g.shape != w.shape:
            continue
        total += w.numel()
        if not torch.equal(g, w):
            bad += int((g != w).sum())
            worst = n
        # against the two-rounding form: at most one unit in the last place, or (where the terms
        # cancel to ~0) the fp64 rounding error of the terms
        l = loose[n]
        up = torch.nextafter(l, torch.full_like(l, float("inf"))).double()
        down = torch.nextafter(l, torch.full_like(l, float("-inf"))).double()
        tol = torch.maximum(torch.maximum(up - l.double(), l.double() - down), scale[n] * 2.0 ** -50)
        far += int(((g.double() - l.double()).abs() > tol).sum())
    check(ok_meta, f"{what}: dtypes and shapes are the reference's")
    check(bad == 0, f"{what}: every tensor equals the float64 torch oracle bit for bit",
          f"{bad} of {total} elements differ (last: {worst})")
    check(far == 0, f"{what}: within one ulp of the unfused float64 sum (or its fp64 error where terms cancel)",
          f"{far} elements further")


def expect_error(what, args, needle):
    rc, out, err = run(args)
    lines = [l for l in err.strip().splitlines() if l.startswith("prism-train: error:")]
    ok = rc == 1 and len(lines) == 1 and needle in lines[0]
    check(ok, what, (lines[0] if lines else err.strip()[-300:]) if not ok else lines[0][:160])


def max_rss_mb(args):
    """Peak RSS of one prism-train run, measured in a fresh child so earlier runs do not count."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", code, PRISM] + args, capture_output=True, text=True, timeout=600)
    rc, kb = p.stdout.split()
    return int(rc), int(kb) / 1024.0


def main():
    root = tempfile.mkdtemp(prefix="prism-merge-oracle-")
    try:
        tok = os.path.join(SRC, "configs/tiny/llama-tiny/tokenizer.json")
        # 1. --base/--into, bf16, both sharded: the output keeps the reference's (--into) layout.
        base = save(make_model("llama", 1), os.path.join(root, "base"), torch.bfloat16, "20KB")
        mid = save(make_model("llama", 2), os.path.join(root, "mid"), torch.bfloat16, "12KB")
        shutil.copy(tok, os.path.join(mid, "tokenizer.json"))
        with open(os.path.join(mid, "chat_template.jinja"), "w") as f:
            f.write("{{ messages }}")
        out = os.path.join(root, "merged")
        rc, so, se = run(["merge", "--base", base, "--into", mid, "--weights", "0.15,0.85", "-o", out, "-q"])
        check(rc == 0, "merge --base --into (bf16, sharded) runs", se.strip()[-300:])
        compare("bf16 sharded 15/85", out, [mid, base], [0.85, 0.15])
        check(layout(out) == layout(mid), "output keeps the reference's shard layout",
              f"{len(set(layout(out).values()))} vs {len(set(layout(mid).values()))} files")
        check(len(set(layout(mid).values())) > 1, "the reference is really sharded")
        for f in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
            same = os.path.exists(os.path.join(out, f)) and \
                open(os.path.join(out, f), "rb").read() == open(os.path.join(mid, f), "rb").read()
            check(same, f"{f} copied from the reference unchanged")
        check(not any(".tmp." in n for n in os.listdir(root)), "no temporary directory left behind")
        import transformers
        m = transformers.AutoModelForCausalLM.from_pretrained(out)
        ids = torch.tensor([[1, 5, 9, 17, 33]])
        check(torch.isfinite(m(ids).logits).all().item(), "transformers loads the merged checkpoint and runs it")

        # 2. Three fp32 Nemotron-H checkpoints (Mamba2 tensors), positional, re-sharded by size.
        ns = [save(make_model("nemotron_h", 10 + i), os.path.join(root, f"nh{i}"), torch.float32) for i in range(3)]
        out2 = os.path.join(root, "merged-nh")
        rc, so, se = run(["merge", *ns, "--weights", "0.5,0.3,0.2", "--shard-size", "30KB", "-o", out2, "-q"])
        check(rc == 0, "merge of three fp32 Nemotron-H checkpoints runs", se.strip()[-300:])
        compare("fp32 three-way", out2, ns, [0.5, 0.3, 0.2])
        shards = set(layout(out2).values())
        sizes = [os.path.getsize(os.path.join(out2, s)) for s in shards]
        check(len(shards) > 1 and all(s < 30_000 + 20_000 for s in sizes),
              "--shard-size re-shards greedily", f"{len(shards)} shards, sizes {sorted(sizes)}")

        # 3. Mixed dtypes: an fp32 reference and a bf16 partner give fp32.
        b16 = save(make_model("llama", 3), os.path.join(root, "b16"), torch.bfloat16)
        f32 = save(make_model("llama", 4), os.path.join(root, "f32"), torch.float32, "15KB")
        out3 = os.path.join(root, "merged-mixed")
        rc, so, se = run(["merge", f32, b16, "--weights", "0.7,0.3", "-o", out3, "-q"])
        check(rc == 0, "merge fp32 reference + bf16 runs", se.strip()[-300:])
        compare("mixed dtypes", out3, [f32, b16], [0.7, 0.3])

        # 4. The recipe as a config (the form configs/longctx/ uses) gives the same bytes as the CLI.
        cfg = os.path.join(root, "merge.yaml")
        with open(cfg, "w") as f:
            f.write(f"checkpoints:\n  - {{path: {mid}, weight: 0.85}}\n  - {{path: {base}, weight: 0.15}}\n"
                    f"output: {os.path.join(root, 'unused')}\n")
        out4 = os.path.join(root, "merged-config")
        rc, so, se = run(["merge", "--config", cfg, "--set", f"output={out4}", "-q"])
        check(rc == 0, "merge --config runs", se.strip()[-300:])
        same = all(open(os.path.join(out4, f), "rb").read() == open(os.path.join(out, f), "rb").read()
                   for f in set(layout(out).values()))
        check(same, "--config output is byte-identical to --base/--into")
        rc, so, se = run(["merge", "--config", os.path.join(SRC, "configs/longctx/merge-granite-3.3-8b.yaml"),
                          "--print-config"])
        check(rc == 0 and "0.85" in so and "0.15" in so, "the study's recipe config parses", se.strip()[-200:])

        # 5. Errors: one line naming what differs; nothing written.
        other = save(make_model("llama", 5, intermediate_size=40), os.path.join(root, "other"), torch.bfloat16)
        expect_error("shape mismatch names the tensor", ["merge", mid, other, "-w", "0.5,0.5", "-o",
                                                          os.path.join(root, "x1")], "mlp.gate_proj.weight")
        expect_error("another architecture names model_type", ["merge", mid, ns[0], "-w", "0.5,0.5", "-o",
                                                                os.path.join(root, "x2")], "model_type")
        missing = os.path.join(root, "missing")
        shutil.copytree(b16, missing)
        t = read_tensors(missing)
        del t["model.layers.1.self_attn.k_proj.bias"]
        save_file(t, os.path.join(missing, "model.safetensors"), metadata={"format": "pt"})
        expect_error("a missing tensor is named", ["merge", b16, missing, "-w", "0.5,0.5", "-o",
                                                    os.path.join(root, "x3")], "model.layers.1.self_attn.k_proj.bias")
        extra = os.path.join(root, "extra")
        shutil.copytree(b16, extra)
        t = read_tensors(extra)
        t["model.layers.9.stray.weight"] = torch.zeros(3, dtype=torch.bfloat16)
        save_file(t, os.path.join(extra, "model.safetensors"), metadata={"format": "pt"})
        expect_error("an extra tensor is named", ["merge", b16, extra, "-w", "0.5,0.5", "-o",
                                                   os.path.join(root, "x4")], "model.layers.9.stray.weight")
        expect_error("weight count is checked", ["merge", b16, f32, "-w", "1", "-o", os.path.join(root, "x5")],
                     "--weights")
        expect_error("an existing output is refused", ["merge", b16, f32, "-w", "0.5,0.5", "-o", out], "output")
        check(not any(n.startswith("x") for n in os.listdir(root)), "failed merges leave no output directory")

        # 6. Streaming: peak RSS above a tiny merge's stays near the largest tensor, far below the
        # checkpoints' size (a merge that loads them would need >= 2 x 128 MB more).
        big = dict(vocab_size=256, hidden_size=1024, intermediate_size=4096, layers=4, tie=True)
        b1 = save(make_model("llama", 20, **big), os.path.join(root, "big1"), torch.bfloat16)
        b2 = save(make_model("llama", 21, **big), os.path.join(root, "big2"), torch.bfloat16)
        rc0, tiny_mb = max_rss_mb(["merge", b16, f32, "-w", "0.5,0.5", "-o", os.path.join(root, "tiny-rss"), "-q"])
        rc1, big_mb = max_rss_mb(["merge", b1, b2, "-w", "0.15,0.85", "-o", os.path.join(root, "big-out"), "-q"])
        ck_mb = sum(os.path.getsize(os.path.join(b1, f)) for f in set(layout(b1).values())) / 2**20
        largest_mb = 4096 * 1024 * 2 / 2**20
        delta = big_mb - tiny_mb
        # output tensor + the two inputs' pages of it + the 32 MB fp64 accumulator, with 32 MB slack
        bound = 3 * largest_mb + 32 + 32
        check(rc0 == 0 and rc1 == 0 and delta < bound,
              "streamed merge: peak RSS grows by about (inputs + 1) x the largest tensor",
              f"{delta:.0f} MB above a tiny merge ({tiny_mb:.0f} MB) for two {ck_mb:.0f} MB checkpoints, "
              f"largest tensor {largest_mb:.0f} MB, bound {bound:.0f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
