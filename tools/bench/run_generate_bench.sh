#!/usr/bin/env bash
# CPU generation throughput, prism (`prism-train generate`, the rollout engine) vs transformers
# `generate`, side by side on the same checkpoint, prompt ids and thread count (issue 14).
#
#   tools/bench/run_generate_bench.sh [threads] [repeats]        (defaults: nproc, 2)
#
# Models: smollm2 = SmolLM2-135M-Instruct, the real checkpoint (tests/fixtures/make_smollm2.py,
# cached under ~/.cache/prism/models); hybrid100m = the Nemotron-H-style ~100M config of
# bench_forward_hf.py, random init saved by transformers (fp32). Cases (bench_generate_hf.py):
#   a  batch 1 greedy, 32-token prompt, 128 new tokens
#   b  8 prompts x 8 samples, temperature 1, 256 new tokens, stopping at EOS (SmolLM2's chat
#      prompts end at <|im_end|>, so lengths vary; the random hybrid rarely draws its EOS)
# Both sides read the same prompt ids (bench_generate_hf.py prompts -> {"ids": [...]} lines;
# prism: --field ids) and count generated tokens up to and including the EOS. Each run is its own
# process under /usr/bin/time (peak RSS, whole process: weights + state); the sides alternate
# (HF, prism, then prism, HF, ...) so a slow phase of a shared machine hits both. Medians shown.
# prism's time is the engine's own (its "N generated tokens in S s" summary on stderr: the
# generate call, prefill included, loading excluded, like the HF side's timed generate()); if that
# line is missing, the wall time minus a --max-new-tokens 1 run of the same command is used.
# Memory read bandwidth (tools/bench/bench_membw.c, same thread count) gives case (a)'s bound:
# tokens/s <= bandwidth / weight bytes read per token.
# When build/bin/prism-train has no `generate --prompts` (older branch), only the transformers side
# and the bandwidth run; the table says "n/a" for prism. When it has `--decode-weights`, prism also
# runs with `--decode-weights off` (the matrices multiplied in their [out, in] parameter layout, as
# before the decode weight copies), interleaved with the other two: the copies' gain under the same
# load ("prism, copies off" column).
# Environment:
#   PRISM_BUILD_DIR       build tree with bin/prism-train (default: build)
#   PRISM_BENCH_MODELS    default "smollm2 hybrid100m"
#   PRISM_BENCH_CASES     default "a b"
#   PRISM_BENCH_OUT       also write results.jsonl + table.md there
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
threads="${1:-$(nproc)}"
repeats="${2:-2}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
res="$tmp/results.jsonl"
: >"$res"
prism_bin="$build/bin/prism-train"
have_prism=0
if [[ -x "$prism_bin" ]] && "$prism_bin" generate --help 2>/dev/null | grep -q -- "--prompts"; then
  have_prism=1
else
  echo "run_generate_bench: $prism_bin has no 'generate --prompts': transformers side only" >&2
fi
have_copies=0
((have_prism)) && "$prism_bin" generate --help 2>/dev/null | grep -q -- "--decode-weights" && have_copies=1

# Case parameters for the prism CLI (bench_generate_hf.py CASES holds the same numbers); $2
# overrides the new-token limit.
case_flags() {
  case "$1" in
    a) echo "--n 1 --temperature 0 --max-new-tokens ${2:-128} --slots 1" ;;
    b) echo "--n 8 --temperature 1 --top-p 1 --max-new-tokens ${2:-256} --slots 64" ;;
  esac
}

# Runs "$@" under /usr/bin/time; prints the peak RSS in MB and wall seconds ("rss wall").
timed() {
  local log="$1"; shift
  /usr/bin/time -f "%M %e" -o "$tmp/time" "$@" >"$log.out" 2>"$log.err"
  local rc=$?
  read -r kb wall <"$tmp/time" || { kb=0; wall=0; }
  [[ $rc -eq 0 ]] || { echo "run_generate_bench: failed ($rc): $* (see below)" >&2; tail -n 5 "$log.err" >&2; }
  echo "$((kb / 1024)) $wall $rc"
}

