#!/usr/bin/env python3
"""Baseline side of the evaluation benchmark (tools/bench/run_eval_bench.sh): what an evaluation
script without prism does for pass@1 on GSM8K — transformers `generate` on the prompts, then
Math-Verify on every completion against the gold answer.

    bench_eval_hf.py --model DIR --samples prism_samples.jsonl --gold gsm8k.jsonl [--threads N]
                     [--max-new-tokens 256] [--batch 32] [--json]

The prompts are the rendered prompt texts of prism's own run (its samples.jsonl, in order), so
both sides see the same text; the tokenizer is the checkpoint's (add_special_tokens as prism).
Greedy decoding (do_sample=False), one sample per prompt, fp32, left padding, batches of --batch
prompts, stopping at the checkpoint's EOS ids. Verification: math_verify.verify(parse("\\boxed{"
gold "}"), parse(completion)) per sample, single process. The model load is not timed; one
4-token warm-up generate is run first. Last stdout line (--json): {"impl": "transformers",
"prompts", "generated_tokens", "seconds", "generate_s", "verify_s", "prompts_per_s", "correct",
"threads"}.
"""

import argparse
import json
import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
logging.disable(logging.WARNING)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True, help="prism's samples.jsonl (prompt texts, ids)")
    ap.add_argument("--gold", required=True, help="the benchmark's prompt-record JSONL (answers)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    import transformers
    from math_verify import parse, verify
    transformers.logging.set_verbosity_error()

    gold = {}
    for line in open(a.gold):
        r = json.loads(line)
        gold[r["id"]] = str(r["answer"])
    rows = [json.loads(l) for l in open(a.samples)]
    prompts = [(r["id"], r["prompt"]) for r in rows]

    tok = transformers.AutoTokenizer.from_pretrained(a.model)
    tok.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    gc = model.generation_config
    eos = gc.eos_token_id if gc.eos_token_id is not None else model.config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    pad = tok.pad_token_id if tok.pad_token_id is not None else min(eos_ids)

    def generate(texts, max_new):
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=pad,
                                 eos_token_id=list(eos_ids), temperature=None, top_p=None, top_k=None)
        comps, ntok = [], 0
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            keep = []
            for t in row:
                keep.append(t)
                if t in eos_ids:
                    break
            ntok += len(keep)
            comps.append(tok.decode([t for t in keep if t not in eos_ids], skip_special_tokens=False))
        return comps, ntok

    generate([prompts[0][1]], 4)  # warm-up
    for r in rows[:2]:  # warm-up of Math-Verify's grammars
        verify(parse("\\boxed{" + gold[r["id"]] + "}"), parse(r["completion"]))

    t0 = time.perf_counter()
    completions, ntok = [], 0
    for b in range(0, len(prompts), a.batch):
        c, n = generate([p for _, p in prompts[b:b + a.batch]], a.max_new_tokens)
        completions += c
        ntok += n
    t1 = time.perf_counter()
    correct = 0
    for (pid, _), c in zip(prompts, completions):
        correct += bool(verify(parse("\\boxed{" + gold[pid] + "}"), parse(c)))
    t2 = time.perf_counter()
    same = sum(c == r["completion"] for c, r in zip(completions, rows))
    res = {"impl": "transformers", "prompts": len(prompts), "generated_tokens": ntok, "seconds": t2 - t0,
           "generate_s": t1 - t0, "verify_s": t2 - t1, "prompts_per_s": len(prompts) / (t2 - t0),
           "correct": correct, "same_completion_as_prism": same, "threads": a.threads}
    print(json.dumps(res) if a.json else res)


if __name__ == "__main__":
    main()
