#!/usr/bin/env python3
"""Does a study checkpoint copy from its context? (docs/study.md, "Making the tasks learnable")

A diagnostic run with the project venv (transformers reads the HF checkpoint; nothing of prism's):
  .venv/bin/python tools/study/copy_probe.py CHECKPOINT_DIR [TEST_MATH_JSONL]
Prints the mean loss (nats/byte) of
  - a random 24-letter word the first time and when it repeats (`The <w> is red. The <w> is red.`),
  - a note's list and its verbatim read-back (`Ivy made a list: ... She read it back: ...`),
  - with a math test file: the first operand of the gold worked steps, a copy of the prompt's number
    (2.30 = uniform over ten digits).
A model with an induction head pays far less for a repeat than for the first occurrence.
"""
import json
import pathlib
import random
import re
import sys

import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
ckpt = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
tok_file = pathlib.Path(ckpt) / "tokenizer.json"
if not tok_file.exists():  # training checkpoints carry no tokenizer; the study model's is byte-level
    tok_file = pathlib.Path(__file__).resolve().parents[2] / "configs/tiny/study-dense/tokenizer.json"
vocab = json.loads(tok_file.read_text())["model"]["vocab"]
# GPT-2 byte-to-unicode map of the ByteLevel tokenizer.
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b), cs.append(256 + n)
        n += 1
b2u = dict(zip(bs, map(chr, cs)))


def ids(s):
    return [vocab[b2u[b]] for b in s.encode()]


def nll(text):
    x = torch.tensor([ids(text)])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
    return -lp.gather(1, x[0, 1:, None])[:, 0]  # nll[i] is the loss of byte i + 1


def span(losses, start, length):  # mean loss of bytes [start, start + length)
    return losses[start - 1:start - 1 + length].mean().item()


rng = random.Random(0)
letters = "abcdefghijklmnopqrstuvwxyz"
first = rep = 0.0
for _ in range(30):
    w = "".join(rng.choice(letters) for _ in range(24))
    a, b = "The ", "The " + w + " is red. The "
    loss = nll(b + w + " is red.")
    first += span(loss, len(ids(a)), len(ids(w)))
    rep += span(loss, len(ids(b)), len(ids(w)))
print(f"random word: first {first / 30:.2f}, repeated {rep / 30:.2f} nats/byte")

first = rep = 0.0
for _ in range(30):
    lst = ", ".join("".join(rng.choice(letters) for _ in range(6)) + f" {rng.randint(0, 99)}" for _ in range(3))
    a, b = "Ivy made a list: ", "Ivy made a list: " + lst + ". She read it back: "
    loss = nll(b + lst + ".")
    first += span(loss, len(ids(a)), len(ids(lst)))
    rep += span(loss, len(ids(b)), len(ids(lst)))
print(f"note list: first {first / 30:.2f}, read back {rep / 30:.2f} nats/byte")

if len(sys.argv) > 2:
    total = count = 0.0
    for r in [json.loads(line) for line in open(sys.argv[2])][:40]:
        loss = nll(r["prompt"] + r["solution"])
        operand = re.match(r" (\d+)", r["solution"]).group(1)
        total += span(loss, len(ids(r["prompt"])) + 1, len(operand)) * len(operand)
        count += len(operand)
    print(f"first operand of the gold worked steps: {total / count:.2f} nats/byte (uniform over digits: 2.30)")
