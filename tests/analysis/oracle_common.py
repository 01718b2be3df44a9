"""What the analysis-side oracles (oracle_analysis.py, oracle_merge.py) share: the check ledger and
where prism-train and the source tree are (PRISM_BIN, PRISM_SOURCE)."""

import os
import sys

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


BIN = os.environ.get("PRISM_BIN", "build/bin")
SRC = os.environ.get("PRISM_SOURCE", os.path.join(os.path.dirname(__file__), "..", ".."))
PRISM = os.path.join(BIN, "prism-train")
