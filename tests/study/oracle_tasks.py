#!/usr/bin/env python3
"""Independent oracle for the generated study tasks (prism/study/tasks.h), run by test_study.

Reads the files `prism-train study tasks` writes and re-derives every answer without prism's code:
math by re-reading the word problem (verbs -> operations) and checking every worked step;
code by running the snippet in Python; science by finding the fact in the general text. Also checks
that test, RL and mid-training problems are disjoint. Exit status 0: all good; 1: the first
problems found are printed.
"""
import contextlib
import io
import json
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
errors = []


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def math_answer(question):
    """Re-reads a word problem: 'X has N things.' then one operation per sentence."""
    sentences = re.findall(r"[^.?]+[.?]", question)
    value = int(re.search(r" has (\d+) ", sentences[0]).group(1))
    chain = [str(value)]
    for s in sentences[1:-1]:
        if m := re.search(r" (?:buys|finds|gets) (\d+) more", s):
            value += int(m.group(1)); chain.append("+" + m.group(1))
        elif m := re.search(r" (?:gives away|loses|sells) (\d+)", s):
            value -= int(m.group(1)); chain.append("-" + m.group(1))
        elif "doubles" in s:
            value *= 2; chain.append("*2")
        elif "triples" in s:
            value *= 3; chain.append("*3")
        else:
            raise ValueError(f"unknown step sentence {s!r}")
    assert sentences[-1].strip().startswith("How many"), sentences[-1]
    return value, "".join(chain)


def check_steps(solution, where):
    for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", solution):
        if eval(f"{a}{op}{b}") != int(c):
            errors.append(f"{where}: wrong worked step {a} {op} {b} = {c}")


def run_code(snippet):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet, {})
    return out.getvalue().strip()


def boxed(text):
    return re.findall(r"\\boxed\{([^}]*)\}", text)[-1]


def split_doc(text):
    """A mid-training document is 'Question: ... Answer: <think>' + worked solution."""
    q, sol = text.split("\nAnswer: <think>")
    return q[len("Question: "):], sol


# Worked problems mixed into the general text (tasks.general_worked) list distractors: facts come from prose.
general = [d["text"] for d in jsonl(root / "general/train.jsonl") if not d["text"].startswith("Question: ")]
# Notes (tasks.general_notes): a list of invented words with numbers, read back verbatim, then one
# entry looked up; none of the words may be a creature's name (it would state no fact about it).
creatures = set()
for d in general:
    creatures.update(re.findall(r"\b(?:The|the) (\w+) (?:is|has|eats|lives|feeds)\b", d) if "made a list" not in d else [])
notes = 0
for d in general:
    if " made a list: " not in d:
        continue
    m = re.fullmatch(r"(\w+) made a list: ([a-z0-9, ]+)\. (?:He|She) read it back: ([a-z0-9, ]+)\. The ([a-z]+) is (\d+)\.", d)
    if not m:
        errors.append(f"general note not in the expected form: {d!r}")
        continue
    entries = dict(e.split(" ") for e in m.group(2).split(", "))
    if m.group(3) != m.group(2):
        errors.append(f"general note reads back something else: {d!r}")
    if entries.get(m.group(4)) != m.group(5):
        errors.append(f"general note looks up {m.group(4)} = {m.group(5)}, its list says {entries.get(m.group(4))}: {d!r}")
    if set(entries) & creatures:
        errors.append(f"general note uses a creature's name: {d!r}")
    notes += 1
domains = sorted(p.stem for p in (root / "test").glob("*.jsonl"))
if not domains:
    errors.append("no test files")
checked = 0
for domain in domains:
    keys = {}
    for split in ("test", "rl"):
        keys[split] = []
        for r in jsonl(root / split / f"{domain}.jsonl"):
            where = f"{split}/{domain}.jsonl {r['id']}"
            q, sol = split_doc(r["prompt"] + r["solution"])
            if not r["prompt"].endswith("<think>") or boxed(r["solution"]) != r["answer"]:
                errors.append(f"{where}: prompt/solution format")
            if domain == "math":
                value, key = math_answer(q)
                check_steps(sol, where)
                if str(value) != r["answer"]:
                    errors.append(f"{where}: answer {r['answer']}, the problem gives {value}")
            elif domain == "code":
                key = q.split("\n", 1)[1]
                if run_code(key) != r["answer"]:
                    errors.append(f"{where}: answer {r['answer']}, Python prints {run_code(key)}")
            else:
                letter = r["answer"]
                options = dict(re.findall(r"\(([A-D])\) (\w+)", q))
                value = options[letter]
                if r["choices"][ord(letter) - ord("A")] != value:
                    errors.append(f"{where}: choices field disagrees with the prompt")
                entity = re.search(r"the (\w+)[ ?]", q.split("\n")[0]).group(1)
                key = q.split("\n")[0]
                stated = [d for d in general if re.search(rf"\b{entity}\b", d)]
                if not stated:
                    errors.append(f"{where}: '{entity}' appears in no general-text document")
                for d in stated:
                    if not re.search(rf"\b{value}\b", d):
                        errors.append(f"{where}: a general-text document about {entity} does not state '{value}'")
                wrong = [o for o in options.values() if o != value]
                for d in stated:
                    for o in wrong:
                        if re.search(rf"\b{o}\b", d):
                            errors.append(f"{where}: distractor '{o}' is also stated for {entity}")
            keys[split].append(key)
            checked += 1
    mid_keys = set()
    for line in jsonl(root / "mid" / f"{domain}.jsonl"):
        q, sol = split_doc(line["text"])
        if domain == "math":
            value, key = math_answer(q)
            check_steps(sol, f"mid/{domain}")
            if boxed(sol) != str(value):
                errors.append(f"mid/math: boxed {boxed(sol)}, the problem gives {value}")
        elif domain == "code":
            key = q.split("\n", 1)[1]
            if boxed(sol) != run_code(key):
                errors.append(f"mid/code: boxed {boxed(sol)}, Python prints {run_code(key)}")
        else:
            key = q.split("\n")[0]
        mid_keys.add(key)
    for split in ("test", "rl"):
        if len(set(keys[split])) != len(keys[split]):
            errors.append(f"{split}/{domain}: repeated problems")
    if set(keys["test"]) & set(keys["rl"]):
        errors.append(f"{domain}: test and RL share {len(set(keys['test']) & set(keys['rl']))} problems")
    leaked = (set(keys["test"]) | set(keys["rl"])) & mid_keys
    if leaked:
        errors.append(f"{domain}: {len(leaked)} test/RL problems are in the mid-training data, e.g. {sorted(leaked)[0]!r}")

for e in errors[:20]:
    print(e)
print(f"checked {checked} prompt records in {domains} and {notes} notes: {len(errors)} problem(s)")
sys.exit(1 if errors or checked == 0 else 0)
