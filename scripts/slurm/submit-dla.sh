#!/bin/bash
# Submits a sharded `lnlens dla` to Slurm: an array of N tasks (one shard each, each writing its
# own SQLite file) and a merge job that starts once every task has succeeded.
#
#   scripts/slurm/submit-dla.sh -n 4 -o results/ioi-run -- --prompts prompts/ioi.jsonl
#   scripts/slurm/submit-dla.sh -n 50 -o results/paper -p cpu -- \
#       --model gpt2 --model schaeff/gpt2-small_LNFree300 \
#       --text pile.txt --context 512 --targets paper --max-tokens 1000
#
# Options before `--`: -n shards, -o output folder (shards, logs, merged.sqlite), -p partition,
# -t time limit per task, -c cores per task; everything after `--` goes to `lnlens dla` (not --db
# or --shard: each task gets its own). LNLENS may name the executable (default: .build/release/lnlens
# of this checkout if built, else lnlens on PATH). Extra sbatch options: SBATCH_EXTRA="--account=x".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
shards=4 outdir="" partition="" time="" cpus=""
while getopts "n:o:p:t:c:h" opt; do
  case $opt in
    n) shards=$OPTARG ;;
    o) outdir=$OPTARG ;;
    p) partition=$OPTARG ;;
    t) time=$OPTARG ;;
    c) cpus=$OPTARG ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -n "$outdir" ] || { echo "submit-dla.sh: give the output folder with -o DIR" >&2; exit 2; }
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "submit-dla.sh: -n $shards: give a positive number of shards" >&2; exit 2; }
[ $# -gt 0 ] || { echo "submit-dla.sh: give the dla arguments after --, e.g. -- --prompts prompts/ioi.jsonl" >&2; exit 2; }
for a in "$@"; do
  case $a in --db|--db=*|--shard|--shard=*|--resume|--resume=*)
    echo "submit-dla.sh: $a is set per task; leave it out" >&2; exit 2 ;;
  esac
done

if [ -z "${LNLENS:-}" ]; then
  if [ -x "$here/../../.build/release/lnlens" ]; then LNLENS=$(cd "$here/../.." && pwd)/.build/release/lnlens
  else LNLENS=$(command -v lnlens || true); fi
fi
[ -n "$LNLENS" ] && [ -x "$LNLENS" ] || { echo "submit-dla.sh: no lnlens executable: run 'make build' or set LNLENS" >&2; exit 2; }

mkdir -p "$outdir/logs"
outdir=$(cd "$outdir" && pwd)
printf '%s\0' "$@" > "$outdir/dla.args"
export OUTDIR=$outdir SHARDS=$shards LNLENS

common=()
[ -n "$partition" ] && common+=(--partition="$partition")
# shellcheck disable=SC2206
[ -n "${SBATCH_EXTRA:-}" ] && common+=($SBATCH_EXTRA)
task=("${common[@]}")
[ -n "$time" ] && task+=(--time="$time")
[ -n "$cpus" ] && task+=(--cpus-per-task="$cpus")

array=$(sbatch --parsable "${task[@]}" --array=0-$((shards - 1)) --output="$outdir/logs/dla-%A_%a.out" \
  "$here/dla-array.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable "${common[@]}" --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
  --output="$outdir/logs/merge-%j.out" "$here/merge.sbatch")
merge=${merge%%;*}

cat <<MSG
submitted array job $array ($shards tasks: shard-0 … shard-$((shards - 1)).sqlite in $outdir)
and merge job $merge (after every task succeeds) -> $outdir/merged.sqlite
check:   squeue -j $array,$merge
         sacct -j $array,$merge --format=JobID,JobName,State,Elapsed,ExitCode   (with accounting)
         tail $outdir/logs/dla-${array}_0.out
result:  $LNLENS runs --db $outdir/merged.sqlite
         $LNLENS query nmae --db $outdir/merged.sqlite
redo one failed task (then merge again): OUTDIR=$outdir SHARDS=$shards LNLENS=$LNLENS sbatch --array=2 $here/dla-array.sbatch
                                         $LNLENS merge $outdir/merged.sqlite $outdir/shard-*.sqlite
MSG
