#!/bin/bash
# Tests the Slurm scripts on a real Slurm: a one-node cluster on this machine (slurmctld + slurmd
# from Debian's slurm-wlm, authenticated by munge), the embedded models' DLA on prompts/ioi.jsonl
# as an array of 4 shards plus the dependent merge (submit-dla.sh), and the same through Slurm's
# own array variables (--array=1-4, no --shard); each merged database is compared with an
# unsharded run, row for row; then a 2-task data-parallel remove-ln submitted with remove-ln.sbatch,
# checked against one process (losses, weights). Prints PASS or FAIL with the numbers; stops the
# daemons it started. LNLENS=PATH uses that (MPI) build instead of running make build; LAUNCH=
# mpirun or SRUN_MPI=PLUGIN choose remove-ln.sbatch's launcher (default: srun --mpi=pmix when
# `srun --mpi=list` has it, else mpirun inside the allocation).
#
#   sudo scripts/slurm/test-local-cluster.sh        # needs root: apt-get, munged, slurmd; a few minutes
#
# Not part of `make test`. The cluster lives in a temporary folder (its own slurm.conf via
# SLURM_CONF, state, logs, ports 16817/16818); /etc/slurm is not touched. A munged already running
# is used as it is. Keep the folder for inspection with KEEP=1.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/scripts/slurm
[ "$(id -u)" = 0 ] || { echo "test-local-cluster.sh: run as root (it installs packages and starts munged, slurmctld, slurmd)" >&2; exit 2; }
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  echo "test-local-cluster.sh: a slurmctld or slurmd is already running on this machine; not starting a test cluster beside it" >&2
  exit 2
fi

work=$(mktemp -d /tmp/lnlens-slurm-test.XXXXXX)
host=$(hostname -s)
say() { echo "== $*"; }
started=()   # pids of the daemons this script started
munge_pidfile=""

cleanup() {
  status=$?
  say "stopping the daemons this script started"
  # Jobs still queued on this private cluster (only after a failure).
  [ -n "${SLURM_CONF:-}" ] && squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  if [ -n "$munge_pidfile" ] && [ -f "$munge_pidfile" ]; then kill "$(cat "$munge_pidfile")" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ] || [ $status -ne 0 ]; then echo "kept $work (slurm logs: $work/log)"; else rm -rf "$work"; fi
  exit $status
}
trap cleanup EXIT

say "packages: slurm-wlm, munge, sqlite3"
missing=""
for p in slurm-wlm munge sqlite3; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
echo "slurm $(dpkg-query -W -f='${Version}' slurm-wlm), munge $(dpkg-query -W -f='${Version}' munge)"

say "munge"
if ! pgrep -x munged >/dev/null; then
  [ -f /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged
  munge_pidfile=/run/munge/munged.pid
fi
munge -n | unmunge >/dev/null && echo "munge credentials work"

say "one-node cluster on $host (CPUs=2) in $work"
mkdir -p "$work/etc" "$work/state" "$work/spool" "$work/log"
mem=$(awk '/MemTotal/ { print int($2 / 1024) - 1024 }' /proc/meminfo)
cat > "$work/etc/slurm.conf" <<CONF
ClusterName=lnlens-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$work/etc/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" >"$work/log/slurmctld.out" 2>&1 &
started+=($!)
sleep 1
slurmd -D -N "$host" -f "$SLURM_CONF" >"$work/log/slurmd.out" 2>&1 &
started+=($!)
for i in $(seq 60); do
  state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)
  case $state in
    idle*) break ;;
    drain*|down*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
  esac
  [ "$i" = 60 ] && { echo "the node did not come up (state '$state'); see $work/log" >&2; exit 1; }
  sleep 1
done
sinfo

if [ -n "${LNLENS:-}" ]; then
  say "lnlens: $LNLENS (given)"
else
  say "lnlens (release build, with MPI when mpicc is found: make build)"
  (cd "$repo" && nice -n 10 make build 2>&1 | tail -1)
  LNLENS=$repo/.build/release/lnlens
fi
export LNLENS
cd "$repo"

