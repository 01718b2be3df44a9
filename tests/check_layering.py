#!/usr/bin/env python3
"""Enforces the module table of docs/architecture.md and the public-header rule.

EDGES says which modules each module may use directly; a module may include its own headers and
those of every module reachable through EDGES (transitively), nothing else. src/CMakeLists.txt
must link each module with exactly its EDGES (as prism_<dep>), so the link graph and the include
graph are the same table. Public headers (include/prism) may include only the standard library,
ATen/c10 tensor-level headers and other prism headers. kernels/ never includes torch.
"""
import pathlib, re, sys

# module -> modules it may depend on directly (bottom first). Keep in sync with docs/architecture.md.
EDGES = {
    "core": [],
    "runtime": ["core"],
    "io": ["core"],
    "ops": ["core"],
    "models": ["io", "ops", "runtime"],
    "data": ["io"],
    "distributed": ["core"],
    "rewards": ["core"],
    "generate": ["models"],
    "train": ["models", "data", "distributed"],
    "eval": ["generate", "rewards", "data"],
    "rl": ["train", "eval"],
    "analysis": ["eval"],  # the loss landscape evaluates on a grid
    "study": ["rl", "analysis"],  # the study in miniature: generated tasks, then every stage
}


def closure(m, seen=None):
    seen = set() if seen is None else seen
    for d in EDGES[m]:
        if d not in seen:
            seen.add(d)
            closure(d, seen)
    return seen


ALLOWED = {m: closure(m) | {m} for m in EDGES}
FORBIDDEN_PUBLIC = re.compile(r'#include\s*[<"](yaml-cpp|nlohmann|spdlog|fmt|CLI|torch/|cuda)')
INC = re.compile(r'#include\s*[<"]prism/(\w+)/')

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
errors = []
for base in ("include/prism", "src"):
    for f in sorted((root / base).rglob("*")):
        if f.suffix not in (".h", ".cpp", ".cuh"):
            continue
        rel = f.relative_to(root / base)
        mod = rel.parts[0]
        if mod == "pch":
            continue
        if len(rel.parts) > 1 and mod not in EDGES:
            errors.append(f"{f}: module '{mod}' is not in the module table (tests/check_layering.py EDGES)")
            continue
        if mod not in EDGES:
            continue
        text = f.read_text(errors="replace")
        for m in INC.finditer(text):
            dep = m.group(1)
            if dep not in ALLOWED[mod]:
                errors.append(f"{f}: module '{mod}' includes '{dep}', which is not below it in the module table")
        if base == "include/prism":
            for line in text.splitlines():
                if FORBIDDEN_PUBLIC.search(line):
                    errors.append(f"{f}: public header includes a private dependency: {line.strip()}")

# CMake link edges == the table.
cm = (root / "src/CMakeLists.txt").read_text()
declared = {}
for m in re.finditer(r"prism_module\((\w+)([^)]*)\)", cm):
    name, args = m.group(1), m.group(2)
    deps = re.search(r"\bDEPS\s+((?:prism_\w+\s*)+)", args)
    declared[name] = sorted(d[len("prism_"):] for d in (deps.group(1).split() if deps else []))
for name, deps in declared.items():
    if name not in EDGES:
        errors.append(f"src/CMakeLists.txt: module '{name}' is not in the module table")
    elif deps != sorted(EDGES[name]):
        errors.append(f"src/CMakeLists.txt: prism_{name} links {deps}, the module table says {sorted(EDGES[name])}")
for d in (root / "src").iterdir():
    if d.is_dir() and d.name in EDGES and d.name not in declared:
        errors.append(f"src/{d.name}: module directory without prism_module({d.name} ...) in src/CMakeLists.txt")

for f in (root / "kernels").rglob("*"):
    if f.suffix in (".cu", ".cuh", ".h") and re.search(r'#include\s*[<"](ATen|torch)/', f.read_text()):
        errors.append(f"{f}: kernels/ must not include torch headers")
for e in errors:
    print(e)
print(f"layering: {len(errors)} violation(s)")
sys.exit(1 if errors else 0)
