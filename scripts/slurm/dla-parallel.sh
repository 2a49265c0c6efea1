#!/bin/bash
# The same sharded `lnlens dla` on one big machine with GNU parallel instead of Slurm: N shards
# run as N processes (at most -j at a time), each into its own SQLite file, then they are merged.
#
#   scripts/slurm/dla-parallel.sh -n 8 -j 8 -o results/ioi-run -- --prompts prompts/ioi.jsonl
#
# Options before `--`: -n shards, -j concurrent processes (default: the number of cores), -o
# output folder (shard-I.sqlite, logs/, merged.sqlite); everything after `--` goes to `lnlens dla`
# (not --db or --shard: each process gets its own).
# Each process uses OPENBLAS_NUM_THREADS threads (default 1). LNLENS may name the executable.
# Needs GNU parallel (Debian: apt-get install parallel).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
shards=4 jobs=$(nproc) outdir=""
while getopts "n:j:o:h" opt; do
  case $opt in
    n) shards=$OPTARG ;;
    j) jobs=$OPTARG ;;
    o) outdir=$OPTARG ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -n "$outdir" ] || { echo "dla-parallel.sh: give the output folder with -o DIR" >&2; exit 2; }
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "dla-parallel.sh: -n $shards: give a positive number of shards" >&2; exit 2; }
[ $# -gt 0 ] || { echo "dla-parallel.sh: give the dla arguments after --, e.g. -- --prompts prompts/ioi.jsonl" >&2; exit 2; }
for a in "$@"; do
  case $a in --db|--db=*|--shard|--shard=*|--resume|--resume=*)
    echo "dla-parallel.sh: $a is set per process; leave it out" >&2; exit 2 ;;
  esac
done
command -v parallel >/dev/null || { echo "dla-parallel.sh: GNU parallel is not installed (apt-get install parallel)" >&2; exit 2; }

if [ -z "${LNLENS:-}" ]; then
  if [ -x "$here/../../.build/release/lnlens" ]; then LNLENS=$(cd "$here/../.." && pwd)/.build/release/lnlens
  else LNLENS=$(command -v lnlens || true); fi
fi
[ -n "$LNLENS" ] && [ -x "$LNLENS" ] || { echo "dla-parallel.sh: no lnlens executable: run 'make build' or set LNLENS" >&2; exit 2; }

mkdir -p "$outdir/logs"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
# -q keeps every dla argument one word; shard I's output goes to logs/dla-I (stderr: logs/dla-I.err);
# --joblog lists each shard's exit status and time.
echo "running $shards shards, $jobs at a time: $LNLENS dla $* --shard I/$shards --db $outdir/shard-I.sqlite"
seq 0 $((shards - 1)) | parallel -q -j "$jobs" --halt soon,fail=1 --joblog "$outdir/logs/parallel.log" \
  --results "$outdir/logs/dla-{}" "$LNLENS" dla "$@" --shard "{}/$shards" --db "$outdir/shard-{}.sqlite" || {
  echo "dla-parallel.sh: a shard failed; see $outdir/logs/parallel.log and $outdir/logs/dla-*.err" >&2
  echo "re-run only what failed with: parallel --retry-failed --joblog $outdir/logs/parallel.log" >&2
  exit 1
}
"$LNLENS" merge "$outdir/merged.sqlite" "$outdir"/shard-*.sqlite