# One prompt per forward pass and one OpenBLAS thread everywhere (the array tasks get one CPU
# each): then every prompt's numbers are bit for bit the same in any shard.
dla_args=(--prompts prompts/ioi.jsonl --batch-size 1)

say "reference: one unsharded run"
OPENBLAS_NUM_THREADS=1 "$LNLENS" dla "${dla_args[@]}" --db "$work/reference.sqlite" | tail -1

say "array A: submit-dla.sh -n 4 (shard from SHARDS: --shard \$SLURM_ARRAY_TASK_ID/4)"
submitted=$("$here/submit-dla.sh" -n 4 -o "$work/a" -- "${dla_args[@]}")
echo "$submitted"
jobs_a=$(echo "$submitted" | sed -n 's/^submitted array job \([0-9]*\) .*/\1/p')
merge_a=$(echo "$submitted" | sed -n 's/^and merge job \([0-9]*\) .*/\1/p')

say "array B: sbatch --array=1-4 without SHARDS (lnlens reads SLURM_ARRAY_TASK_ID/_MIN/_COUNT)"
mkdir -p "$work/b/logs"
printf '%s\0' "${dla_args[@]}" > "$work/b/dla.args"
jobs_b=$(OUTDIR=$work/b SHARDS= sbatch --parsable --array=1-4 --output="$work/b/logs/dla-%A_%a.out" "$here/dla-array.sbatch")
merge_b=$(OUTDIR=$work/b sbatch --parsable --dependency=afterok:"$jobs_b" --output="$work/b/logs/merge-%j.out" "$here/merge.sbatch")
echo "array job $jobs_b, merge job $merge_b"
squeue

say "waiting for jobs $jobs_a $merge_a $jobs_b $merge_b"
for i in $(seq 900); do
  left=$(squeue -h -j "$jobs_a,$merge_a,$jobs_b,$merge_b" 2>/dev/null | wc -l)
  [ "$left" = 0 ] && break
  [ "$i" = 900 ] && { echo "jobs still queued after 15 minutes" >&2; squeue; exit 1; }
  sleep 1
done
# One line per job or array task (MinJobAge keeps finished jobs visible to scontrol).
states=$(for j in "$jobs_a" "$merge_a" "$jobs_b" "$merge_b"; do
  scontrol -o show job "$j" | awk '{ for (i = 1; i <= NF; i++)
    if ($i ~ /^(JobId|ArrayJobId|ArrayTaskId|JobState|ExitCode)=/) printf "%s ", $i; print "" }'
done | sort -V)
echo "$states" | sed 's/^/  /'
echo "array B task 3 said: $(grep -h 'note:' "$work"/b/logs/dla-*_3.out || true)"

