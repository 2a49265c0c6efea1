#!/bin/sh
# `make demo`: the main jobs on the embedded trained pair (gpt2-tiny and its LN-free twin made by
# `lnlens remove-ln`), every number stored in $DB and read back from it:
# (`dla` and `patch` put <|endoftext|> first in every prompt by default, as TransformerLens does.)
#   1. DLA against the exact direct effect on prompts/topic.jsonl (sea or drawing room: a task the
#      embedded models do; the IOI sets are for real GPT-2, see models/README.md), both models, then `lnlens diff`;
#   2. activation patching against AtP and AtP* on the same prompts, both models, then `lnlens diff`;
#      then `patch --decompose` (AtP's error on the linearised variants: which nonlinearity breaks AtP);
#   2b. edge attribution (EAP, EAP-IG) on the same prompts, both models, then `lnlens circuit`: the
#      faithfulness curves of their top-n circuits and overlap@k of the two models' circuits;
#   3. the held-out loss of the three embedded models (original, vanilla fine-tuned, LN-free);
#   4. attention-sink rates and residual norms on the held-out text, and the logit lens on
#      prompts/topic.jsonl, of the three embedded models (one run per model each); the divergence
#      (compare) of the two fine-tunes from gpt2-tiny on 20 held-out windows (one run);
#   5. entropy neurons of the three (top 3 of gpt2-tiny mean-ablated, 20 held-out windows);
#   6. one HTML report of all of those runs.
# Usage: scripts/demo.sh [BIN]   (DB defaults to results/lnlens.sqlite)
set -eu
BIN=${1:-.build/release/lnlens}
DB=${DB:-results/lnlens.sqlite}
REPORT=${REPORT:-results/demo-report.html}
mkdir -p "$(dirname "$DB")" "$(dirname "$REPORT")"

# The ids of the last two completed runs of a command, oldest first.
last_two() {
  "$BIN" query --db "$DB" --csv --sql "SELECT id FROM runs WHERE command = '$1' AND status = 'completed' ORDER BY id DESC LIMIT 2" \
    | tail -n +2 | sort -n | tr '\n' ' '
}

echo "== lnlens dla: DLA vs the exact direct effect, gpt2-tiny and gpt2-tiny-lnfree, prompts/topic.jsonl"
"$BIN" dla --model gpt2-tiny --model gpt2-tiny-lnfree --prompts prompts/topic.jsonl --db "$DB"
dla=$(last_two dla)
echo "== lnlens diff $dla(read back from $DB)"
"$BIN" diff $dla --db "$DB"

echo "== lnlens patch: activation patching vs AtP and AtP*, the same models and prompts"
"$BIN" patch --model gpt2-tiny --model gpt2-tiny-lnfree --prompts prompts/topic.jsonl --prepend-bos \
  --methods activation,atp,atp-star --db "$DB"
patch=$(last_two patch)
echo "== lnlens diff $patch(read back from $DB)"
"$BIN" diff $patch --db "$DB"

echo "== lnlens patch --decompose: which nonlinearity breaks AtP (softmax patterns, GELU, LayerNorm scales frozen at the patched run), the same models and prompts"
"$BIN" patch --model gpt2-tiny --model gpt2-tiny-lnfree --prompts prompts/topic.jsonl --decompose --db "$DB"
decompose=$(last_two patch)

echo "== lnlens edges: EAP and EAP-IG of every edge, the same models, the first 40 topic prompts"
# The first 40 pairs keep edges and circuit to a few seconds each.
head -40 prompts/topic.jsonl > "$(dirname "$DB")/topic40.jsonl"
"$BIN" edges --model gpt2-tiny --model gpt2-tiny-lnfree --prompts "$(dirname "$DB")/topic40.jsonl" --top 5 --db "$DB"
edges=$(last_two edges)
echo "== lnlens circuit $edges: faithfulness curves of the top-n circuits of each method, and overlap@k of the two models' circuits"
"$BIN" circuit $edges --db "$DB"
circuit=$(last_two circuit)

echo "== lnlens eval: held-out loss of gpt2-tiny, gpt2-tiny-vanilla, gpt2-tiny-lnfree (corpus/heldout.txt)"
"$BIN" eval --db "$DB"
ev=$("$BIN" query --db "$DB" --csv --sql "SELECT id FROM runs WHERE command = 'eval' AND status = 'completed' ORDER BY id DESC LIMIT 1" | tail -n +2)

echo "== lnlens sinks: attention-sink rate per layer and head, the three embedded models, corpus/heldout.txt"
"$BIN" sinks --db "$DB"
echo "== lnlens norms: residual-stream norms, position 0 and the rest, the same models and text"
"$BIN" norms --db "$DB"
echo "== lnlens lens: the logit lens on prompts/topic.jsonl (probability and rank of the answer per layer)"
"$BIN" lens --prompts prompts/topic.jsonl --db "$DB"
echo "== lnlens compare: per-token CE, entropy, and JSD and KL against gpt2-tiny, of its two fine-tunes (20 held-out windows)"
"$BIN" compare --windows 20 --db "$DB"
echo "== lnlens neurons: entropy neurons of the last MLP, gpt2-tiny's top 3 mean-ablated in the three models, 20 windows of corpus/heldout.txt"
"$BIN" neurons --windows 20 --db "$DB"
neurons=$("$BIN" query --db "$DB" --csv --sql "SELECT id FROM (SELECT id FROM runs WHERE command = 'neurons' AND status = 'completed' ORDER BY id DESC LIMIT 3) ORDER BY id" | tail -n +2 | tr '\n' ' ')
analyses=$("$BIN" query --db "$DB" --csv --sql "SELECT id FROM (SELECT id FROM runs WHERE command IN ('sinks', 'norms', 'lens', 'compare') AND status = 'completed' ORDER BY id DESC LIMIT 10) ORDER BY id" | tail -n +2 | tr '\n' ' ')

echo "== lnlens report $dla$patch$decompose$circuit$ev $analyses$neurons(figures of all these runs)"
"$BIN" report $dla $patch $decompose $circuit $ev $analyses $neurons --db "$DB" --out "$REPORT" --force
case "$REPORT" in /*) url="file://$REPORT" ;; *) url="file://$(pwd)/$REPORT" ;; esac
echo "open $url in a browser (offline: everything is inside the file)"
