#!/usr/bin/env python3
"""prism output read back by transformers (CTest `py_test_roundtrip`; exit 0 = pass).

Environment: PRISM_FIXTURES = the directory written by tests/fixtures/make_fixtures.py,
             PRISM_BIN      = the directory holding the `prism-train` binary.

For every fixture checkpoint <name> (those with a <name>.ref.safetensors):
  1. `prism-train save <fixtures>/<name> <tmp>/out --shard-size 20KB` must write config.json,
     >= 2 safetensors shards and model.safetensors.index.json whose weight_map matches the shards;
     every tensor of the source checkpoint must come back bit-identical (fp32 in, fp32 out).
  2. transformers loads <tmp>/out (fp32, eager) without missing/unexpected keys, and its logits on
     `input_ids` match the reference `logits`: max|diff| <= 1e-5 * max|logits|.
  3. `prism-train forward <fixtures>/<name> --ids "..." --hidden-states --output f.safetensors`:
     `logits` [1, L, V] fp32 and `hidden_states.{0..N}` match the reference within
     1e-4 * max|ref| per tensor.
  4. `prism-train generate <fixtures>/<name> --ids "<generate.prompt>" -n 10` (greedy, fp32) prints
     exactly `generate.output` (the fixture prompts never lead to the eos id, so stopping at eos or
     not gives the same ids).
Prints one line per check and ends with `N passed, M failed`.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

REL_LOGITS_SAVE = 1e-5
REL_FORWARD = 1e-4

_results = []


def check(ok, what, detail=""):
    _results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {what}{(': ' + detail) if detail else ''}", flush=True)
    return bool(ok)


def finish():
    passed = sum(_results)
    failed = len(_results) - passed
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 and passed > 0 else 1)


def fatal(msg):
    check(False, msg)
    finish()


def run(cmd, timeout=300):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout}s"
    return p.returncode, p.stdout, p.stderr


def short(s, n=600):
    s = (s or "").strip()
    return s if len(s) <= n else "..." + s[-n:]


def rel_err(got, ref):
    scale = float(ref.abs().max())
    err = float((got.double() - ref.double()).abs().max())
    return err, scale


def main():
    fixtures = os.environ.get("PRISM_FIXTURES")
    bindir = os.environ.get("PRISM_BIN")
    if not fixtures or not os.path.isdir(fixtures):
        fatal(f"PRISM_FIXTURES must name the fixtures dir (make_fixtures.py --out DIR); got {fixtures!r}")
    if not bindir:
        fatal("PRISM_BIN must name the directory holding prism-train")
    exe = os.path.join(bindir, "prism-train")
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        fatal(f"prism-train binary not found or not executable at {exe} (build the prism-train target)")

    try:
        import torch
        from safetensors import safe_open
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM
        import transformers
    except ImportError as e:
        fatal(f"this test needs torch, safetensors and transformers (run it with the project venv): {e}")
    transformers.logging.set_verbosity_error()
    try:
        transformers.logging.disable_progress_bar()
    except AttributeError:
        pass
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    names = sorted(f[: -len(".ref.safetensors")] for f in os.listdir(fixtures) if f.endswith(".ref.safetensors"))
    if not names:
        fatal(f"no <name>.ref.safetensors in {fixtures}")

    tmproot = tempfile.mkdtemp(prefix="prism_roundtrip_")
    try:
        for name in names:
            src = os.path.join(fixtures, name)
            ref = load_file(os.path.join(fixtures, name + ".ref.safetensors"))
            with open(os.path.join(fixtures, name + ".ref.json")) as fh:
                info = json.load(fh)
            ids = ref["input_ids"]
            tmp = os.path.join(tmproot, name)
            os.makedirs(tmp)

            # ---------------------------------------------------------------- 1. prism-train save
            out = os.path.join(tmp, "out")
            rc, so, se = run([exe, "save", src, out, "--shard-size", "20KB"])
            if not check(rc == 0, f"{name}: prism-train save exits 0", f"rc={rc} {short(se)}" if rc else ""):
                continue
            files = sorted(os.listdir(out)) if os.path.isdir(out) else []
            shards = [f for f in files if f.endswith(".safetensors")]
            check("config.json" in files, f"{name}: save wrote config.json", "" if "config.json" in files else " ".join(files))
            check(len(shards) >= 2, f"{name}: save wrote >= 2 shards", f"{len(shards)} shard(s)")
            index_path = os.path.join(out, "model.safetensors.index.json")
            saved = {}
            for f in shards:
                with safe_open(os.path.join(out, f), "pt") as s:
                    for k in s.keys():
                        saved[k] = (f, s.get_tensor(k))
            if check(os.path.isfile(index_path), f"{name}: save wrote model.safetensors.index.json"):
                with open(index_path) as fh:
                    wm = json.load(fh).get("weight_map", {})
                bad = sorted(k for k in set(wm) | set(saved) if wm.get(k) != saved.get(k, (None,))[0])
                check(not bad, f"{name}: index weight_map matches the shards' contents",
                      f"{len(wm)} entries" if not bad else f"mismatched: {bad[:5]}")

            orig = {}
            for f in sorted(os.listdir(src)):
                if f.endswith(".safetensors"):
                    orig.update(load_file(os.path.join(src, f)))
            missing = sorted(set(orig) - set(saved))
            differ = sorted(k for k in orig if k in saved and not (
                saved[k][1].dtype == orig[k].dtype and saved[k][1].shape == orig[k].shape
                and torch.equal(saved[k][1], orig[k])))
            extra = sorted(set(saved) - set(orig))
            tied = bool(info.get("tie_word_embeddings"))
            bad_extra = [k for k in extra if not (tied and k == "lm_head.weight"
                                                  and torch.equal(saved[k][1], orig["model.embed_tokens.weight"]))]
            check(not missing and not differ and not bad_extra,
                  f"{name}: saved tensors are bit-identical to the source checkpoint",
                  f"{len(orig)} tensors" if not (missing or differ or bad_extra) else
                  f"missing={missing[:5]} differ={differ[:5]} unexpected={bad_extra[:5]}")

            # ---------------------------------------------------------------- 2. transformers reads it back
            try:
                model, load_info = AutoModelForCausalLM.from_pretrained(
                    out, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
                model.eval()
                problems = {k: v for k, v in load_info.items()
                            if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
                check(not problems, f"{name}: transformers loads the saved checkpoint cleanly",
                      str(problems) if problems else "")
                with torch.no_grad():
                    got = model(ids).logits.float()
                err, scale = rel_err(got, ref["logits"])
                check(got.shape == ref["logits"].shape and err <= REL_LOGITS_SAVE * scale,
                      f"{name}: transformers logits of the saved checkpoint match the reference",
                      f"max|diff| {err:.3g} (tol {REL_LOGITS_SAVE * scale:.3g})")
                del model
            except Exception as e:  # noqa: BLE001 - report and go on with the other fixtures
                check(False, f"{name}: transformers loads the saved checkpoint", f"{type(e).__name__}: {e}")

            # ---------------------------------------------------------------- 3. prism-train forward
            fout = os.path.join(tmp, "f.safetensors")
            ids_str = " ".join(str(int(x)) for x in ids[0].tolist())
            rc, so, se = run([exe, "forward", src, "--ids", ids_str, "--hidden-states", "--output", fout])
            if check(rc == 0 and os.path.isfile(fout), f"{name}: prism-train forward exits 0",
                     f"rc={rc} {short(se)}" if rc else ""):
                got = load_file(fout)
                lg = got.get("logits")
                if check(lg is not None and lg.dtype == torch.float32 and lg.shape == ref["logits"].shape,
                         f"{name}: forward logits are fp32 {list(ref['logits'].shape)}",
                         "" if lg is None else f"got {lg.dtype} {list(lg.shape)}"):
                    err, scale = rel_err(lg, ref["logits"])
                    check(err <= REL_FORWARD * scale, f"{name}: forward logits match transformers",
                          f"max|diff| {err:.3g} (tol {REL_FORWARD * scale:.3g})")
                n_hs = info["num_layers"] + 1
                hs_names = sorted((k for k in got if k.startswith("hidden_states.")),
                                  key=lambda k: int(k.split(".")[1]))
                check(len(hs_names) == n_hs, f"{name}: forward wrote {n_hs} hidden states",
                      f"got {len(hs_names)}")
                for i in range(n_hs):
                    k = f"hidden_states.{i}"
                    if k not in got:
                        check(False, f"{name}: {k} present")
                        continue
                    if got[k].shape != ref[k].shape or got[k].dtype != torch.float32:
                        check(False, f"{name}: {k} shape/dtype",
                              f"got {got[k].dtype} {list(got[k].shape)}, want float32 {list(ref[k].shape)}")
                        continue
                    err, scale = rel_err(got[k], ref[k])
                    check(err <= REL_FORWARD * scale, f"{name}: forward {k} matches transformers",
                          f"max|diff| {err:.3g} (tol {REL_FORWARD * scale:.3g})")

            # ---------------------------------------------------------------- 4. prism-train generate
            prompt = ref["generate.prompt"][0].tolist()
            want = ref["generate.output"][0].tolist()
            n_new = len(want) - len(prompt)
            rc, so, se = run([exe, "generate", src, "--ids", " ".join(map(str, prompt)),
                              "--max-new-tokens", str(n_new)])
            if check(rc == 0, f"{name}: prism-train generate exits 0", f"rc={rc} {short(se)}" if rc else ""):
                try:
                    got_ids = [int(x) for x in so.split()]
                except ValueError:
                    got_ids = None
                check(got_ids == want, f"{name}: greedy generate matches transformers",
                      f"got {got_ids} want {want}" if got_ids != want else f"{n_new} new tokens")
    finally:
        shutil.rmtree(tmproot, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
