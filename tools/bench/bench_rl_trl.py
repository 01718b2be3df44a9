#!/usr/bin/env python3
"""Baseline for tools/bench/run_rl_bench.sh: TRL's GRPOTrainer (transformers generation, no vLLM)
on CPU, timed per step. Same model, prompts, group size, completion length, reward and thread
count as the prism side; prints one JSON line with the median step time (steps after the first),
its split (generation / reward / logprob forward / backward / rest = optimizer and bookkeeping,
timed by wrapping the trainer's own methods) and the tokens it generated and trained on (completion
tokens, and the padded [B, prompt + longest completion] rows its forward and backward run over).
--fixed-length makes every completion max_new_tokens long (EOS suppressed by min_new_tokens), the
equal-tokens comparison with prism's rollout.ignore_eos.

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
    ap.add_argument("--fixed-length", action="store_true", help="no EOS: every completion is max_new_tokens long")
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
        generation_kwargs={"min_new_tokens": a.max_new_tokens} if a.fixed_length else None,
    )
    times, split, cur = [], [], {}

    def timed(obj, name, key, after=None):
        fn = getattr(obj, name)

        def wrapper(*args, **kw):
            t = time.perf_counter()
            out = fn(*args, **kw)
            cur[key] = cur.get(key, 0.0) + time.perf_counter() - t
            if after:
                after(out)
            return out

        setattr(obj, name, wrapper)

    def record_tokens(inputs):
        cm = inputs["completion_mask"]
        cur["completion_tokens"] = int(cm.sum())
        cur["completion_lengths"] = cm.sum(1).tolist()
        cur["trained_tokens"] = int(inputs["prompt_ids"].numel() + inputs["completion_ids"].numel())
        cur["head_tokens"] = int(inputs["completion_ids"].numel())  # logits_to_keep rows, padding included
        cur["row_shape"] = [int(inputs["prompt_ids"].size(0)), int(inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1))]

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)
            split.append(dict(cur))
            cur.clear()

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[Timer()])
    # The generation call (sampling only), the reward functions, the whole rollout phase (generation,
    # rewards, advantages, padding), the loss forward (log-probs over the completion tokens) and the
    # backward: the trainer's own methods, timed in place.
    timed(trainer, "_generate_single_turn", "generate_s")
    timed(trainer, "_calculate_rewards", "reward_s")
    timed(trainer, "_generate_and_score_completions", "rollout_s", record_tokens)
    timed(trainer, "compute_loss", "forward_s")
    timed(trainer.accelerator, "backward", "backward_s")
    trainer.train()
    for t, sp in zip(times, split):
        sp["step_s"] = t
        sp["update_s"] = t - sp.get("rollout_s", 0.0)
        print(json.dumps(sp), file=sys.stderr)
    steady = list(range(1, len(times))) or [0]
    med = lambda k: statistics.median(split[i].get(k, 0.0) for i in steady)
    print(json.dumps({"side": "trl", "step_s": statistics.median(times[i] for i in steady), "steps": times,
                      "generate_s": med("generate_s"), "reward_s": med("reward_s"), "rollout_s": med("rollout_s"),
                      "forward_s": med("forward_s"), "backward_s": med("backward_s"), "update_s": med("update_s"),
                      "completion_tokens": med("completion_tokens"), "trained_tokens": med("trained_tokens"),
                      "head_tokens": med("head_tokens"),
                      "fixed_length": a.fixed_length,
                      "threads": a.threads, "prompts": a.num_prompts, "group": a.group,
                      "max_new_tokens": a.max_new_tokens}))


if __name__ == "__main__":
    sys.exit(main())
