#!/usr/bin/env bash
# Data-parallel training speed (docs/bench.md, "Data-parallel training"): `lnlens train` of a
# freshly initialised GPT-2 of CONFIG on corpus/train.txt, on 1 process and on K ranks of
# `mpirun` (1 OpenBLAS thread per rank), STEPS steps of BATCH tokens in micro-batches of MICRO
# sequences of SEQ tokens. Prints per K the median step time of steps 2… (step 1 allocates), the
# tokens/s, rank 0's MPI_Allreduce seconds per step (waiting for the slowest rank included), and
# `cores`: the job's CPU seconds over its wall seconds (below K when other work takes the cores).
#   scripts/bench-mpi.sh [LNLENS] [CONFIG.json]      (env: KS="1 2" STEPS SEQ BATCH MICRO ALLREDUCE)
# ALLREDUCE="whole buckets" times each `--allreduce` mode in turn (default: whole) for K > 1.
# Default CONFIG: GPT-2 small's shape. K = 1 is `mpirun -n 1`, the same computation as no mpirun.
set -euo pipefail
LNLENS=${1:-.build/release/lnlens}
CONFIG=${2:-}
ALLREDUCE=${ALLREDUCE:-whole}; KS=${KS:-1 2}; STEPS=${STEPS:-6}; SEQ=${SEQ:-128}; BATCH=${BATCH:-2048}; MICRO=${MICRO:-4}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if [ -z "$CONFIG" ]; then
  CONFIG=$dir/config.json
  echo '{"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}' > "$CONFIG"
fi
export OPENBLAS_NUM_THREADS=1
"$LNLENS" --version
echo "cores $(nproc); $CONFIG; $STEPS steps of $BATCH tokens (seq $SEQ, micro-batch $MICRO)"
for k in $KS; do
for mode in $ALLREDUCE; do
  [ "$k" = 1 ] && [ "$mode" != "${ALLREDUCE%% *}" ] && continue
  args=(train --init "$CONFIG" --corpus corpus/train.txt --seq-len "$SEQ" --batch-tokens "$BATCH" --micro-batch "$MICRO"
        --steps "$STEPS" --warmup 1 --out "$dir/out-$k-$mode" --db "$dir/k$k-$mode.sqlite" --log-every 1000 --allreduce "$mode")
  TIMEFORMAT='%R %U %S'
  { time mpirun --allow-run-as-root --oversubscribe -n "$k" "$LNLENS" "${args[@]}" > "$dir/log-$k-$mode" 2>&1; } 2> "$dir/time-$k-$mode"
  log=$(cat "$dir/log-$k-$mode")
  read -r real user sys < "$dir/time-$k-$mode"
  allreduce=$(printf '%s\n' "$log" | sed -n 's/.*rank 0 spent \([0-9.]*\) s in MPI_Allreduce.*/\1/p')
  python3 - "$dir/k$k-$mode.sqlite" "$k $mode" "$BATCH" "$STEPS" "${allreduce:-0}" "$real" "$user" "$sys" <<'PY'
import sqlite3, statistics, sys
db, k, batch, steps, allreduce = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
real, cpu = float(sys.argv[6]), float(sys.argv[7]) + float(sys.argv[8])
secs = [r[0] for r in sqlite3.connect(db).execute("select seconds from train_steps where run_id = 1 order by step")][1:]
m = statistics.median(secs)
print(f"K={k}: median step {m:.3f} s over {len(secs)} steps, {batch / m:.1f} tokens/s, allreduce {allreduce / steps:.4f} s per step, cores {cpu / real:.2f} (CPU s / wall s of the whole run)")
PY
done
done