hf() {  # model dir case
  local name="$1" dir="$2" c="$3"
  read -r rss wall rc < <(timed "$tmp/hf" "$py" "$here/tools/bench/bench_generate_hf.py" run --model "$dir" \
    --prompts "$tmp/$name.$c.jsonl" --case "$c" --threads "$threads" --json)
  [[ $rc -eq 0 ]] || return 0
  tail -n 1 "$tmp/hf.out" | "$py" -c 'import json,sys; d=json.loads(sys.stdin.read()); d.update(side="transformers", model=sys.argv[1], peak_rss_mb=float(sys.argv[2])); print(json.dumps(d))' \
    "$name" "$rss" >>"$res"
}

prism() {  # model dir case [off: --decode-weights off]
  local name="$1" dir="$2" c="$3" side=prism extra=()
  if [[ "${4:-}" == off ]]; then side=prism_copies_off; extra=(--decode-weights off); fi
  # shellcheck disable=SC2046
  read -r rss wall rc < <(timed "$tmp/prism" "$prism_bin" generate "$dir" --prompts "$tmp/$name.$c.jsonl" --field ids \
    $(case_flags "$c") --seed 0 --threads "$threads" "${extra[@]}" -o "$tmp/prism.$c.out.jsonl")
  [[ $rc -eq 0 ]] || return 0
  local base=""
  if ! grep -Eq '[0-9]+ generated tokens in [0-9.]+ s' "$tmp/prism.err"; then
    # No engine summary: the fixed cost (load + prefill + 1 token) from a 1-token run, subtracted.
    # shellcheck disable=SC2046
    read -r _ base _ < <(timed "$tmp/prism1" "$prism_bin" generate "$dir" --prompts "$tmp/$name.$c.jsonl" --field ids \
      $(case_flags "$c" 1) --seed 0 --threads "$threads" -o "$tmp/prism1.out.jsonl")
  fi
  "$py" - "$side" "$name" "$c" "$threads" "$rss" "$wall" "${base:-}" "$tmp/prism.err" "$tmp/prism.$c.out.jsonl" >>"$res" <<'EOF'
import json, re, sys
side, name, case, threads, rss, wall, base, err, out = sys.argv[1:]
rows = [json.loads(l) for l in open(out) if l.strip()]
lens = [r.get("completion_tokens", len(r.get("token_ids", []))) for r in rows]
fin = sum(1 for r in rows if r.get("finish_reason") == "stop")
log = open(err).read()
m = re.search(r"(\d+) generated tokens in ([0-9.]+) s", log)
wc = re.search(r"weight copies ([0-9.]+) MB \(([0-9.]+) s\)", log)
if m:
    gen, sec, timing = int(m.group(1)), float(m.group(2)), "engine"
else:
    gen, sec, timing = sum(lens), float(wall) - float(base), "wall minus 1-token run"
print(json.dumps({"side": side, "model": name, "case": case, "threads": int(threads), "generated_tokens": gen,
                  "seconds": sec, "tokens_per_s": round(gen / sec, 2), "mean_completion": round(sum(lens) / len(lens), 1),
                  "finished_eos": fin, "sequences": len(rows), "peak_rss_mb": float(rss), "timing": timing,
                  "weight_copy_mb": float(wc.group(1)) if wc else None, "weight_copy_s": float(wc.group(2)) if wc else None}))
EOF
}

# Memory read bandwidth at the same thread count.
cc -O3 -march=native -fopenmp "$here/tools/bench/bench_membw.c" -o "$tmp/membw"
"$tmp/membw" 1024 "$threads" 5 | "$py" -c 'import json,sys; d=json.loads(sys.stdin.read()); d["side"]="membw"; print(json.dumps(d))' >>"$res"

