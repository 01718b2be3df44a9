#!/usr/bin/env python3
"""`prism-train analyze` against independent torch / numpy computations (CTest `py_analysis_oracle`).

Environment: PRISM_BIN (directory of prism-train), PRISM_SOURCE (the source tree).

1. weights: random tiny Nemotron-H (attention + relu2 MLP + Mamba2) and Llama (biases) checkpoints
   made with transformers; the base in fp32 or bf16, the trained ones perturbed element-wise (a third
   of the elements unchanged, some base zeros, relative changes spread over 1e-4..1) and saved in
   bf16 / fp32, sharded. The oracle reads the safetensors files with safetensors.torch in float64,
   classifies tensors by their names (its own rules), and recomputes per tensor / component /
   sub-component: normalised L2 (pooled and matrix-averaged), changed fractions at every threshold
   (exact counts), delta cosines and the parameter-weighted cosine average.
2. trajectory: a fake run directory (checkpoints/step-*/model with COMPLETE markers, one incomplete
   step and a temp directory that must be skipped) against the oracle's per-step values.
3. cka: configs/tiny/llama-tiny against a perturbed copy, inputs at batch 1; the oracle runs
   transformers (fp32, eager) with output_hidden_states, mean-pools in float64 and computes linear
   CKA with centring in numpy from the feature matrices (not from Gram matrices); per-layer values,
   the bootstrap mean / std over the resample index sets the report lists, the minimum and its std.
   CKA(A, A) = 1 on every layer; models with different depths are refused.
4. landscape: a base (the bundled tiny Llama, saved bf16), a perturbed "mid" (fp32, sharded) and a
   perturbed "rl" (bf16). `analyze combine` at a few (alpha, beta) against the torch float64
   combination (1 - a) W_base + (a - b) W_mid + b W_rl cast to fp32; `analyze landscape` on a small
   two-domain suite: the corners (0, 0), (1, 0), (1, 1) reproduce `prism-train eval` of the base,
   mid and rl checkpoints exactly (every completion and score), the grids in landscape.json are the
   per-point reports' scores, the heat maps are valid PNG / SVG holding the grid values, and bad
   grid specs fail with one line naming the option.
5. plots: every PNG starts with the PNG signature, every SVG parses as XML and contains the
   labels and a few of the numbers of the report; without gnuplot on PATH the tool fails with a
   clear message.
Prints one line per check and ends with `N passed, M failed`.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
import torch
from safetensors import safe_open

from oracle_common import BIN, PRISM, SRC, check, finish  # noqa: E402  (sibling module)
THRESHOLDS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1]
TLABELS = ["0.1%", "0.5%", "1%", "2%", "5%", "10%"]


def run(args, env=None, timeout=600):
    p = subprocess.run([PRISM] + args, capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def close(a, b, rel=1e-9, abs_=1e-12):
    if a is None or b is None:
        return a is None and (b is None or (isinstance(b, float) and math.isnan(b)))
    if isinstance(b, float) and math.isnan(b):
        return a is None
    return abs(a - b) <= abs_ + rel * abs(b)


# ------------------------------------------------------------------------------------------------
# checkpoints

def make_model(kind, seed):
    import transformers
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    if kind == "nemotron_h":
        cfg = transformers.NemotronHConfig(
            vocab_size=96, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            intermediate_size=48, hybrid_override_pattern="M-*-", mamba_num_heads=4, mamba_head_dim=8,
            n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=8, use_conv_bias=True, use_bias=False,
            layer_norm_epsilon=1e-5, max_position_embeddings=128, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = transformers.NemotronHForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(
            vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=True,
            attention_bias=True, mlp_bias=True, bos_token_id=1, eos_token_id=2, pad_token_id=None)
        model = transformers.LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + 0.01)
            # base zeros: about 3% of every tensor
            p.masked_fill_(torch.rand(p.shape, generator=g) < 0.03, 0.0)
    return model


def perturb(model, seed, shared=None, mix=0.0):
    """Element-wise w' = w (1 + r) (+ a shift where w = 0); r spans 1e-4..1 in magnitude, a third 0.
    With `shared` (the relative changes of another run), r = mix * shared + (1 - mix) * fresh."""
    g = torch.Generator().manual_seed(seed)
    rel = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            mag = 10.0 ** (torch.rand(p.shape, generator=g) * 4 - 4)
            sign = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0)
            r = mag * sign * (torch.rand(p.shape, generator=g) > 0.33)
            if shared is not None:
                r = mix * shared[n] + (1 - mix) * r
            rel[n] = r
            zero_shift = (p == 0) & (torch.rand(p.shape, generator=g) < 0.5)
            p.mul_(1 + r)
            p.add_(zero_shift * 0.01)
    return rel


def save(model, path, dtype, shard):
    m = model.to(dtype)
    m.config.dtype = str(dtype).replace("torch.", "")
    m.save_pretrained(path, max_shard_size=shard)
    model.to(torch.float32)


def read_tensors(path):
    idx = os.path.join(path, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for f in files:
        with safe_open(os.path.join(path, f), "pt") as fh:
            for k in fh.keys():
                out[k] = fh.get_tensor(k).to(torch.float64)
    return out


# ------------------------------------------------------------------------------------------------
# oracle classification (by name, independent of prism's parameter layout)

def classify(name):
    parts = name.split(".")
    last = parts[-1] if parts[-1] not in ("weight", "bias") else parts[-2]
    if "embed" in name or "embeddings" in name:
        return "embeddings/head", "embed"
    if name.startswith("lm_head"):
        return "embeddings/head", "lm_head"
    table = {"q_proj": ("attention", "q"), "k_proj": ("attention", "k"), "v_proj": ("attention", "v"),
             "o_proj": ("attention", "o"), "gate_proj": ("mlp", "gate"), "up_proj": ("mlp", "up"),
             "down_proj": ("mlp", "down"), "in_proj": ("mamba2", "in_proj"), "out_proj": ("mamba2", "out_proj"),
             "conv1d": ("mamba2", "conv1d"), "A_log": ("mamba2", "A/dt"), "dt_bias": ("mamba2", "A/dt"),
             "D": ("mamba2", "D")}
    if last in table:
        return table[last]
    if "mixer.norm" in name:
        return "mamba2", "gated_norm"
    if "norm" in name:
        return "norms", "norm"
    raise ValueError(name)


def oracle_weights(base, news, pairs):
    B = read_tensors(base)
    Ns = [read_tensors(n) for n in news]
    per = {}
    for name, w in B.items():
        if "rotary" in name:
            continue
        e = {"numel": w.numel(), "zeros": int((w == 0).sum()), "w2": float((w * w).sum()), "d2": [], "changed": [], "dots": []}
        ds = []
        for N in Ns:
            d = N[name] - w
            ds.append(d)
            e["d2"].append(float((d * d).sum()))
            e["changed"].append([int((d.abs() > t * w.abs()).sum()) for t in THRESHOLDS])
        for a, b in pairs:
            e["dots"].append(float((ds[a] * ds[b]).sum()))
        e["group"] = classify(name)
        per[name] = e
    return per


def aggregate(members, K, P, pairs):
    g = {"tensors": len(members), "numel": sum(m["numel"] for m in members), "zeros": sum(m["zeros"] for m in members)}
    w2 = sum(m["w2"] for m in members)
    g["l2"], g["l2_mavg"], g["changed"], g["changed_mavg"] = [], [], [], []
    for k in range(K):
        d2 = sum(m["d2"][k] for m in members)
        g["l2"].append(math.sqrt(d2 / w2) if w2 > 0 else float("nan"))
        normed = [math.sqrt(m["d2"][k] / m["w2"]) for m in members if m["w2"] > 0]
        g["l2_mavg"].append(sum(normed) / len(normed) if normed else float("nan"))
        g["changed"].append([sum(m["changed"][k][t] for m in members) / g["numel"] for t in range(len(THRESHOLDS))])
        g["changed_mavg"].append([sum(m["changed"][k][t] / m["numel"] for m in members) / len(members)
                                  for t in range(len(THRESHOLDS))])
    g["cosine"] = []
    for q, (a, b) in enumerate(pairs):
        dot = sum(m["dots"][q] for m in members)
        da, db = sum(m["d2"][a] for m in members), sum(m["d2"][b] for m in members)
        g["cosine"].append(dot / math.sqrt(da * db) if da > 0 and db > 0 else float("nan"))
    return g


def compare_group(tag, got, exp, K, pairs):
    ok = got["numel"] == exp["numel"] and got["tensors"] == exp["tensors"] and got["zeros_in_base"] == exp["zeros"]
    bad = []
    for k in range(K):
        d = got["deltas"][k]
        if not close(d["l2"], exp["l2"][k]):
            bad.append(f"l2[{k}] {d['l2']} vs {exp['l2'][k]}")
        if not close(d["l2_matrix_avg"], exp["l2_mavg"][k]):
            bad.append(f"l2_mavg[{k}] {d['l2_matrix_avg']} vs {exp['l2_mavg'][k]}")
        for t, lab in enumerate(TLABELS):
            if not close(d["changed"][lab], exp["changed"][k][t], 1e-12):
                bad.append(f"changed[{k}][{lab}] {d['changed'][lab]} vs {exp['changed'][k][t]}")
            if not close(d["changed_matrix_avg"][lab], exp["changed_mavg"][k][t], 1e-12):
                bad.append(f"changed_mavg[{k}][{lab}]")
    for q in range(len(pairs)):
        if not close(got["cosine"][q], exp["cosine"][q], 1e-9):
            bad.append(f"cosine[{q}] {got['cosine'][q]} vs {exp['cosine'][q]}")
    return check(ok and not bad, f"{tag}", "; ".join(bad[:4]) if bad else f"{exp['numel']} params")


def check_png_svg(out, stem, must_contain):
    png, svg = os.path.join(out, stem + ".png"), os.path.join(out, stem + ".svg")
    check(os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"{stem}.png is a PNG")
    try:
        root = ET.parse(svg).getroot()
        texts = " ".join(t for t in root.itertext())
        check(root.tag.endswith("svg"), f"{stem}.svg parses as SVG XML")
    except Exception as e:  # noqa: BLE001
        check(False, f"{stem}.svg parses as XML", str(e))
        return
    missing = [s for s in must_contain if s not in texts]
    check(not missing, f"{stem}.svg shows the data", f"missing {missing[:5]}" if missing else f"{len(must_contain)} strings found")


def weights_case(tmp, kind, base_dtype, new_dtype, other_dtype):
    tag = f"{kind} base {str(base_dtype)[6:]} new {str(new_dtype)[6:]} vs {str(other_dtype)[6:]}"
    d = os.path.join(tmp, f"w-{kind}-{str(base_dtype)[6:]}")
    model = make_model(kind, 11)
    base = os.path.join(d, "base")
    save(model, base, base_dtype, "1MB")
    model_new = make_model(kind, 11)
    shared = perturb(model_new, 21)
    new = os.path.join(d, "new")
    save(model_new, new, new_dtype, "20KB")
    model_other = make_model(kind, 11)
    perturb(model_other, 31, shared=shared, mix=0.6)
    other = os.path.join(d, "other")
    save(model_other, other, other_dtype, "30KB")
    check(os.path.exists(os.path.join(new, "model.safetensors.index.json")), f"{tag}: new checkpoint is sharded")
    out = os.path.join(d, "report")
    rc, so, se = run(["analyze", "weights", base, new, "--vs", other, "-o", out, "--threads", "2"])
    if not check(rc == 0, f"{tag}: analyze weights exits 0", se.strip()[-400:]):
        return
    rep = json.load(open(os.path.join(out, "weights.json")))
    pairs = [(0, 1)]
    per = oracle_weights(base, [new, other], pairs)
    got_t = {t["stored_name"]: t for t in rep["tensors"]}
    check(set(got_t) == set(k for k in per), f"{tag}: every parameter tensor reported",
          f"{sorted(set(per) ^ set(got_t))[:4]}")
    bad = []
    for name, e in per.items():
        t = got_t.get(name)
        if t is None:
            continue
        if (t["component"], t["subcomponent"]) != e["group"]:
            bad.append(f"{name}: group {(t['component'], t['subcomponent'])} vs {e['group']}")
        if t["zeros_in_base"] != e["zeros"]:
            bad.append(f"{name}: zeros")
        for k in range(2):
            if t["deltas"][k]["changed_count"] != e["changed"][k]:
                bad.append(f"{name}[{k}]: counts {t['deltas'][k]['changed_count']} vs {e['changed'][k]}")
            exp_l2 = math.sqrt(e["d2"][k] / e["w2"]) if e["w2"] > 0 else None
            if not close(t["deltas"][k]["l2"], exp_l2):
                bad.append(f"{name}[{k}]: l2 {t['deltas'][k]['l2']} vs {exp_l2}")
        exp_cos = e["dots"][0] / math.sqrt(e["d2"][0] * e["d2"][1]) if e["d2"][0] > 0 and e["d2"][1] > 0 else None
        if not close(t["cosine"][0], exp_cos):
            bad.append(f"{name}: cosine {t['cosine'][0]} vs {exp_cos}")
    check(not bad, f"{tag}: per-tensor L2, exact changed counts, zeros, cosine, grouping", "; ".join(bad[:3]))
    zero_changed = sum(e["zeros"] for e in per.values())
    check(zero_changed > 0, f"{tag}: the base has zeros (w = 0 rule exercised)", str(zero_changed))

    comps, subs = {}, {}
    for e in per.values():
        comps.setdefault(e["group"][0], []).append(e)
        subs.setdefault(e["group"], []).append(e)
    got_c = {c["component"]: c for c in rep["components"]}
    got_s = {(c["component"], c["subcomponent"]): c for c in rep["subcomponents"]}
    check(set(got_c) == set(comps), f"{tag}: components", f"{sorted(got_c)} vs {sorted(comps)}")
    check(set(got_s) == set(subs), f"{tag}: sub-components", f"{sorted(got_s)}")
    for c, members in comps.items():
        if c in got_c:
            compare_group(f"{tag}: component {c}", got_c[c], aggregate(members, 2, 1, pairs), 2, pairs)
    bad_sub = []
    for s, members in subs.items():
        if s in got_s:
            exp = aggregate(members, 2, 1, pairs)
            g = got_s[s]
            for k in range(2):
                if not close(g["deltas"][k]["l2"], exp["l2"][k]) or not close(g["deltas"][k]["changed"]["1%"], exp["changed"][k][2], 1e-12):
                    bad_sub.append(str(s))
    check(not bad_sub, f"{tag}: sub-component L2 and changed at 1%", ", ".join(bad_sub[:4]))
    allm = list(per.values())
    compare_group(f"{tag}: total", rep["total"], aggregate(allm, 2, 1, pairs), 2, pairs)
    num = sum(aggregate(m, 2, 1, pairs)["numel"] * aggregate(m, 2, 1, pairs)["cosine"][0] for m in comps.values())
    den = sum(aggregate(m, 2, 1, pairs)["numel"] for m in comps.values())
    check(close(rep["cosine"][0]["weighted_avg"], num / den, 1e-9), f"{tag}: parameter-weighted cosine average",
          f"{rep['cosine'][0]['weighted_avg']} vs {num / den}")
    # plots: sub-component labels and the 1% values as the chart prints them
    labels = [s for (_, s) in got_s]
    vals = ["%.2f" % (100 * got_s[k]["deltas"][0]["changed"]["1%"]) for k in list(got_s)[:3]]
    check_png_svg(out, "changed_by_subcomponent", labels + vals + ["new", "other"])
    check_png_svg(out, "delta_cosine", ["%.3f" % rep["cosine"][0]["weighted_avg"], "weighted avg"])
    md = open(os.path.join(out, "weights.md")).read()
    check("| attention |" in md and "weighted avg" in md, f"{tag}: weights.md has the component and cosine tables")
    return base, model


def trajectory_case(tmp):
    d = os.path.join(tmp, "traj")
    model = make_model("nemotron_h", 5)
    start = os.path.join(d, "start")
    save(model, start, torch.float32, "1MB")
    run_dir = os.path.join(d, "run")
    steps = [10, 20, 30]
    paths = []
    cur = make_model("nemotron_h", 5)
    for i, s in enumerate(steps):
        perturb(cur, 100 + i)
        ck = os.path.join(run_dir, "checkpoints", f"step-{s:08d}")
        save(cur, os.path.join(ck, "model"), torch.bfloat16, "40KB")
        open(os.path.join(ck, "COMPLETE"), "w").write(json.dumps({"step": s}))
        paths.append(os.path.join(ck, "model"))
    # an incomplete checkpoint and a writer's temp directory: never read
    os.makedirs(os.path.join(run_dir, "checkpoints", "step-00000040", "model"))
    os.makedirs(os.path.join(run_dir, "checkpoints", "step-00000050.tmp-999999"))
    out = os.path.join(d, "report")
    rc, so, se = run(["analyze", "trajectory", start, run_dir, "-o", out])
    if not check(rc == 0, "trajectory: exits 0", se.strip()[-400:]):
        return
    rep = json.load(open(os.path.join(out, "trajectory.json")))
    check([p["step"] for p in rep["checkpoints"]] == steps, "trajectory: complete checkpoints in step order",
          str([p["step"] for p in rep["checkpoints"]]))
    bad = []
    for k, (s, p) in enumerate(zip(steps, paths)):
        per = oracle_weights(start, [p], [])
        groups = {}
        for e in per.values():
            groups.setdefault(e["group"][0], []).append(e)
        groups["all"] = list(per.values())
        for gname, members in groups.items():
            exp = aggregate(members, 1, 0, [])
            got = rep["checkpoints"][k]["groups"].get(gname)
            if got is None or not close(got["l2"], exp["l2"][0]) or not close(got["within"]["1%"], 1 - exp["changed"][0][2], 1e-12):
                bad.append(f"step {s} {gname}")
    check(not bad, "trajectory: per-step normalised L2 and share within 1% match the oracle", ", ".join(bad[:4]))
    l2s = [p["groups"]["all"]["l2"] for p in rep["checkpoints"]]
    check(l2s[0] < l2s[1] < l2s[2], "trajectory: cumulative L2 grows with the steps", str(l2s))
    check_png_svg(out, "trajectory", ["attention", "mamba2", "all", "Share of parameters within 1%"])


def hidden_means(path, texts, tok):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    feats = []
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok.encode(t).ids])
            hs = m(ids, output_hidden_states=True).hidden_states
            feats.append([h[0].to(torch.float64).mean(0).numpy() for h in hs])
    return np.array(feats).transpose(1, 0, 2)  # [L + 1, n, D]


def np_cka(x, y):
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def cka_case(tmp):
    from tokenizers import Tokenizer
    import transformers
    d = os.path.join(tmp, "cka")
    a = os.path.join(SRC, "configs", "tiny", "llama-tiny")
    b = os.path.join(d, "b")
    m = transformers.AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p in m.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3 * p.abs().mean())
    m.save_pretrained(b)
    shutil.copy(os.path.join(a, "tokenizer.json"), b)
    words = "the a of model weights change training layer token step loss mid rl base cka math proof".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 14)))) for _ in range(24)]
    inputs = os.path.join(d, "inputs.jsonl")
    with open(inputs, "w") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": i, "prompt": t}) + "\n")
    out = os.path.join(d, "report")
    rc, so, se = run(["analyze", "cka", a, b, "--inputs", inputs, "--field", "prompt", "--num-inputs", "20",
                      "--subset", "12", "--resamples", "5", "--seed", "7", "-o", out])
    if not check(rc == 0, "cka: exits 0", se.strip()[-400:]):
        return
    rep = json.load(open(os.path.join(out, "cka.json")))
    tok = Tokenizer.from_file(os.path.join(a, "tokenizer.json"))
    fa, fb = hidden_means(a, texts[:20], tok), hidden_means(b, texts[:20], tok)
    L = fa.shape[0]
    check(len(rep["layers"]) == L == 3, "cka: one value per layer including the embeddings", str(len(rep["layers"])))
    full = [np_cka(fa[l], fb[l]) for l in range(L)]
    got = [x["full"] for x in rep["layers"]]
    check(max(abs(x - y) for x, y in zip(got, full)) < 2e-5, "cka: per-layer CKA over all inputs matches numpy",
          f"{got} vs {full}")
    subsets = rep["subsets"]
    check(len(subsets) == 5 and all(len(s) == 12 and len(set(s)) == 12 and max(s) < 20 for s in subsets),
          "cka: 5 resamples of 12 distinct inputs out of 20")
    boots = np.array([[np_cka(fa[l][s], fb[l][s]) for l in range(L)] for s in subsets])
    mean, std = boots.mean(0), boots.std(0, ddof=1)
    gm = np.array([x["mean"] for x in rep["layers"]])
    gs = np.array([x["std"] for x in rep["layers"]])
    check(np.abs(gm - mean).max() < 2e-5 and np.abs(gs - std).max() < 2e-5, "cka: bootstrap mean and std per layer",
          f"{gm} vs {mean}")
    check(rep["minimum"]["layer"] == int(mean.argmin()) and abs(rep["minimum"]["std"] - boots.min(1).std(ddof=1)) < 2e-5,
          "cka: minimum layer and the std of the per-resample minimum")
    check(min(full) < 0.999, "cka: the perturbed model is not trivially identical", str(min(full)))
    check_png_svg(out, "cka_per_layer", ["min %.6f at layer %d" % (rep["minimum"]["value"], rep["minimum"]["layer"]),
                                          "all inputs"])
    out2 = os.path.join(d, "self")
    rc, so, se = run(["analyze", "cka", a, a, "--inputs", inputs, "--field", "prompt", "--num-inputs", "20",
                      "--subset", "10", "--resamples", "3", "-o", out2])
    ok = rc == 0 and all(abs(x["full"] - 1) < 1e-9 and abs(x["mean"] - 1) < 1e-9
                         for x in json.load(open(os.path.join(out2, "cka.json")))["layers"])
    check(ok, "cka: CKA(A, A) = 1 on every layer", se.strip()[-300:])
    c = os.path.join(d, "deeper")
    cfg = json.load(open(os.path.join(a, "config.json")))
    cfg["num_hidden_layers"] = 3
    deeper = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "dtype", "transformers_version")}))
    deeper.save_pretrained(c)
    shutil.copy(os.path.join(a, "tokenizer.json"), c)
    rc, so, se = run(["analyze", "cka", a, c, "--inputs", inputs, "--field", "prompt", "--num-inputs", "20",
                      "--subset", "10", "-o", os.path.join(d, "bad")])
    check(rc == 1 and "different numbers of layers" in se and se.count("\n") <= 2,
          "cka: models of different depth are refused with one line", se.strip())
    rc, so, se = run(["analyze", "cka", a, b, "--inputs", inputs, "--field", "text", "-o", os.path.join(d, "bad2")])
    check(rc == 1 and "line 1" in se and "'text'" in se, "cka: a missing JSONL field names the line and field", se.strip())


def landscape_case(tmp):
    import transformers
    transformers.logging.set_verbosity_error()
    d = os.path.join(tmp, "landscape")
    a = os.path.join(SRC, "configs", "tiny", "llama-tiny")
    base, mid, rl = (os.path.join(d, n) for n in ("base", "mid", "rl"))
    m = transformers.AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32)
    g = torch.Generator().manual_seed(11)

    def shift(scale):
        with torch.no_grad():
            for _, p in m.named_parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale * p.abs().mean())

    save(m, base, torch.bfloat16, "5GB")
    shift(0.3)
    save(m, mid, torch.float32, "40KB")
    shift(0.3)
    save(m, rl, torch.bfloat16, "5GB")
    for x in (base, mid, rl):
        shutil.copy(os.path.join(a, "tokenizer.json"), x)
    check(len([f for f in os.listdir(mid) if f.endswith(".safetensors")]) > 1, "landscape: the mid checkpoint is sharded")

    B, M, R = read_tensors(base), read_tensors(mid), read_tensors(rl)
    for al, be in [(0.5, -0.5), (1.5, 0.5), (-0.25, 1.0)]:
        out = os.path.join(d, f"combine_{al}_{be}")
        rc, so, se = run(["analyze", "combine", base, mid, rl, "--alpha", str(al), "--beta", str(be), "-o", out])
        if not check(rc == 0, f"combine ({al}, {be}): exits 0", se.strip()[-300:]):
            continue
        got = read_tensors(out)
        worst, missing = 0.0, []
        for name, w in B.items():
            if name not in got:
                missing.append(name)
                continue
            want = ((1 - al) * w + (al - be) * M[name] + be * R[name]).to(torch.float32).to(torch.float64)
            ulp = torch.finfo(torch.float32).eps * want.abs().clamp_min(torch.finfo(torch.float32).tiny)
            worst = max(worst, float(((got[name] - want).abs() / ulp).max()))
        check(not missing and worst <= 1.0, f"combine ({al}, {be}) equals the torch float64 combination in fp32",
              f"max {worst:.2f} ulp, missing {missing[:3]}")
        check(os.path.exists(os.path.join(out, "tokenizer.json")), f"combine ({al}, {be}): the tokenizer comes along")

    # A two-domain suite: the toy sums (math, last-number fallback) and four multiple-choice items.
    mc = os.path.join(d, "mc.jsonl")
    with open(mc, "w") as fh:
        for i, (q, ch, ans) in enumerate([("2 + 2 =", ["4", "5", "6"], "A"), ("3 + 3 =", ["5", "6", "7"], "B"),
                                          ("1 + 1 =", ["3", "4", "2"], "C"), ("0 + 7 =", ["7", "0", "1"], "A")]):
            prompt = q + "\n\n" + "\n".join(f"{chr(65 + k)}. {c}" for k, c in enumerate(ch))
            fh.write(json.dumps({"id": f"mc-{i}", "domain": "mc", "prompt": prompt, "question": q, "choices": ch,
                                 "answer": ans}) + "\n")
    suite = os.path.join(d, "suite.yaml")
    with open(suite, "w") as fh:
        fh.write("benchmarks:\n"
                 f"  - {{name: sevens, path: {os.path.join(SRC, 'configs/rl/data/toy-sevens.jsonl')}, n: 4, "
                 "temperature: 1.0, max_new_tokens: 6, ks: [1, 4], limit: 8}\n"
                 f"  - {{name: choices, path: {mc}, n: 4, temperature: 1.0, max_new_tokens: 4, ks: [1]}}\n"
                 "rewards:\n  math: {last_number_fallback: true, workers: 1}\n"
                 "  domains:\n    - {domain: math, verifier: math}\n    - {domain: mc, verifier: mc}\n"
                 "slots: 16\nseed: 3\n")
    out = os.path.join(d, "report")
    rc, so, se = run(["analyze", "landscape", base, mid, rl, "--suite", suite, "--alpha", "0,1", "--beta", "0:1:3",
                      "--threads", "1", "-o", out, "-q"])
    if not check(rc == 0, "landscape: exits 0", se.strip()[-400:]):
        return
    rep = json.load(open(os.path.join(out, "landscape.json")))
    check(rep["alphas"] == [0, 1] and rep["betas"] == [0, 0.5, 1] and len(rep["points"]) == 6,
          "landscape: the 2 x 3 grid", f"{rep['alphas']} {rep['betas']}")
    pts = {(p["alpha"], p["beta"]): p for p in rep["points"]}
    c = pts[(0, 0.5)]["coefficients"]
    check(c == {"base": 1, "mid": -0.5, "rl": 0.5}, "landscape: coefficients of (0, 0.5) are (1, -0.5, 0.5)", str(c))
    ok = True
    for i, al in enumerate(rep["alphas"]):
        for j, be in enumerate(rep["betas"]):
            r = json.load(open(os.path.join(pts[(al, be)]["report"], "report.json")))
            ok &= rep["macro_avg"][i][j] == r["macro_avg"] == pts[(al, be)]["macro_avg"]
            ok &= all(rep["domain_avg"][dm][i][j] == r["domain_avg"][dm] for dm in ("math", "mc"))
    check(ok, "landscape: the macro and domain grids are the per-point reports' scores")

    def samples(path):
        return [(x["benchmark"], x["id"], x["sample"], x["completion"], x["correct"])
                for x in map(json.loads, open(os.path.join(path, "samples.jsonl")))]

    corner_samples = {}
    for name, ckpt, ab in (("base", base, (0, 0)), ("mid", mid, (1, 0)), ("rl", rl, (1, 1))):
        ev = os.path.join(d, "eval_" + name)
        rc, so, se = run(["eval", ckpt, "--suite", suite, "--threads", "1", "-o", ev])
        if not check(rc == 0, f"eval {name}: exits 0", se.strip()[-300:]):
            continue
        want = json.load(open(os.path.join(ev, "report.json")))
        got_dir = pts[ab]["report"]
        got = json.load(open(os.path.join(got_dir, "report.json")))
        corner_samples[name] = samples(ev)
        check(samples(got_dir) == samples(ev) and got["benchmarks"] == want["benchmarks"]
              and got["macro_avg"] == want["macro_avg"],
              f"landscape: {ab} reproduces prism-train eval of {name} exactly", f"macro {got['macro_avg']} vs {want['macro_avg']}")
    if len(corner_samples) == 3:
        check(corner_samples["base"] != corner_samples["mid"] != corner_samples["rl"],
              "landscape: the three checkpoints generate differently (the corner checks are not vacuous)")
    macro_labels = ["%.3f" % v for row in rep["macro_avg"] for v in row]
    check_png_svg(out, "landscape_macro", macro_labels + ["Base", "MT", "RL"])
    check_png_svg(out, "landscape_mc", ["%.3f" % v for row in rep["domain_avg"]["mc"] for v in row])
    check_png_svg(out, "landscape_math", ["%.3f" % v for row in rep["domain_avg"]["math"] for v in row])
    md = open(os.path.join(out, "landscape.md")).read()
    check("| **1** |" in md and ("%.4f" % rep["macro_avg"][1][2]) in md, "landscape: the Markdown grid")
    for flag, spec, needle in (("--alpha", "0:1", "0:1"), ("--beta", "0,x", "'x'"), ("--alpha", "0,0", "distinct"),
                               ("--beta", "1:0:1", "count")):
        rc, so, se = run(["analyze", "landscape", base, mid, rl, "--suite", suite, flag, spec, "-o", os.path.join(d, "bad")])
        check(rc == 1 and flag in se and needle in se and se.strip().count("\n") == 0 and not os.path.exists(os.path.join(d, "bad")),
              f"landscape: bad grid {flag} {spec} fails with one line", se.strip())


def main():
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="prism-analysis-")
    try:
        only = set(sys.argv[1:])  # e.g. `oracle_analysis.py landscape`: one case
        want = lambda c: not only or c in only  # noqa: E731
        r = None
        if want("weights"):
            r = weights_case(tmp, "nemotron_h", torch.float32, torch.bfloat16, torch.float32)
            weights_case(tmp, "llama", torch.bfloat16, torch.bfloat16, torch.float32)
        if want("trajectory"):
            trajectory_case(tmp)
        if want("cka"):
            cka_case(tmp)
        if want("landscape"):
            landscape_case(tmp)
        if r:
            base, _ = r
            env = dict(os.environ, PATH="/nonexistent")
            rc, so, se = run(["analyze", "weights", base, base, "-o", os.path.join(tmp, "nognuplot"), "-q"], env=env)
            check(rc == 1 and "gnuplot not found" in se, "without gnuplot on PATH: a clear error", se.strip())
    finally:
        if os.environ.get("PRISM_KEEP_TEST_DIRS"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
