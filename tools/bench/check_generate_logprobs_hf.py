#!/usr/bin/env python3
"""prism-train generate's per-token log-probs against transformers' teacher-forced fp32 forward.

  check_generate_logprobs_hf.py --model HF_DIR --prompts ids.jsonl --out prism.jsonl [--every 8]

ids.jsonl: the {"ids": [...]} prompt lines given to `prism-train generate --field ids`; prism.jsonl
its output. For every `--every`-th sample, runs transformers on prompt + completion (fp32, eager
attention, 1 thread) and prints the largest |prism log-prob - log_softmax(logits)[token]|.
A benchmark-side check (docs/PERFORMANCE.md "Decode weight copies"), not a test.
"""
import argparse
import json

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
    prompts = [json.loads(l)["ids"] for l in open(a.prompts) if l.strip()]
    rows = [json.loads(l) for l in open(a.out) if l.strip()][:: a.every]
    worst = 0.0
    for r in rows:
        p, c = prompts[r["prompt_index"]], r["token_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(m(torch.tensor([p + c])).logits[0].double(), -1)
        want = lp[len(p) - 1 : len(p) - 1 + len(c)].gather(1, torch.tensor(c).view(-1, 1)).view(-1)
        worst = max(worst, (want - torch.tensor(r["logprobs"], dtype=torch.double)).abs().max().item())
    print(json.dumps({"samples": len(rows), "max_abs_logprob_diff": worst}))


if __name__ == "__main__":
    main()
