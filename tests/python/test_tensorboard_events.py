#!/usr/bin/env python3
"""prism's hand-encoded TensorBoard events read back by TensorBoard (CTest `py_test_tensorboard_events`).

prism::train::MetricsWriter writes TFRecord-framed `tensorflow.Event` protobufs without a protobuf
dependency (src/train/metrics.cpp); this checks them with TensorBoard's own reader.

Environment: PRISM_BIN  = <build>/bin; the C++ writer is the GoogleTest
                          MetricsTensorBoard.WritesRunForPython in <build>/tests/test_train
             PRISM_TEST_TRAIN (optional) = path of that test binary instead.

The writer is run twice into one directory (a run and its resumption), each run logging steps 1..3
with train/loss = 3 - 0.5 step, train/lr = 1e-4 step, perf/tokens_per_s = 12345.5. Checks:
  1. two events files named events.out.tfevents.<time>.<host>.<pid>;
  2. EventAccumulator (which verifies the record CRCs) lists exactly the three scalar tags, each with
     steps [1, 2, 3, 1, 2, 3], values equal to the float32 of the logged doubles, and wall times
     inside the time the writers ran;
  3. a copy with one flipped payload bit loses that record (the reader does verify the CRCs);
  4. metrics.jsonl holds the same six records, exact in float64.
Prints one line per check and ends with `N passed, M failed`.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

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


def writer_binary():
    explicit = os.environ.get("PRISM_TEST_TRAIN")
    if explicit:
        return explicit
    bin_dir = os.environ.get("PRISM_BIN", "")
    return os.path.join(os.path.dirname(os.path.abspath(bin_dir)), "tests", "test_train")


EXPECTED = {
    "train/loss": [3.0 - 0.5 * s for s in (1, 2, 3)],
    "train/lr": [1e-4 * s for s in (1, 2, 3)],
    "perf/tokens_per_s": [12345.5] * 3,
}


def main():
    exe = writer_binary()
    if not check(os.access(exe, os.X_OK), "writer binary exists", exe):
        finish()
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:
        check(False, "import tensorboard (tools/requirements.txt)", str(e))
        finish()

    with tempfile.TemporaryDirectory(prefix="prism_tb_") as out:
        env = dict(os.environ, PRISM_TB_OUT=out)
        t0 = time.time()
        for run in range(2):
            p = subprocess.run([exe, "--gtest_filter=MetricsTensorBoard.WritesRunForPython"], env=env,
                               capture_output=True, text=True, timeout=300)
            check(p.returncode == 0 and "[  PASSED  ] 1 test" in p.stdout, f"writer run {run + 1}",
                  "" if p.returncode == 0 else (p.stdout + p.stderr)[-2000:])
        t1 = time.time()

        files = sorted(glob.glob(os.path.join(out, "tb", "events.out.tfevents.*")))
        names_ok = len(files) == 2 and all(len(os.path.basename(f).split(".")) >= 6 for f in files)
        check(names_ok, "two events files, one per writer process", str([os.path.basename(f) for f in files]))

        acc = event_accumulator.EventAccumulator(os.path.join(out, "tb"), size_guidance={"scalars": 0})
        acc.Reload()
        tags = sorted(acc.Tags().get("scalars", []))
        check(tags == sorted(EXPECTED), "scalar tags", str(tags))
        for tag, values in EXPECTED.items():
            if tag not in tags:
                continue
            events = sorted(acc.Scalars(tag), key=lambda e: (e.wall_time, e.step))
            steps = [e.step for e in events]
            check(steps == [1, 2, 3, 1, 2, 3], f"{tag} steps", str(steps))
            want = [float(np.float32(v)) for v in values * 2]
            got = [e.value for e in events]
            check(got == want, f"{tag} values (float32)", f"got {got}, want {want}")
            walls_ok = all(t0 - 1 <= e.wall_time <= t1 + 1 for e in events)
            check(walls_ok, f"{tag} wall times within the writers' run", str([e.wall_time for e in events]))

        # The reader really checks the CRCs (so check 2 means they are right): flip a bit of the last
        # record's last float (still a valid protobuf) and that record is dropped.
        bad_dir = os.path.join(out, "corrupt")
        os.makedirs(bad_dir)
        data = bytearray(open(files[0], "rb").read())
        data[-6] ^= 0x01
        with open(os.path.join(bad_dir, os.path.basename(files[0])), "wb") as f:
            f.write(bytes(data))
        bad = event_accumulator.EventAccumulator(bad_dir, size_guidance={"scalars": 0})
        bad.Reload()
        check([e.step for e in bad.Scalars("train/loss")] == [1, 2], "a record with a wrong CRC is rejected")

        with open(os.path.join(out, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        check([r["step"] for r in records] == [1, 2, 3, 1, 2, 3], "jsonl steps", str([r["step"] for r in records]))
        for tag, values in EXPECTED.items():
            got = [r.get(tag) for r in records]
            check(got == values * 2, f"jsonl {tag} (float64, exact)", f"got {got}")
        check(all(list(r)[:2] == ["step", "time"] for r in records), "jsonl keys start with step, time")
    finish()


if __name__ == "__main__":
    main()