# Compares a merged database with the reference, run by run (matched by model hash).
failures=0
compare() {
  local merged=$1 name=$2
  say "compare $name: $merged against the unsharded run"
  if [ ! -f "$merged" ]; then echo "FAIL $name: no merged database (see $(dirname "$merged")/logs)"; failures=$((failures + 1)); return; fi
  sqlite3 -readonly "$merged" "SELECT id, model_hash FROM runs ORDER BY id" | while IFS='|' read -r id hash; do
    ref=$(sqlite3 -readonly "$work/reference.sqlite" "SELECT id FROM runs WHERE model_hash = '$hash'")
    sqlite3 -readonly -separator ' ' "$merged" "
      ATTACH '$work/reference.sqlite' AS r;
      SELECT
        (SELECT model_path FROM runs WHERE id = $id),
        (SELECT status FROM runs WHERE id = $id),
        (SELECT COUNT(*) FROM run_shards WHERE run_id = $id),
        (SELECT COUNT(*) FROM results WHERE run_id = $id),
        (SELECT COUNT(*) FROM r.results WHERE run_id = $ref),
        (SELECT COUNT(*) FROM results a JOIN r.results b ON b.run_id = $ref AND b.prompt_index = a.prompt_index
           AND b.site = a.site AND ifnull(b.layer, -1) = ifnull(a.layer, -1) AND ifnull(b.position, -1) = ifnull(a.position, -1)
           AND ifnull(b.head, -1) = ifnull(a.head, -1) AND b.quantity = a.quantity
         WHERE a.run_id = $id AND a.value = b.value),
        (SELECT ifnull(max(abs(a.value - b.value)), 0) FROM results a JOIN r.results b ON b.run_id = $ref
           AND b.prompt_index = a.prompt_index AND b.site = a.site AND ifnull(b.layer, -1) = ifnull(a.layer, -1)
           AND ifnull(b.position, -1) = ifnull(a.position, -1) AND ifnull(b.head, -1) = ifnull(a.head, -1)
           AND b.quantity = a.quantity WHERE a.run_id = $id),
        (SELECT COUNT(*) FROM summaries WHERE run_id = $id),
        (SELECT COUNT(*) FROM summaries a JOIN r.summaries b ON b.run_id = $ref AND b.scope = a.scope AND b.key = a.key
           AND b.metric = a.metric WHERE a.run_id = $id AND a.value IS b.value),
        (SELECT COUNT(*) FROM run_prompts WHERE run_id = $id),
        (SELECT COUNT(*) FROM run_prompts a JOIN r.run_prompts b ON b.run_id = $ref AND b.prompt_index = a.prompt_index
           AND b.prompt = a.prompt AND b.answer = a.answer AND b.wrong IS a.wrong AND b.n_tokens = a.n_tokens
         WHERE a.run_id = $id),
        (SELECT COUNT(*) FROM r.run_prompts WHERE run_id = $ref),
        (SELECT value FROM summaries WHERE run_id = $id AND scope = 'heads' AND key = 'all'),
        (SELECT value FROM r.summaries WHERE run_id = $ref AND scope = 'heads' AND key = 'all');"
  done > "$work/compare-$name.txt"
  while read -r model status shards rows refrows same maxdiff summ summsame prompts promptssame refprompts nmae refnmae; do
    local verdict=PASS
    [ "$status" = completed ] && [ "$shards" = 4 ] && [ "$rows" = "$refrows" ] && [ "$same" = "$rows" ] \
      && [ "$summ" = "$summsame" ] && [ "$summ" -gt 0 ] && [ "$prompts" = "$refprompts" ] && [ "$promptssame" = "$prompts" ] \
      || verdict=FAIL
    echo "$verdict $name $(basename "$model"): $status, $shards shards; results $same of $rows rows identical to the unsharded run's $refrows (max |diff| $maxdiff); summaries $summsame of $summ identical; prompts $promptssame of $prompts identical; NMAE over heads $nmae % (unsharded $refnmae %)"
    [ $verdict = PASS ] || failures=$((failures + 1))
  done < "$work/compare-$name.txt"
  [ -s "$work/compare-$name.txt" ] || { echo "FAIL $name: no runs in $merged"; failures=$((failures + 1)); }
}
compare "$work/a/merged.sqlite" "array-A"
compare "$work/b/merged.sqlite" "array-B"
echo "merge job output (array A):"
sed 's/^/  /' "$work"/a/logs/merge-*.out

if grep 'JobState=' <<<"$states" | grep -qv 'JobState=COMPLETED'; then failures=$((failures + 1)); fi

