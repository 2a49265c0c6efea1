#!/bin/sh
# Rebuilds the embedded models with lnlens itself (`make models`): gpt2-tiny trained from random
# weights on corpus/train.txt, then gpt2-tiny-lnfree (`remove-ln`) and gpt2-tiny-vanilla
# (`remove-ln --keep-ln`, the same fine-tuning with LayerNorm kept), all seeded, stored as F16;
# then the loss table on corpus/heldout.txt, DLA on held-out text and the IOI and topic prompts, and the
# task check of models/README.md ("Tasks").
# Everything is recorded in $DB (default results/models.sqlite). Usage: scripts/models/make_models.sh [BIN]
# SKIP_TRAIN=1 keeps $OUT/gpt2-tiny and rebuilds only its two twins and the tables.
set -eu
BIN=${1:-.build/release/lnlens}
DB=${DB:-results/models.sqlite}
OUT=${OUT:-models}
TRAIN_STEPS=${TRAIN_STEPS:-300}
REMOVE_STEPS=${REMOVE_STEPS:-100}
REMOVE_BATCH=${REMOVE_BATCH:-4096}
mkdir -p "$(dirname "$DB")"
common="--corpus corpus/train.txt --seq-len 128 --micro-batch 8 --dtype f16 --db $DB --force"
# The committed twins were made before remove-ln took the companion's numerics as its defaults
# (σ per micro-batch, EOT targets masked, the aux target without BOS/EOT, decay on the fake LN
# weights); these options give the fine-tuning they were made with.
numerics="--sigma-update step --no-mask-eot-targets --aux-target all --no-decay-ln-weights"
start=$(date +%s)
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  echo "== train gpt2-tiny: $TRAIN_STEPS steps of 8192 tokens, lr 3e-3 cosine to 3e-4, seed 1"
  "$BIN" train --init scripts/models/gpt2-tiny.init.json $common --batch-tokens 8192 --steps "$TRAIN_STEPS" \
    --lr 3e-3 --min-lr 3e-4 --warmup 30 --seed 1 --out "$OUT/gpt2-tiny"
fi
echo "== remove-ln gpt2-tiny -> gpt2-tiny-lnfree: $REMOVE_STEPS steps of $REMOVE_BATCH tokens, the paper's schedule scaled to 4 layers (last removal at step 48), seed 2"
"$BIN" remove-ln "$OUT/gpt2-tiny" $common $numerics --batch-tokens "$REMOVE_BATCH" --steps "$REMOVE_STEPS" --seed 2 --out "$OUT/gpt2-tiny-lnfree"
echo "== remove-ln --keep-ln gpt2-tiny -> gpt2-tiny-vanilla: the same fine-tuning, LayerNorm kept"
"$BIN" remove-ln "$OUT/gpt2-tiny" --keep-ln $common $numerics --batch-tokens "$REMOVE_BATCH" --steps "$REMOVE_STEPS" --seed 2 \
  --out "$OUT/gpt2-tiny-vanilla"
trained=$(date +%s)
# Each folder's README (written over by --force) from scripts/models/readme/.
for m in gpt2-tiny gpt2-tiny-lnfree gpt2-tiny-vanilla; do cp "scripts/models/readme/$m.md" "$OUT/$m/README.md"; done
echo "== held-out loss (corpus/heldout.txt, windows of 128)"
"$BIN" eval "$OUT/gpt2-tiny" "$OUT/gpt2-tiny-vanilla" "$OUT/gpt2-tiny-lnfree" --text corpus/heldout.txt --db "$DB"
echo "== DLA vs the exact direct effect on held-out text and on the IOI prompts"
"$BIN" dla --model "$OUT/gpt2-tiny" --model "$OUT/gpt2-tiny-lnfree" --text corpus/heldout.txt --max-tokens 8192 --db "$DB"
"$BIN" dla --model "$OUT/gpt2-tiny" --model "$OUT/gpt2-tiny-lnfree" --prompts prompts/ioi.jsonl --db "$DB"
"$BIN" dla --model "$OUT/gpt2-tiny" --model "$OUT/gpt2-tiny-lnfree" --prompts prompts/topic.jsonl --db "$DB"
echo "== task check: does each model do the task? (patch with BOS at resid_pre, read by scripts/models/task_check.py)"
for task in topic ioi paper_ioi greater-than; do
  "$BIN" patch --model "$OUT/gpt2-tiny" --model "$OUT/gpt2-tiny-lnfree" --model "$OUT/gpt2-tiny-vanilla" \
    --prompts "prompts/$task.jsonl" --prepend-bos --sites resid_pre --methods activation --json --db "$DB" \
    | python3 scripts/models/task_check.py "$task"
done
echo "== training took $((trained - start)) s; everything $(( $(date +%s) - start )) s"
