#!/usr/bin/env bash
# tools/launch.sh: a small torchrun for prism. Starts N local ranks of a command with the torchrun
# environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and
# supervises them.
#
#   tools/launch.sh --nproc N [--nnodes M --node-rank R --master-addr HOST --master-port PORT] -- CMD [ARGS...]
#
#   tools/launch.sh --nproc 2 -- build/bin/prism-dist-selftest all                 # CPU, tcp backend
#   tools/launch.sh --nproc 8 -- build/bin/prism-train mid --config configs/mid/x.yaml
#   (node k of M)  tools/launch.sh --nproc 8 --nnodes M --node-rank k --master-addr node0 -- ...
#
# Behaviour (why it exists instead of a for-loop with `&`):
# - every output line is prefixed with "[rank k] " (stdout and stderr both go to stdout);
# - if any rank exits non-zero, the others are sent SIGTERM (SIGKILL after --kill-grace seconds)
#   and the launcher exits with that rank's code: a dead rank never leaves a job hanging in a
#   collective until its timeout;
# - SIGTERM / SIGINT to the launcher are forwarded to every rank (the trainer checkpoints on
#   SIGTERM) and the launcher waits for them to finish; a second signal kills them.
# Exit code: the first failing rank's code (128+n if it died of signal n), else 0.
#
# torchrun works unchanged instead of this script, since prism reads the same variables:
#   torchrun --no-python --nproc-per-node N build/bin/prism-train mid --config ...
# Needs bash >= 4.3 (wait -n).
set -uo pipefail

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

nproc=1
nnodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29500
kill_grace=10
while (($#)); do
  case "$1" in
    --nproc | --nproc-per-node) nproc="${2:?}"; shift 2 ;;
    --nnodes) nnodes="${2:?}"; shift 2 ;;
    --node-rank) node_rank="${2:?}"; shift 2 ;;
    --master-addr) master_addr="${2:?}"; shift 2 ;;
    --master-port) master_port="${2:?}"; shift 2 ;;
    --kill-grace) kill_grace="${2:?}"; shift 2 ;;
    -h | --help) usage ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option '$1' (the command goes after --)" >&2; usage ;;
  esac
done
(($#)) || { echo "launch.sh: no command given (put it after --)" >&2; usage; }
for v in nproc nnodes node_rank master_port kill_grace; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "launch.sh: --${v//_/-} must be a non-negative integer, got '${!v}'" >&2; exit 2; }
done
((nproc >= 1 && nnodes >= 1 && node_rank < nnodes)) ||
  { echo "launch.sh: need --nproc >= 1, --nnodes >= 1 and --node-rank < --nnodes" >&2; exit 2; }

log() { printf '[launch] %s\n' "$*" >&2; }

# Job control: each rank runs in its own process group, so a signal reaches the rank and its
# children but not the launcher, and a terminal's Ctrl-C reaches only the launcher (which forwards it).
set -m

world=$((nproc * nnodes))
pgids=()        # process group of each local rank's pipeline (its leader's pid)
declare -A rank_of=()  # pid that `wait -n -p` reports (the pipeline's last process) -> rank

signal_all() {  # signal_all SIG: every rank's process group
  local g
  for g in "${pgids[@]}"; do kill -s "$1" -- "-$g" 2>/dev/null; done
}

signals=0
# shellcheck disable=SC2317  # invoked through trap
on_signal() {
  signals=$((signals + 1))
  if ((signals == 1)); then
    log "got SIG$1: forwarding it to all ranks"
    signal_all "$1"
  else
    log "got SIG$1 again: killing all ranks"
    signal_all KILL
  fi
}
# Installed before the ranks start, so no signal can orphan them; children get default handlers.
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

for ((i = 0; i < nproc; i++)); do
  ((signals == 0)) || break  # told to stop while starting: do not start more ranks
  rank=$((node_rank * nproc + i))
  # The prefixer ignores SIGTERM/SIGINT (ignored dispositions survive exec) so that a rank's last
  # words — e.g. "checkpoint saved" after SIGTERM — still get printed.
  RANK=$rank WORLD_SIZE=$world LOCAL_RANK=$i LOCAL_WORLD_SIZE=$nproc \
    MASTER_ADDR=$master_addr MASTER_PORT=$master_port "$@" </dev/null 2>&1 |
    (trap '' TERM INT; exec sed -u "s/^/[rank $rank] /") &
  rank_of[$!]=$rank
  pgids+=("$(jobs -p %%)")
done
# The groups exist now; without monitor mode bash prints no "[1]+ Done ..." job notices.
set +m

# `wait -n -p` (bash >= 5.1) tells which rank ended; older bash only gets its exit code.
has_wait_p=0
((BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1))) && has_wait_p=1

status=0
killer=
remaining=${#pgids[@]}
while ((remaining > 0)); do
  before=$signals
  pid=
  # (stderr: bash's own "Killed ..." notices for ranks that died of a signal)
  if ((has_wait_p)); then wait -n -p pid 2>/dev/null; else wait -n 2>/dev/null; fi
  rc=$?
  pid=${pid:-}  # a signal interrupting wait leaves it unset
  if ((rc == 127)) && [[ -z "$pid" ]] && ! jobs -rp | grep -q .; then
    break  # nothing left to wait for
  fi
  if ((signals != before)) && [[ -z "$pid" ]]; then
    continue  # interrupted by a trapped signal, not ended by a rank
  fi
  remaining=$((remaining - 1))
  who="a rank"
  [[ -n "$pid" && -n "${rank_of[$pid]:-}" ]] && who="rank ${rank_of[$pid]}"
  if ((rc != 0 && status == 0)); then
    status=$rc
    if ((remaining > 0 && signals == 0)); then
      log "$who exited with code $rc: terminating the other $remaining rank(s)"
      signal_all TERM
      # Escalate if they do not stop (e.g. ignore SIGTERM, or checkpoint for too long).
      (trap 'kill $sleeper 2>/dev/null; exit 0' TERM; sleep "$kill_grace" & sleeper=$!; wait $sleeper; signal_all KILL) &
      killer=$!
      disown "$killer" 2>/dev/null
    else
      log "$who exited with code $rc"
    fi
  fi
done
[[ -n "$killer" ]] && kill "$killer" 2>/dev/null
exit "$status"
