#!/usr/bin/env python3
"""Baseline side of the generation benchmark: transformers `generate` (tools/bench/run_generate_bench.sh).

    bench_generate_hf.py prompts --model DIR --case a|b --out prompts.jsonl [--tokens real|random]
    bench_generate_hf.py run --model DIR --prompts prompts.jsonl --case a|b|g [--threads N] [--seed S]
                             [--device cpu|cuda] [--dtype fp32|bf16] [--n N] [--max-new-tokens M]
                             [--engine hf|vllm] [--json]

Cases (the issue's CPU benchmark, and the GPU one of run_generate_bench_gpu.sh):
  a  batch 1, greedy, a 32-token prompt, 128 new tokens
  b  8 prompts x 8 samples (num_return_sequences), temperature 1 (top-k / top-p off), 256 new tokens
  g  64 prompts of 128 tokens x 16 samples, temperature 1, 1024 new tokens (GPU, --tokens random)
Both stop at the checkpoint's EOS ids (generation_config.json, else config.json): a finished sample
is left in the batch and padded by transformers (that is its behaviour, and what the benchmark
measures against), but only tokens up to and including the EOS count as generated.

`prompts` writes the prompt token ids, one {"ids": [...], "text": ...} object per line, so both
sides read identical ids (prism: `prism-train generate --prompts F --field ids`):
  --tokens real    (a checkpoint with tokenizer.json) a: the first 32 tokens of a fixed English
                   passage, no chat template (a plain continuation, which rarely ends within 128
                   tokens); b: 8 fixed questions in the chat template with the generation prompt
                   (an instruct model ends them with its EOS, so lengths vary).
  --tokens random  (random-weight configs) ids drawn with seed 0 from [3, vocab): a: 32, b: 8 x 32,
                   g: 64 x 128.
`run` loads DIR (default attention implementation, i.e. SDPA), does one untimed 4-token generate
as warm-up, then times one `generate` over all prompts. The last stdout line (with --json) is
{"impl": "transformers", "case", "threads", "prompts", "n", "generated_tokens", "seconds",
 "tokens_per_s", "mean_completion", "finished_eos", "peak_rss_mb", "peak_gpu_mb", "weight_bytes_per_token",
 "parameters", ...}. weight_bytes_per_token = bytes of the parameters a batch-1 decode step reads:
every parameter except an untied input embedding (only one row of it is read).
--engine vllm (GPU only, when vllm is installed) runs the same prompts through vllm.LLM.generate
with SamplingParams(n, temperature, top_p 1, max_tokens, seed) from token ids; vLLM runs its engine
in a worker process and preallocates `gpu_memory_utilization` of the GPU, so no peak memory is
reported for it.
"""

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PASSAGE = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
           "movable metal type, oil-based ink and a wooden screw press into a system that could produce books "
           "quickly and cheaply. Within a few decades, printing shops had opened in most of the major cities of "
           "Europe, and the number of books in circulation grew from thousands to millions.")
QUESTIONS = [
    "What is the capital of Japan?",
    "Write a short poem about the sea.",
    "Explain how a refrigerator keeps food cold.",
    "List three benefits of regular exercise.",
    "What is 12 times 13? Show your reasoning.",
    "Describe the water cycle in a few sentences.",
    "Give me a recipe for a simple tomato pasta sauce.",
    "Why do leaves change color in autumn?",
]
CASES = {"a": dict(prompts=1, n=1, temperature=0.0, max_new_tokens=128, prompt_len=32),
         "b": dict(prompts=8, n=8, temperature=1.0, max_new_tokens=256, prompt_len=32),
         "g": dict(prompts=64, n=16, temperature=1.0, max_new_tokens=1024, prompt_len=128)}


def eos_ids(model):
    gc = model.generation_config
    e = gc.eos_token_id if gc is not None and gc.eos_token_id is not None else model.config.eos_token_id
    return [e] if isinstance(e, int) else list(e or [])


def cmd_prompts(a):
    case = CASES[a.case]
    rows = []
    if a.tokens == "real":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(a.model)
        if a.case == "a":
            ids = tok(PASSAGE, add_special_tokens=False)["input_ids"][:case["prompt_len"]]
            if len(ids) != case["prompt_len"]:
                sys.exit(f"bench_generate_hf: the passage has only {len(ids)} tokens")
            rows.append({"ids": ids, "text": tok.decode(ids)})
        else:
            for q in QUESTIONS[:case["prompts"]]:
                text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                               add_generation_prompt=True)
                rows.append({"ids": tok(text, add_special_tokens=False)["input_ids"], "text": text})
    else:
        import torch
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(a.model).vocab_size
        g = torch.Generator().manual_seed(0)
        for _ in range(case["prompts"]):
            rows.append({"ids": torch.randint(3, vocab, (case["prompt_len"],), generator=g).tolist()})
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    os.replace(tmp, a.out)
    lens = [len(r["ids"]) for r in rows]
    print(f"wrote {len(rows)} prompts ({min(lens)}-{max(lens)} tokens) to {a.out}")
    return 0