for name in ${PRISM_BENCH_MODELS:-smollm2 hybrid100m}; do
  case "$name" in
    smollm2) dir="$("$py" "$here/tests/fixtures/make_smollm2.py" | tail -n 1)"; tokens=real ;;
    *) dir="$tmp/$name"; tokens=random
       "$py" "$here/tools/bench/bench_forward_hf.py" --config "$name" --save "$dir" >/dev/null ;;
  esac
  for c in ${PRISM_BENCH_CASES:-a b}; do
    "$py" "$here/tools/bench/bench_generate_hf.py" prompts --model "$dir" --case "$c" --tokens "$tokens" \
      --out "$tmp/$name.$c.jsonl" >/dev/null
    for ((r = 0; r < repeats; ++r)); do
      if ((r % 2 == 0)); then
        hf "$name" "$dir" "$c"; ((have_prism)) && prism "$name" "$dir" "$c"
        ((have_copies)) && prism "$name" "$dir" "$c" off
      else
        ((have_copies)) && prism "$name" "$dir" "$c" off
        ((have_prism)) && prism "$name" "$dir" "$c"; hf "$name" "$dir" "$c"
      fi
    done
  done
done

"$py" - "$res" >"$tmp/table.md" <<'EOF'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bw = statistics.median(r["read_gb_per_s"] for r in rows if r["side"] == "membw")
by = collections.defaultdict(list)
for r in rows:
    if r["side"] != "membw":
        by[(r["model"], r["case"], r["side"])].append(r)
keys = list(dict.fromkeys((r["model"], r["case"]) for r in rows if r["side"] != "membw"))
med = lambda k, side, f: statistics.median(x[f] for x in by[k + (side,)]) if by[k + (side,)] else None
fmt = lambda v, p=1: "n/a" if v is None else f"{v:.{p}f}"
threads = next(r["threads"] for r in rows if r["side"] != "membw")
print(f"Memory read bandwidth ({threads} threads): {bw:.1f} GB/s\n")
print("| model | case | transformers tok/s | prism tok/s | prism / HF | prism, copies off tok/s | off / HF "
      "| HF peak RSS MB | prism peak RSS MB (copies off) | mean completion HF / prism | runs HF + prism + off |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k in keys:
    h, p, o = (med(k, s, "tokens_per_s") for s in ("transformers", "prism", "prism_copies_off"))
    ratio = lambda a: f"{a / h:.2f}x" if h and a else "n/a"
    print(f"| {k[0]} | {k[1]} | {fmt(h)} | {fmt(p)} | {ratio(p)} | {fmt(o)} | {ratio(o)} "
          f"| {fmt(med(k, 'transformers', 'peak_rss_mb'), 0)} | {fmt(med(k, 'prism', 'peak_rss_mb'), 0)} "
          f"({fmt(med(k, 'prism_copies_off', 'peak_rss_mb'), 0)}) | {fmt(med(k, 'transformers', 'mean_completion'))} / "
          f"{fmt(med(k, 'prism', 'mean_completion'))} | {len(by[k + ('transformers',)])} + {len(by[k + ('prism',)])} + "
          f"{len(by[k + ('prism_copies_off',)])} |")
print()
print("Case (a) against the bandwidth bound (batch-1 decoding reads every weight once per token):\n")
print("| model | weight MB read per token | bound tok/s | transformers (% of bound) | prism (% of bound) "
      "| prism, copies off (% of bound) |")
print("|---|---|---|---|---|---|")
for k in keys:
    if k[1] != "a" or not by[k + ("transformers",)]:
        continue
    wb = by[k + ("transformers",)][0]["weight_bytes_per_token"]
    bound = bw * 1e9 / wb
    h, p = med(k, "transformers", "tokens_per_s"), med(k, "prism", "tokens_per_s")
    pct = lambda v: "n/a" if v is None else f"{v:.1f} ({100 * v / bound:.0f} %)"
    print(f"| {k[0]} | {wb / 1e6:.0f} | {bound:.1f} | {pct(h)} | {pct(p)} | {pct(med(k, 'prism_copies_off', 'tokens_per_s'))} |")
EOF
cat "$tmp/table.md"
if [[ -n "${PRISM_BENCH_OUT:-}" ]]; then
  mkdir -p "$PRISM_BENCH_OUT" && cp "$res" "$tmp/table.md" "$PRISM_BENCH_OUT/"
fi
