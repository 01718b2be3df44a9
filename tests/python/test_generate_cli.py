#!/usr/bin/env python3
"""`prism-train generate` end to end (CTest `py_test_generate_cli`; exit 0 = pass).

Environment: PRISM_FIXTURES (tests/fixtures/make_fixtures.py output), PRISM_BIN (prism-train).

Oracles: transformers' greedy completions (generate_refs.safetensors, written by
tests/fixtures/generate_fixtures.py) and the `tokenizers` library (decode of the token ids).
Setup: a copy of the `llama` fixture with the one-character-per-token ASCII tokenizer.
  1. --prompts with token-id arrays (--field ids), greedy, --slots 2: every line's token_ids equal
     transformers' greedy completion; JSONL fields present; completion == tokenizers.decode(ids).
  2. text prompts through --template, --n 3, sampling: 3 lines per prompt, completion text equals
     the decode of the ids, one log-prob per token, sampling log-probs <= 0.
  3. --stop: completions end before the stop string.
  4. bad input -> exit 1 and one line naming the file:line and field: a missing field, an id
     outside the vocabulary, a prompt of the context length, an unreadable tokenizer.json.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

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


def run(cmd, timeout=300):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout}s"
    return p.returncode, p.stdout, p.stderr


def write_jsonl(path, rows):
    with open(path, "w") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def read_jsonl(path):
    with open(path) as fh:
        return [json.loads(l) for l in fh if l.strip()]


def main():
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    fixtures = os.environ.get("PRISM_FIXTURES", "")
    exe = os.path.join(os.environ.get("PRISM_BIN", ""), "prism-train")
    if not os.path.isfile(os.path.join(fixtures, "generate_refs.safetensors")) or not os.path.isfile(exe):
        check(False, f"needs PRISM_FIXTURES with generate_refs.safetensors and PRISM_BIN/prism-train ({fixtures}, {exe})")
        finish()
    refs = load_file(os.path.join(fixtures, "generate_refs.safetensors"))
    tmp = tempfile.mkdtemp(prefix="prism_gen_cli_")
    try:
        model = os.path.join(tmp, "llama")
        shutil.copytree(os.path.join(fixtures, "llama"), model)
        shutil.copy(os.path.join(fixtures, "tok_ascii128", "tokenizer.json"), os.path.join(model, "tokenizer.json"))
        tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))

        # 1. token-id prompts, greedy, against transformers
        prompts = []
        i = 0
        while f"llama.prompt.{i}" in refs:
            prompts.append(refs[f"llama.prompt.{i}"].tolist())
            i += 1
        pj, out = os.path.join(tmp, "ids.jsonl"), os.path.join(tmp, "ids.out.jsonl")
        write_jsonl(pj, [{"ids": p} for p in prompts])
        rc, so, se = run([exe, "generate", model, "--prompts", pj, "--field", "ids", "--max-new-tokens", "12",
                          "--slots", "2", "--threads", "1", "-o", out])
        if check(rc == 0, "greedy id prompts exit 0", se.strip()[-400:]):
            lines = read_jsonl(out)
            check(len(lines) == len(prompts), "one line per prompt", f"{len(lines)} lines")
            for k, l in enumerate(lines):
                want = refs[f"llama.greedy.{k}"].tolist()
                check(l["token_ids"] == want, f"prompt {k}: greedy equals transformers",
                      f"got {l['token_ids']} want {want}" if l["token_ids"] != want else "")
                check(l["completion"] == tok.decode(l["token_ids"], skip_special_tokens=True),
                      f"prompt {k}: completion is the decoded ids")
                keys = {"prompt_index", "sample_index", "completion", "token_ids", "logprobs", "sampling_logprobs",
                        "finish_reason", "stop_reason", "prompt_tokens", "completion_tokens", "line"}
                check(keys <= set(l), f"prompt {k}: fields", str(sorted(keys - set(l))))
                check(l["prompt_tokens"] == len(prompts[k]) and l["completion_tokens"] == len(want),
                      f"prompt {k}: lengths")

        # 2. text prompts through a template, n samples
        pj, out = os.path.join(tmp, "text.jsonl"), os.path.join(tmp, "text.out.jsonl")
        write_jsonl(pj, [{"question": "two plus two"}, "", {"question": "the sky is"}])
        rc, so, se = run([exe, "generate", model, "--prompts", pj, "--template", "Q: {question}\\nA:", "--n", "3",
                          "--temperature", "1.0", "--top-p", "0.9", "--max-new-tokens", "8", "--seed", "4",
                          "-o", out])
        if check(rc == 0, "text prompts exit 0", se.strip()[-400:]):
            lines = read_jsonl(out)
            check(len(lines) == 6, "3 samples x 2 prompts", f"{len(lines)} lines")
            check([l["line"] for l in lines] == [1, 1, 1, 3, 3, 3], "line numbers of the prompts file")
            check(lines[0]["prompt"] == "Q: two plus two\nA:", "template rendered", repr(lines[0]["prompt"]))
            for l in lines:
                check(len(l["logprobs"]) == len(l["token_ids"]) == len(l["sampling_logprobs"]) == l["completion_tokens"],
                      "one log-prob per token")
                check(all(v <= 0 for v in l["logprobs"] + l["sampling_logprobs"]), "log-probs <= 0")
                shown = l["token_ids"][:-1] if l["finish_reason"] == "stop" and l["stop_reason"] == str(
                    l["token_ids"][-1]) else l["token_ids"]
                check(l["completion"] == tok.decode(shown, skip_special_tokens=True), "completion text = decode(ids)")
            check(len({tuple(l["token_ids"]) for l in lines[:3]}) > 1, "samples of one prompt differ")

        # 3. stop strings
        base = read_jsonl(out)[0] if os.path.exists(out) else None
        stop = None
        if base:
            c = base["completion"]
            stop = next((c[j:j + 2] for j in range(2, len(c) - 1) if "\x00" not in c[j:j + 2]), None)
        if check(stop is not None, "a stop string can be taken from a completion"):
            out2 = os.path.join(tmp, "stop.out.jsonl")
            rc, so, se = run([exe, "generate", model, "--prompts", pj, "--template", "Q: {question}\\nA:", "--n", "3",
                              "--temperature", "1.0", "--top-p", "0.9", "--max-new-tokens", "8", "--seed", "4",
                              "--stop", stop, "-o", out2])
            if check(rc == 0, "--stop exits 0", se.strip()[-400:]):
                first = read_jsonl(out2)[0]
                check(first["finish_reason"] == "stop" and first["stop_reason"] == stop, "stopped by the string")
                check(first["completion"] == base["completion"][:base["completion"].find(stop)],
                      "text cut before the stop string", repr(first["completion"]))

        # 4. bad input
        def bad(rows, what, needles, extra=(), model_dir=model):
            pj = os.path.join(tmp, "bad.jsonl")
            write_jsonl(pj, rows)
            rc, so, se = run([exe, "generate", model_dir, "--prompts", pj, "-o", os.path.join(tmp, "bad.out")] + list(extra))
            line = se.strip()
            ok = rc == 1 and len(line.splitlines()) == 1 and all(n in line for n in needles)
            check(ok, f"bad input: {what}", f"rc={rc} {line!r}")

        bad([{"prompt": "ok"}, {"text": "no prompt field"}], "missing field", ["bad.jsonl:2", "prompt", "missing"])
        bad([{"ids": [5, 6]}, {"ids": [5, 128]}], "id outside the vocabulary", ["bad.jsonl:2", "ids", "vocabulary"],
            ["--field", "ids"])
        bad([{"prompt": "x" * 2048}], "prompt of the context length", ["bad.jsonl:1", "prompt", "2048"])
        bad([{"prompt": "hi"}], "template field missing", ["bad.jsonl:1", "--template", "question"],
            ["--template", "{question}"])
        broken = os.path.join(tmp, "broken")
        shutil.copytree(model, broken)
        with open(os.path.join(broken, "tokenizer.json"), "w") as fh:
            fh.write("{not json")
        bad([{"prompt": "hi"}], "unreadable tokenizer", ["tokenizer"], model_dir=broken)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