# A 2-task data-parallel remove-ln through remove-ln.sbatch (both tasks on this one node) against
# one process: per-step losses within 1e-6 relative, every weight within 1e-5 of its tensor's
# scale (the attention's key bias apart: its gradient is exactly 0, AdamW moves it by rounding noise).
mpi_remove_ln() {
  if ! "$LNLENS" --version | grep -q 'MPI: Open MPI'; then
    echo "FAIL mpi-remove-ln: $LNLENS is not built with MPI (make build finds mpicc; make setup installs Open MPI)"
    failures=$((failures + 1)); return
  fi
  head -c 20000 corpus/heldout.txt > "$work/rl-corpus.txt"
  local rl_args=(remove-ln gpt2-tiny --corpus "$work/rl-corpus.txt" --seq-len 16 --batch-tokens 128 --micro-batch 2
                 --ln2-start 1 --ln2-gap 1 --ln1qk-gap 1 --ln1v-gap 1 --steps 20 --warmup 1 --log-every 1000)
  say "mpi-remove-ln: one process"
  OPENBLAS_NUM_THREADS=1 "$LNLENS" "${rl_args[@]}" --out "$work/rl-1" --db "$work/rl-1.sqlite" | tail -1
  mkdir -p "$work/rl/logs"
  printf '%s\0' "${rl_args[@]}" --out "$work/rl-2" --db "$work/rl-2.sqlite" > "$work/rl/remove-ln.args"
  local launch=${LAUNCH:-srun}
  if [ "$launch" = srun ] && ! srun --mpi=list 2>&1 | grep -qw "${SRUN_MPI:-pmix}"; then launch=mpirun; fi
  say "mpi-remove-ln: sbatch remove-ln.sbatch, 1 node × 2 tasks, LAUNCH=$launch SRUN_MPI=${SRUN_MPI:-pmix} ($(srun --mpi=list 2>&1 | tr '\n' ' '))"
  local job
  job=$(ARGS=$work/rl/remove-ln.args LAUNCH=$launch sbatch --parsable --nodes=1 --ntasks-per-node=2 --mem-per-cpu=1G \
        --time=00:20:00 --output="$work/rl/logs/remove-ln-%j.out" "$here/remove-ln.sbatch")
  for i in $(seq 600); do
    [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
    [ "$i" = 600 ] && { echo "FAIL mpi-remove-ln: job $job still queued after 10 minutes"; scancel "$job"; failures=$((failures + 1)); return; }
    sleep 1
  done
  local state
  state=$(scontrol -o show job "$job" | grep -o 'JobState=[A-Z]* .*ExitCode=[0-9:]*' | awk '{ print $1, $NF }')
  echo "job $job: $state; its log:"
  sed 's/^/  /' "$work"/rl/logs/remove-ln-*.out | tail -8
  python3 - "$work/rl-1" "$work/rl-2" "$work/rl-1.sqlite" "$work/rl-2.sqlite" "$state" <<'PY' || failures=$((failures + 1))
import array, json, sqlite3, struct, sys
one, two, db1, db2, state = sys.argv[1:]
def losses(db):
    try: return [r[0] for r in sqlite3.connect(db).execute("select loss from train_steps where run_id = 1 order by step")]
    except sqlite3.Error: return []
def tensors(folder):
    raw = open(folder + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    out = {}
    for name, e in json.loads(raw[8:8 + n]).items():
        if name == "__metadata__": continue
        a = array.array("f"); a.frombytes(raw[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]])
        if name.endswith("attn.c_attn.bias"):
            d = len(a) // 3
            for i, part in enumerate("qkv"): out[name + "." + part] = a[i * d:(i + 1) * d]
        else: out[name] = a
    return out
l1, l2 = losses(db1), losses(db2)
loss = max((abs(a - b) / abs(a) for a, b in zip(l1, l2)), default=float("inf")) if len(l1) == len(l2) else float("inf")
try:
    t1, t2 = tensors(one), tensors(two)
    diffs = {k: max(abs(a - b) for a, b in zip(v, t2[k])) / (max(abs(x) for x in v) or 1) for k, v in t1.items()}
    weights = max(v for k, v in diffs.items() if not k.endswith(".k"))
    key = max(v for k, v in diffs.items() if k.endswith(".k"))
except (OSError, KeyError, ValueError) as e:
    weights = key = float("inf")
ok = state.startswith("JobState=COMPLETED") and len(l1) == 20 and loss <= 1e-6 and weights <= 1e-5
print(f"{'PASS' if ok else 'FAIL'} mpi-remove-ln: 2 tasks vs 1 process, {len(l2)} of {len(l1)} steps; loss max relative difference {loss:.3g}; "
      f"weights max difference {weights:.3g} of scale (key bias, no effect: {key:.3g})")
sys.exit(0 if ok else 1)
PY
}
mpi_remove_ln
if [ "$failures" = 0 ]; then
  say "PASS: 2 Slurm arrays of 4 tasks and their merges equal the unsharded run; a 2-task MPI remove-ln equals one process"
else
  say "FAIL ($failures comparison(s) failed; job states above)"
  exit 1
fi