def load_prompts(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(l)["ids"] for l in fh if l.strip()]


def cmd_run_vllm(a, case):
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    import vllm

    prompts = load_prompts(a.prompts)
    llm = LLM(model=a.model, dtype={"fp32": "float32", "bf16": "bfloat16"}[a.dtype], seed=a.seed,
              max_model_len=max(len(p) for p in prompts) + case["max_new_tokens"], gpu_memory_utilization=0.9)
    sp = SamplingParams(n=case["n"], temperature=case["temperature"], top_p=1.0, max_tokens=case["max_new_tokens"],
                        seed=a.seed)
    llm.generate([TokensPrompt(prompt_token_ids=prompts[0])], SamplingParams(max_tokens=4), use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    lengths = [len(c.token_ids) for o in outs for c in o.outputs]
    finished = sum(1 for o in outs for c in o.outputs if c.finish_reason == "stop")
    gen = sum(lengths)
    res = {"impl": "vllm", "case": a.case, "model": os.path.basename(os.path.normpath(a.model)), "device": "cuda",
           "dtype": a.dtype, "prompts": len(prompts), "n": case["n"], "max_new_tokens": case["max_new_tokens"],
           "temperature": case["temperature"], "generated_tokens": gen, "seconds": round(dt, 3),
           "tokens_per_s": round(gen / dt, 2), "mean_completion": round(gen / len(lengths), 1),
           "finished_eos": finished, "sequences": len(lengths), "peak_gpu_mb": None, "vllm": vllm.__version__}
    print(json.dumps(res) if a.json else f"vllm case {a.case}: {gen} tokens in {dt:.2f} s = {gen / dt:.1f} tok/s")
    return 0


def cmd_run(a):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(a.threads)
    case = dict(CASES[a.case])
    if a.n:
        case["n"] = a.n
    if a.max_new_tokens:
        case["max_new_tokens"] = a.max_new_tokens
    if a.engine == "vllm":
        return cmd_run_vllm(a, case)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    dev = torch.device(a.device)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(dev).eval()
    eos = eos_ids(model)
    pad = model.generation_config.pad_token_id if model.generation_config.pad_token_id is not None else eos[0]
    prompts = load_prompts(a.prompts)
    width = max(len(p) for p in prompts)
    # Left padding: every row's last prompt token sits at the same position, as generate() needs.
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    sample = case["temperature"] > 0
    kw = dict(attention_mask=mask, do_sample=sample, num_return_sequences=case["n"], eos_token_id=eos,
              pad_token_id=pad, top_k=0 if sample else None, top_p=1.0 if sample else None,
              temperature=case["temperature"] if sample else None)
    torch.manual_seed(a.seed)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, **kw)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=case["max_new_tokens"], **kw)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    new = out[:, width:].tolist()
    lengths, finished = [], 0
    for row in new:
        n = len(row)
        for k, t in enumerate(row):
            if t in eos:
                n, finished = k + 1, finished + 1
                break
        lengths.append(n)
    gen = sum(lengths)
    params = dict(model.named_parameters())
    total = sum(p.numel() * p.element_size() for p in params.values())
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is emb
    res = {"impl": "transformers", "case": a.case, "model": os.path.basename(os.path.normpath(a.model)),
           "threads": a.threads, "device": a.device, "dtype": a.dtype, "prompts": len(prompts), "n": case["n"],
           "max_new_tokens": case["max_new_tokens"], "temperature": case["temperature"],
           "generated_tokens": gen, "seconds": round(dt, 3), "tokens_per_s": round(gen / dt, 2),
           "mean_completion": round(gen / len(lengths), 1), "finished_eos": finished, "sequences": len(lengths),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == "cuda" else None,
           "parameters": sum(p.numel() for p in params.values()),
           "weight_bytes_per_token": total - (0 if tied else emb.numel() * emb.element_size()),
           "attn_implementation": model.config._attn_implementation,
           "torch": torch.__version__, "transformers": transformers.__version__}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"transformers case {a.case}: {gen} tokens in {dt:.2f} s = {gen / dt:.1f} tok/s "
              f"(mean completion {res['mean_completion']}, {finished}/{len(lengths)} ended at EOS), "
              f"peak RSS {res['peak_rss_mb']} MB")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="transformers generate throughput (baseline for prism-train generate)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts", help="write the prompt ids of a case")
    p.add_argument("--model", required=True)
    p.add_argument("--case", choices=CASES, required=True)
    p.add_argument("--tokens", choices=["real", "random"], default="real")
    p.add_argument("--out", required=True)
    r = sub.add_parser("run", help="time transformers generate on a prompts file")
    r.add_argument("--model", required=True)
    r.add_argument("--prompts", required=True)
    r.add_argument("--case", choices=CASES, required=True)
    r.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    r.add_argument("--n", type=int, help="samples per prompt (default: the case's)")
    r.add_argument("--max-new-tokens", type=int, help="default: the case's")
    r.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    r.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    return cmd_prompts(a) if a.cmd == "prompts" else cmd_run(a)


if __name__ == "__main__":
    sys.exit(main())
