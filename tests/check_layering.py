#!/usr/bin/env python3
"""Enforces the module dependency direction (docs/architecture.md) and the public-header rule.

core -> io -> ops -> models -> data -> dist -> train -> rl -> eval/analysis; a module may include
its own headers and those of modules below it. Public headers (include/prism) may include only the
standard library, ATen/c10 tensor-level headers and other prism headers.
"""
import pathlib, re, sys

ORDER = ["core", "io", "ops", "models", "data", "dist", "train", "rl", "eval", "analysis"]
RANK = {m: i for i, m in enumerate(ORDER)}
FORBIDDEN_PUBLIC = re.compile(r'#include\s*[<"](yaml-cpp|nlohmann|spdlog|fmt|CLI|torch/|cuda)')
INC = re.compile(r'#include\s*[<"]prism/(\w+)/')

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
errors = []
for base in ("include/prism", "src"):
    for f in (root / base).rglob("*"):
        if f.suffix not in (".h", ".cpp", ".cuh"):
            continue
        rel = f.relative_to(root / base)
        mod = rel.parts[0]
        if mod not in RANK:
            continue
        text = f.read_text(errors="replace")
        for m in INC.finditer(text):
            dep = m.group(1)
            if dep in RANK and RANK[dep] > RANK[mod]:
                errors.append(f"{f}: module '{mod}' includes upward module '{dep}'")
        if base == "include/prism":
            for line in text.splitlines():
                if FORBIDDEN_PUBLIC.search(line):
                    errors.append(f"{f}: public header includes a private dependency: {line.strip()}")
for f in (root / "kernels").rglob("*"):
    if f.suffix in (".cu", ".cuh", ".h") and re.search(r'#include\s*[<"](ATen|torch)/', f.read_text()):
        errors.append(f"{f}: kernels/ must not include torch headers")
for e in errors:
    print(e)
print(f"layering: {len(errors)} violation(s)")
sys.exit(1 if errors else 0)
