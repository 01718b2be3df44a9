#!/usr/bin/env python3
"""Baseline for tools/bench/run_rl_bench.sh: TRL's GRPOTrainer (transformers generation, no vLLM)
on CPU, timed per step. Same model, prompts, group size, completion length, reward and thread
count as the prism side; prints one JSON line with the median step time (steps after the first).

The reward is the toy task's (1 when the completion's last integer is 7), computed in Python; it is
not what is being compared (both sides spend well under 1% of a step on it).
"""
import argparse, json, re, statistics, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSONL with a `prompt` field")
    ap.add_argument("--num-prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/prism-trl-bench")
    a = ap.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    prompts = [json.loads(l)["prompt"] for l in open(a.prompts) if l.strip()][: a.num_prompts]
    ds = Dataset.from_dict({"prompt": prompts * (a.steps + 1)})
    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)

    def reward(completions, **kw):
        out = []
        for c in completions:
            nums = re.findall(r"[0-9]+", c)
            out.append(1.0 if nums and int(nums[-1][:18]) == 7 else 0.0)
        return out

    cfg = GRPOConfig(
        output_dir=a.out, use_cpu=True, bf16=False, fp16=False, report_to=[], logging_steps=1, save_strategy="no",
        per_device_train_batch_size=a.num_prompts * a.group, gradient_accumulation_steps=1,
        num_generations=a.group, max_completion_length=a.max_new_tokens, max_steps=a.steps,
        learning_rate=1e-6, beta=0.0, temperature=1.0, top_p=1.0, use_vllm=False,
        gradient_checkpointing=False, dataloader_num_workers=0, seed=0, shuffle_dataset=False,
    )
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    steady = times[1:] if len(times) > 1 else times
    print(json.dumps({"side": "trl", "step_s": statistics.median(steady), "steps": times,
                      "threads": a.threads, "prompts": a.num_prompts, "group": a.group,
                      "max_new_tokens": a.max_new_tokens}))


if __name__ == "__main__":
    sys.exit(main())
