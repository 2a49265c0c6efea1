#!/usr/bin/env bash
# kill-trials.sh — interruption (kill -9 + --resume) and concurrent-writer trials for lnlens.
#
# What it does (all work under WORK, default /tmp/reliability; nothing in the repo is written):
#
#  1. dla    An uninterrupted reference run
#              lnlens dla --model gpt2-tiny --prompts prompts/ioi.jsonl --chunk-size 8 --db REF
#            is timed (D), then N trials on fresh databases: the same command is started and
#            killed with SIGKILL, the moment chosen by one of three modes, in turn:
#              early    a random delay in [0, 1.1·T]     (T: when the reference's run row appeared;
#                                                         mostly before the run row exists)
#              uniform  a random delay in [0, 1.1·D]     (anywhere, also after the end)
#              txn      after a random delay in [0.9·T, D], the process is stopped (SIGSTOP) every
#                       few ms and killed only while it holds SQLite's WAL write lock (byte 120
#                       of the -shm file, seen in /proc/locks), i.e. inside a write transaction
#                       (a chunk's, the run row's, the schema's or the final one).
#            Then, if a run row exists, `--resume ID`; else the command is run again. All result
#            rows (run_prompts, results, summaries, batches_done; patch: estimator_errors) are
#            compared with the reference, bit for bit (SQL EXCEPT both ways, plus a SHA-256 of
#            the rows, both with quote() on reals, which round-trips doubles).
#  2. patch  The same with lnlens patch --model gpt2-tiny --prompts prompts/ioi.jsonl
#            --chunk-size 8 --methods activation,atp (default sites).
#  3. train  lnlens train --init CONFIG (2 layers, 32 wide) --corpus corpus/heldout.txt --seq-len 32
#            --batch-tokens 256 --micro-batch 4 --steps 40 --checkpoint-every 5; modes early,
#            uniform, ckpt (killed while a checkpoint's staging folder exists) and txn; then
#            `--resume` (or, when no complete checkpoint exists yet, a fresh run with --force);
#            OUT/model.safetensors (and config.json) compared with cmp, train_steps (step, loss,
#            aux_loss, lr, grad_norm, tokens, event) and summaries (without `seconds`) with SQL.
#  4. conc   R rounds: K `lnlens dla` processes started at once on one fresh database
#            (alternately gpt2-tiny and gpt2-tiny-lnfree) while `lnlens runs` and
#            `lnlens query nmae` read it in a loop; every writer must exit 0, every run end
#            `completed` with the reference's rows. Then Q times: `--resume` of a patch run that
#            is still running, from a second process (must be refused: non-zero exit, one line);
#            and Q times: a dla run is killed mid-run and two `--resume ID` start at once (exactly
#            one may take it over; the run must end `completed` with the reference's rows).
#            Every log of the whole script is searched for "locked" and "busy".
#  6. eval   lnlens eval gpt2-tiny gpt2-tiny-lnfree --text (the first 60 kB of corpus/heldout.txt)
#            --context 64 --batch 1 --chunk-size 16, interrupted with SIGINT (Ctrl-C) at a random moment in [0, 1.1·D]: it must
#            exit 130 naming `--resume ID` (or 0 when it had ended), the run marked interrupted;
#            then `--resume ID`; results and summaries compared with the reference, bit for bit.
#  7. mismatch A short training is killed (SIGKILL) after its first checkpoint, then resumed with one
#            result-shaping thing changed (the --init config, --from another model, --dtype,
#            --seq-len, --lr, --seed, --weight-decay, --batch-tokens); each must be refused
#            (non-zero, one line naming the option) with the checkpoint and run untouched; then the
#            same options resume to the reference's model.safetensors, byte for byte.
#  5. journal What a writer killed while a new database file is switched to WAL can leave (page 1
#            of a WAL database plus a hot rollback journal; seen once in 30 dla trials), rebuilt
#            byte for byte; `lnlens runs` and `lnlens dla` must open it.
#
# Usage: scripts/reliability/kill-trials.sh [options]
#   -b BIN     lnlens binary                  (default .build/release/lnlens)
#   -n N       dla kill trials                (default 30)
#   -p N       patch kill trials              (default 15)
#   -t N       train kill trials              (default 10)
#   -k K       concurrent dla writers         (default 4)
#   -r R       concurrency rounds             (default 3)
#   -q Q       resume-while-running and double-resume trials (each; default 5)
#   -e N       eval Ctrl-C trials             (default 10)
#   -w WORK    work folder                    (default /tmp/reliability; its section folders are replaced)
#   -s SEED    seed of the random delays      (default 1; timings still vary from run to run)
#   -o LIST    only these sections, comma-separated: dla,patch,train,conc,journal,eval,mismatch (default all)
# Run from the repository root (or set LNLENS_HOME) so that models/ and prompts/ are found.
# Needs bash, sqlite3, awk, sha256sum, cmp, Linux /proc. Every lnlens runs under `nice -n 10`.
# Exit status: 0 when no failure was found, 1 otherwise. Per-trial rows: WORK/<section>/trials.tsv.
set -u

BIN=.build/release/lnlens
N_DLA=30 N_PATCH=15 N_TRAIN=10 N_EVAL=10 K=4 R=3 Q=5 WORK=/tmp/reliability SEED=1 ONLY=dla,patch,train,conc,journal,eval,mismatch
while getopts "b:n:p:t:e:k:r:q:w:s:o:h" opt; do
  case $opt in
    b) BIN=$OPTARG ;; n) N_DLA=$OPTARG ;; p) N_PATCH=$OPTARG ;; t) N_TRAIN=$OPTARG ;; e) N_EVAL=$OPTARG ;;
    k) K=$OPTARG ;; r) R=$OPTARG ;; q) Q=$OPTARG ;; w) WORK=$OPTARG ;; s) SEED=$OPTARG ;; o) ONLY=$OPTARG ;;
    h|*) sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
export LNLENS_HOME=${LNLENS_HOME:-$(pwd)}
cd "$LNLENS_HOME" || exit 2
[ -x "$BIN" ] || { echo "no lnlens binary at $BIN" >&2; exit 2; }
command -v sqlite3 >/dev/null || { echo "sqlite3 is needed" >&2; exit 2; }
mkdir -p "$WORK"
RANDOM=$SEED
FAILURES=()
declare -A S   # summary counters

want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { FAILURES+=("$*"); log "FAILURE: $*"; }
inc() { S[$1]=$(( ${S[$1]:-0} + ${2:-1} )); }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rand() { RND=$(( (RANDOM * 32768 + RANDOM) % ($1 > 0 ? $1 : 1) )); }   # sets RND in [0, $1)
msleep() { sleep "$(printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )))"; }
ln_() { nice -n 10 "$BIN" "$@"; }   # foreground only: in the background, $! would be a subshell
NICE=(nice -n 10)
q() { sqlite3 -readonly "$@"; }   # read-only sqlite3

is_zombie_or_gone() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -z "$st" ] || [ "$st" = Z ]; }

# holds_write_lock PID SHM: the process holds SQLite's WAL write lock (shm byte 120).
holds_write_lock() {
  local ino; ino=$(stat -c %i "$2" 2>/dev/null) || return 1
  awk -v p="$1" -v i=":$ino" '$4 == "WRITE" && $5 == p && $7 == 120 && substr($6, length($6) - length(i) + 1) == i { f = 1 } END { exit !f }' /proc/locks
}

# kill_by MODE PID DELAY_MS SHM OUT: sleeps DELAY_MS, then kills PID with SIGKILL (txn: only while it
# holds the WAL write lock; ckpt: only while OUT/checkpoints/ holds a staging folder).
# Sets KILLED=1 when the signal reached a live process, HIT=1 when the txn/ckpt condition was seen.
kill_by() {
  local mode=$1 pid=$2 delay=$3 shm=$4 out=${5:-} i=0
  KILLED=0 HIT=0
  msleep "$delay"
  if [ "$mode" = txn ] || [ "$mode" = ckpt ]; then
    while [ $i -lt 20000 ]; do
      i=$((i + 1))
      is_zombie_or_gone "$pid" && return
      kill -STOP "$pid" 2>/dev/null || return
      if { [ "$mode" = txn ] && holds_write_lock "$pid" "$shm"; } ||
         { [ "$mode" = ckpt ] && compgen -G "$out/checkpoints/.step-*.tmp-*" >/dev/null; }; then
        kill -KILL "$pid" 2>/dev/null && KILLED=1 HIT=1
        return
      fi
      kill -CONT "$pid" 2>/dev/null
      msleep $(( RANDOM % 6 + 1 ))
    done
  fi
  is_zombie_or_gone "$pid" && return
  kill -KILL "$pid" 2>/dev/null && KILLED=1
}

# ---------------------------------------------------------------- comparison
# Columns compared per table (timestamps, owners, wall times and paths excluded), with quote()
# on reals: quote round-trips a double, so equal text is an equal value (for the hashes too).
declare -A QCOLS=(
  [run_prompts]="prompt_index, prompt, answer, wrong, n_tokens, corrupt, tokens_json"
  [results]="prompt_index, site, layer, position, head, quantity, quote(value)"
  [summaries]="scope, key, metric, quote(value)"
  [batches_done]="first_prompt, last_prompt"
  [estimator_errors]="site, method, layer, normalized, metric, quote(value)"
  [train_steps]="step, quote(loss), quote(aux_loss), quote(lr), quote(grad_norm), tokens, event"
)
declare -A KEYS=(
  [run_prompts]="prompt_index" [results]="prompt_index, site, ifnull(layer,-1), ifnull(position,-1), ifnull(head,-1), quantity"
  [summaries]="scope, key, metric" [batches_done]="first_prompt, last_prompt"
  [estimator_errors]="site, method, ifnull(layer,-1), normalized, metric" [train_steps]="step"
)
RUNCOLS="command, model_hash, ln_mode, processing_json, prompt_set_hash, n_prompts, status, error, shard_index, shard_count"

where_of() { # TABLE RUN_ID: the rows of a run (train summaries: without wall time)
  if [ "$1" = summaries ]; then echo "run_id = $2 AND metric <> 'seconds'"; else echo "run_id = $2"; fi
}

# table_hash DB RUN TABLE: SHA-256 of the run's rows in key order.
table_hash() {
  q "$1" "SELECT ${QCOLS[$3]} FROM $3 WHERE $(where_of "$3" "$2") ORDER BY ${KEYS[$3]}" | sha256sum | cut -c1-16
}

join_on() { # "k1, ifnull(k2,-1), ...": x.k1 = y.k1 AND ifnull(x.k2,-1) = ifnull(y.k2,-1) ...
  local k out=""
  while IFS= read -r k; do
    if [[ $k == ifnull\(* ]]; then out+="${out:+ AND }${k/ifnull(/ifnull(x.} = ${k/ifnull(/ifnull(y.}"
    else out+="${out:+ AND }x.$k = y.$k"; fi
  done <<< "${1//, /$'\n'}"
  echo "$out"
}

# compare DB RUN REF REFRUN TABLES... : sets CMP (identical|mismatch) and CMP_DETAIL; writes DB.diff.
compare() {
  local db=$1 run=$2 ref=$3 refrun=$4; shift 4
  local t a b n m detail="" out="$db.diff"
  : > "$out"
  for t in "$@"; do
    local w; w=$(where_of "$t" "$run"); local wr; wr=$(where_of "$t" "$refrun")
    read -r n m a b < <(q "$db" "ATTACH '$ref' AS r;
      SELECT (SELECT count(*) FROM main.$t WHERE $w), (SELECT count(*) FROM r.$t WHERE $wr),
             (SELECT count(*) FROM (SELECT ${QCOLS[$t]} FROM main.$t WHERE $w EXCEPT SELECT ${QCOLS[$t]} FROM r.$t WHERE $wr)),
             (SELECT count(*) FROM (SELECT ${QCOLS[$t]} FROM r.$t WHERE $wr EXCEPT SELECT ${QCOLS[$t]} FROM main.$t WHERE $w));" | tr '|' ' ')
    if [ "${n:-x}" != "${m:-y}" ] || [ "${a:-1}" != 0 ] || [ "${b:-1}" != 0 ]; then
      detail+="$t: $n rows vs $m in the reference, $a not in the reference, $b missing; "
      {
        echo "== $t: rows $n vs ref $m; only here $a; only in ref $b"
        if [ "$t" != run_prompts ] && [ "$t" != batches_done ]; then
          local vc=value; [ "$t" = train_steps ] && vc=loss
          q "$db" "ATTACH '$ref' AS r; SELECT 'common keys whose $vc differs: ' || count(*) || ', max |diff| ' || ifnull(max(abs(x.$vc - y.$vc)), 0)
                   FROM main.$t x JOIN r.$t y ON $(join_on "${KEYS[$t]}") WHERE x.run_id = $run AND y.run_id = $refrun AND x.$vc IS NOT y.$vc"
          q "$db" "ATTACH '$ref' AS r; SELECT 'e.g. ' || quote(x.$vc) || ' vs ' || quote(y.$vc)
                   FROM main.$t x JOIN r.$t y ON $(join_on "${KEYS[$t]}") WHERE x.run_id = $run AND y.run_id = $refrun AND x.$vc IS NOT y.$vc LIMIT 5"
        fi
        q "$db" "ATTACH '$ref' AS r; SELECT ${QCOLS[$t]} FROM main.$t WHERE $w EXCEPT SELECT ${QCOLS[$t]} FROM r.$t WHERE $wr LIMIT 20"
      } >> "$out" 2>&1
    fi
  done
  read -r a < <(q "$db" "ATTACH '$ref' AS r; SELECT count(*) FROM (SELECT $RUNCOLS FROM main.runs WHERE id = $run EXCEPT SELECT $RUNCOLS FROM r.runs WHERE id = $refrun);")
  [ "${a:-1}" = 0 ] || detail+="runs row differs; "
  if [ -z "$detail" ]; then CMP=identical CMP_DETAIL=""; else CMP=mismatch CMP_DETAIL=$detail; fi
}

# state DB: "ID|STATUS|CHUNKS" of the newest run, or "" when there is no run row (or no database).
state() {
  [ -s "$1" ] || { echo ""; return; }
  q "$1" "SELECT id || '|' || status || '|' || (SELECT count(*) FROM batches_done b WHERE b.run_id = runs.id) FROM runs ORDER BY id DESC LIMIT 1" 2>/dev/null
}
# files DB: what the killed process left: database size, and -journal / -wal when present.
files() {
  local f=$1 out; out="db $( [ -e "$f" ] && stat -c %s "$f" || echo absent)"
  [ -e "$f-journal" ] && out+=" journal $(stat -c %s "$f-journal")"
  [ -e "$f-wal" ] && out+=" wal $(stat -c %s "$f-wal")"
  echo "$out"
}

grep_locks() { # FILES...: lines mentioning a lock/busy error
  grep -i -H -E "locked|busy" "$@" 2>/dev/null
}

# ---------------------------------------------------------------- 1, 2: dla / patch
prompt_trials() { # SECTION N ARGS...
  local sec=$1 n=$2; shift 2
  local dir=$WORK/$sec; rm -rf "$dir"; mkdir -p "$dir"
  local tsv=$dir/trials.tsv
  printf 'trial\tmode\tdelay_ms\tkilled\tin_txn\tfiles_after_kill\trow_after_kill\tstatus_after_kill\tchunks_after_kill\taction\tresume_rc\tfinal_status\trows\tother_runs_not_completed\tdetail\n' > "$tsv"
  local tables=(run_prompts results summaries batches_done); [ "$sec" = patch ] && tables+=(estimator_errors)
  log "$sec: reference run"
  local t0; t0=$(now_ms)
  ln_ "$@" --db "$dir/ref.sqlite" > "$dir/ref.out" 2> "$dir/ref.err" || { fail "$sec reference run failed: $(head -1 "$dir/ref.err")"; return; }
  local D=$(( $(now_ms) - t0 ))
  S[$sec.ref_ms]=$D
  # When the run row appeared (its started_at, UTC) after the launch: the start-up (loading, hashing).
  local TR; TR=$(( $(date -u -d "$(q "$dir/ref.sqlite" "SELECT started_at FROM runs WHERE id = 1") UTC" +%s%3N) - t0 ))
  [ "$TR" -gt 0 ] && [ "$TR" -lt "$D" ] || TR=$(( D / 2 ))
  S[$sec.ref_row_ms]=$TR
  local rst; rst=$(q "$dir/ref.sqlite" "SELECT status FROM runs WHERE id = 1")
  [ "$rst" = completed ] || fail "$sec reference run is $rst"
  local h="" t; for t in "${tables[@]}"; do h+="$t=$(table_hash "$dir/ref.sqlite" 1 "$t") "; done
  S[$sec.ref_hash]=$h
  S[$sec.ref_rows]=$(q "$dir/ref.sqlite" "SELECT count(*) FROM results")
  log "$sec: reference ${D} ms (run row after $TR ms), ${S[$sec.ref_rows]} result rows; $h"
  local i
  for i in $(seq 1 "$n"); do
    local td=$dir/trial-$(printf %03d "$i"); mkdir -p "$td"
    local db=$td/db.sqlite mode delay
    case $(( (i - 1) % 3 )) in
      0) mode=early; rand $(( TR * 11 / 10 )); delay=$RND ;;
      1) mode=uniform; rand $(( D * 11 / 10 )); delay=$RND ;;
      2) mode=txn; rand $(( D - TR * 9 / 10 )); delay=$(( TR * 9 / 10 + RND )) ;;
    esac
    "${NICE[@]}" "$BIN" "$@" --db "$db" > "$td/run.out" 2> "$td/run.err" &
    local pid=$!
    kill_by "$mode" "$pid" "$delay" "$db-shm"
    wait "$pid" 2>/dev/null; local rc=$?
    [ "$KILLED" = 1 ] && [ "$rc" != 137 ] && fail "$sec trial $i: killed but exit status $rc"
    local fl; fl=$(files "$db")
    [[ $fl == *journal* ]] && inc "$sec.hot_journal_left"
    local st; st=$(state "$db")
    local id=${st%%|*} s2="" ch="" action rrc=""
    if [ -n "$st" ]; then s2=$(echo "$st" | cut -d'|' -f2); ch=$(echo "$st" | cut -d'|' -f3); fi
    inc "$sec.trials"
    if [ "$KILLED" = 1 ]; then
      inc "$sec.killed"
      local nch; nch=$(q "$dir/ref.sqlite" "SELECT count(*) FROM batches_done")
      if [ -z "$st" ]; then inc "$sec.kill_before_row"
      elif [ "$s2" = completed ]; then inc "$sec.kill_after_completed"
      else inc "$sec.kill_mid_run"; fi
      if [ "$HIT" = 1 ]; then
        inc "$sec.kill_in_txn"
        if [ -z "$st" ]; then inc "$sec.txn_before_row"      # schema or run-row transaction
        elif [ "$s2" = completed ]; then inc "$sec.txn_after_completed"
        elif [ "$ch" -lt "$nch" ]; then inc "$sec.txn_chunk"  # writing chunk ch+1
        else inc "$sec.txn_finish"; fi                         # all chunks stored: the final transaction
      fi
    else
      inc "$sec.not_killed"
    fi
    if [ -z "$st" ]; then
      action=rerun
      ln_ "$@" --db "$db" > "$td/rerun.out" 2> "$td/rerun.err"; rrc=$?
      inc "$sec.reruns"
    elif [ "$s2" = completed ]; then
      action=none
    else
      action=resume
      ln_ "$@" --db "$db" --resume "$id" > "$td/resume.out" 2> "$td/resume.err"; rrc=$?
      inc "$sec.resumes"
    fi
    [ -n "$rrc" ] && [ "$rrc" != 0 ] && fail "$sec trial $i ($mode, ${delay} ms; left: $fl): $action exited $rrc: $(cat "$td"/re*.err | head -2 | tr '\n' ' ')"
    local fid fst
    fid=$(q "$db" "SELECT max(id) FROM runs WHERE status = 'completed'" 2>/dev/null)
    fst=$(q "$db" "SELECT status FROM runs ORDER BY id DESC LIMIT 1" 2>/dev/null)
    local others; others=$(q "$db" "SELECT count(*) FROM runs WHERE status <> 'completed'" 2>/dev/null)
    [ "${others:-0}" != 0 ] && { inc "$sec.left_not_completed" "$others"; fail "$sec trial $i: $others run(s) left not completed: $(q "$db" "SELECT id, status, error FROM runs WHERE status <> 'completed'" | tr '\n' ' ')"; }
    if [ -z "$fid" ]; then
      CMP=mismatch CMP_DETAIL="no completed run"
    else
      compare "$db" "$fid" "$dir/ref.sqlite" 1 "${tables[@]}"
    fi
    if [ "$CMP" = identical ]; then inc "$sec.identical"; else inc "$sec.mismatch"; fail "$sec trial $i ($mode, ${delay} ms, $action): $CMP_DETAIL (see $db.diff)"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$mode" "$delay" "$KILLED" "$HIT" "$fl" "${id:-none}" "${s2:--}" "${ch:--}" \
      "$action" "${rrc:--}" "${fst:-none}" "$CMP" "${others:-?}" "$CMP_DETAIL" >> "$tsv"
    log "$sec trial $i: $mode ${delay} ms killed=$KILLED txn=$HIT [$fl] row=${id:-none} ${s2:-} chunks=${ch:-} -> $action rc=${rrc:--} $CMP"
  done
  local locks; locks=$(grep_locks "$dir"/*/*.err "$dir"/*.err)
  [ -n "$locks" ] && { fail "$sec: lock errors: $(echo "$locks" | head -3)"; inc "$sec.lock_errors" "$(echo "$locks" | wc -l)"; }
}

# ---------------------------------------------------------------- 3: train
train_trials() {
  local n=$1 dir=$WORK/train; rm -rf "$dir"; mkdir -p "$dir"
  local tsv=$dir/trials.tsv
  printf 'trial\tmode\tdelay_ms\tkilled\thit\trow_after_kill\tstatus_after_kill\tsteps_after_kill\tcheckpoint\taction\trc\tmodel_cmp\trows\tnot_completed\tdetail\n' > "$tsv"
  printf '{"model_type":"gpt2","n_embd":32,"n_layer":2,"n_head":4,"n_positions":64,"vocab_size":50257}\n' > "$dir/config.json"
  local args=(train --init "$dir/config.json" --corpus corpus/heldout.txt --seq-len 32 --batch-tokens 256 --micro-batch 4
              --steps 40 --checkpoint-every 5)
  log "train: reference run"
  local t0; t0=$(now_ms)
  ln_ "${args[@]}" --out "$dir/ref-out" --db "$dir/ref.sqlite" > "$dir/ref.out" 2> "$dir/ref.err" || { fail "train reference failed: $(tail -1 "$dir/ref.err")"; return; }
  local D=$(( $(now_ms) - t0 ))
  S[train.ref_ms]=$D
  S[train.ref_hash]="model=$(sha256sum < "$dir/ref-out/model.safetensors" | cut -c1-16) train_steps=$(table_hash "$dir/ref.sqlite" 1 train_steps)"
  log "train: reference ${D} ms; ${S[train.ref_hash]}"
  local i
  for i in $(seq 1 "$n"); do
    local td=$dir/trial-$(printf %03d "$i"); mkdir -p "$td"
    local db=$td/db.sqlite out=$td/out mode delay
    case $(( (i - 1) % 4 )) in
      0) mode=early; rand $(( D / 4 )); delay=$RND ;;
      1) mode=uniform; rand $(( D * 21 / 20 )); delay=$RND ;;
      2) mode=ckpt; rand $(( D * 4 / 5 )); delay=$(( D / 10 + RND )) ;;
      3) mode=txn; rand $(( D * 4 / 5 )); delay=$(( D / 10 + RND )) ;;
    esac
    "${NICE[@]}" "$BIN" "${args[@]}" --out "$out" --db "$db" > "$td/run.out" 2> "$td/run.err" &
    local pid=$!
    kill_by "$mode" "$pid" "$delay" "$db-shm" "$out"
    wait "$pid" 2>/dev/null; local rc=$?
    [ "$KILLED" = 1 ] && [ "$rc" != 137 ] && fail "train trial $i: killed but exit status $rc"
    local st id="" s2="" steps="" ck=none action rrc=""
    [ -s "$db" ] && st=$(q "$db" "SELECT id || '|' || status || '|' || (SELECT count(*) FROM train_steps t WHERE t.run_id = runs.id) FROM runs ORDER BY id DESC LIMIT 1" 2>/dev/null) || st=""
    if [ -n "$st" ]; then id=${st%%|*}; s2=$(echo "$st" | cut -d'|' -f2); steps=$(echo "$st" | cut -d'|' -f3); fi
    local c; for c in "$out"/checkpoints/step-*/state.json; do [ -e "$c" ] && ck=$(basename "$(dirname "$c")"); done
    inc train.trials
    if [ "$KILLED" = 1 ]; then
      inc train.killed
      if [ -z "$st" ]; then inc train.kill_before_row
      elif [ "$s2" = completed ]; then inc train.kill_after_completed
      else inc train.kill_mid_run; fi
      [ "$HIT" = 1 ] && inc "train.kill_in_$mode"
    else
      inc train.not_killed
    fi
    if [ "$s2" = completed ]; then
      action=none
    elif [ "$ck" != none ]; then
      action=resume
      ln_ "${args[@]}" --out "$out" --db "$db" --resume > "$td/resume.out" 2> "$td/resume.err"; rrc=$?
      inc train.resumes
    else
      # No complete checkpoint: --resume cannot continue; record what it says, then start again.
      if [ -n "$st" ]; then
        ln_ "${args[@]}" --out "$out" --db "$db" --resume > "$td/resume-nockpt.out" 2> "$td/resume-nockpt.err"
        echo "rc=$?" >> "$td/resume-nockpt.err"
        inc train.resume_without_checkpoint
      fi
      action=rerun
      local force=(); [ -e "$out" ] && force=(--force)
      ln_ "${args[@]}" "${force[@]}" --out "$out" --db "$db" > "$td/rerun.out" 2> "$td/rerun.err"; rrc=$?
      inc train.reruns
    fi
    [ -n "$rrc" ] && [ "$rrc" != 0 ] && fail "train trial $i: $action exited $rrc: $(tail -1 "$td/$action.err")"
    local fid; fid=$(q "$db" "SELECT max(id) FROM runs WHERE status = 'completed'" 2>/dev/null)
    local others; others=$(q "$db" "SELECT count(*) FROM runs WHERE status <> 'completed'" 2>/dev/null)
    [ "${others:-0}" != 0 ] && { inc train.left_not_completed "$others"; fail "train trial $i ($mode, ${delay} ms, $action): $others run(s) left not completed: $(q "$db" "SELECT id, status, owner_pid, error FROM runs WHERE status <> 'completed'" | tr '\n' ' ')"; }
    local mc=identical
    cmp -s "$out/model.safetensors" "$dir/ref-out/model.safetensors" || mc=differs
    cmp -s "$out/config.json" "$dir/ref-out/config.json" || mc="$mc(config.json differs)"
    [ -e "$out/checkpoints" ] && mc="$mc(checkpoints left)"
    if [ -z "$fid" ]; then CMP=mismatch CMP_DETAIL="no completed run"; else compare "$db" "$fid" "$dir/ref.sqlite" 1 train_steps summaries; fi
    if [ "$mc" = identical ]; then inc train.model_identical; else inc train.model_differs; fail "train trial $i ($mode, ${delay} ms): model $mc"; fi
    if [ "$CMP" = identical ]; then inc train.identical; else inc train.mismatch; fail "train trial $i ($mode, ${delay} ms, $action): $CMP_DETAIL"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$mode" "$delay" "$KILLED" "$HIT" "${id:-none}" "${s2:--}" "${steps:--}" "$ck" \
      "$action" "${rrc:--}" "$mc" "$CMP" "${others:-?}" "$CMP_DETAIL" >> "$tsv"
    log "train trial $i: $mode ${delay} ms killed=$KILLED hit=$HIT row=${id:-none} ${s2:-} steps=${steps:-} ckpt=$ck -> $action rc=${rrc:--} model=$mc rows=$CMP"
  done
  local locks; locks=$(grep_locks "$dir"/*/*.err "$dir"/*.err)
  [ -n "$locks" ] && { fail "train: lock errors: $(echo "$locks" | head -3)"; inc train.lock_errors "$(echo "$locks" | wc -l)"; }
}

# ---------------------------------------------------------------- 4: concurrency
DLA_ARGS=(dla --prompts prompts/ioi.jsonl --chunk-size 8)
PATCH_ARGS=(patch --model gpt2-tiny --prompts prompts/ioi.jsonl --chunk-size 8 --methods activation,atp)

wait_for() { # SECONDS COMMAND...: polls every 20 ms until COMMAND succeeds
  local end=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@"; do [ "$(now_ms)" -lt "$end" ] || return 1; msleep 20; done
}
has_chunks() { # DB MIN: the newest run is running with at least MIN chunks stored
  local st; st=$(state "$1"); [ -n "$st" ] && [ "$(echo "$st" | cut -d'|' -f2)" = running ] && [ "$(echo "$st" | cut -d'|' -f3)" -ge "$2" ]
}

conc_trials() {
  local dir=$WORK/conc; rm -rf "$dir"; mkdir -p "$dir"
  # References: one run per model, uninterrupted, alone.
  local m
  for m in gpt2-tiny gpt2-tiny-lnfree; do
    ln_ "${DLA_ARGS[@]}" --model "$m" --db "$dir/ref-$m.sqlite" > "$dir/ref-$m.out" 2> "$dir/ref-$m.err" || fail "conc: reference $m failed"
  done
  ln_ "${PATCH_ARGS[@]}" --db "$dir/ref-patch.sqlite" > "$dir/ref-patch.out" 2> "$dir/ref-patch.err" || fail "conc: patch reference failed"
  local r
  for r in $(seq 1 "$R"); do
    local rd=$dir/round-$r; mkdir -p "$rd"; local db=$rd/db.sqlite
    local pids=() j
    for j in $(seq 1 "$K"); do
      if [ $(( j % 2 )) = 1 ]; then m=gpt2-tiny; else m=gpt2-tiny-lnfree; fi
      "${NICE[@]}" "$BIN" "${DLA_ARGS[@]}" --model "$m" --db "$db" > "$rd/w$j.out" 2> "$rd/w$j.err" &
      pids+=($!)
      echo "$m" > "$rd/w$j.model"
    done
    inc conc.starts "$K"
    # Readers while the writers run.
    (
      wait_for 30 test -s "$db" || exit 0
      n=0 bad=0
      while :; do
        alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && ! is_zombie_or_gone "$p" && alive=1; done
        [ $alive = 1 ] || break
        ln_ runs --db "$db" >> "$rd/readers.out" 2>> "$rd/readers.err" || bad=$((bad + 1)); n=$((n + 1))
        ln_ query nmae --db "$db" >> "$rd/readers.out" 2>> "$rd/readers.err" || bad=$((bad + 1)); n=$((n + 1))
      done
      echo "$n $bad" > "$rd/readers.count"
    ) &
    local rpid=$!
    local okc=0
    for j in $(seq 1 "$K"); do
      wait "${pids[$((j - 1))]}"; local rc=$?
      if [ $rc = 0 ]; then okc=$((okc + 1)); else fail "conc round $r writer $j exited $rc: $(head -2 "$rd/w$j.err" | tr '\n' ' ')"; fi
    done
    wait "$rpid"
    inc conc.writer_exit0 "$okc"
    local rn rb; read -r rn rb < "$rd/readers.count" 2>/dev/null || { rn=0; rb=0; }
    inc conc.reader_calls "$rn"; inc conc.reader_errors "$rb"
    [ "$rb" != 0 ] && fail "conc round $r: $rb reader call(s) failed: $(sort -u "$rd/readers.err" | head -3 | tr '\n' ' ')"
    local nr; nr=$(q "$db" "SELECT count(*) FROM runs")
    inc conc.runs_stored "$nr"
    inc conc.completed "$(q "$db" "SELECT count(*) FROM runs WHERE status = 'completed'")"
    [ "$nr" != "$K" ] && { inc conc.lost $(( K - nr )); fail "conc round $r: $nr runs stored for $K starts"; }
    q "$db" "SELECT status FROM runs" | sort | uniq -c | while read -r c s; do echo "$s $c"; done >> "$dir/statuses"
    # Each run against its model's reference.
    local id
    for id in $(q "$db" "SELECT id FROM runs ORDER BY id"); do
      m=$(q "$db" "SELECT model_path FROM runs WHERE id = $id"); m=$(basename "$m")
      compare "$db" "$id" "$dir/ref-$m.sqlite" 1 run_prompts results summaries batches_done
      if [ "$CMP" = identical ]; then inc conc.identical; else inc conc.mismatch; fail "conc round $r run $id ($m): $CMP_DETAIL"; fi
    done
    ln_ runs --verify --db "$db" > "$rd/verify.out" 2>&1 || fail "conc round $r: runs --verify failed: $(tail -1 "$rd/verify.out")"
    log "conc round $r: $K starts, $okc exit 0, $nr runs stored, readers $rn calls / $rb errors"
  done

  # --resume of a run that is still running, from a second process: must be refused at once.
  local i
  for i in $(seq 1 "$Q"); do
    local td=$dir/resume-live-$i; mkdir -p "$td"; local db=$td/db.sqlite
    "${NICE[@]}" "$BIN" "${PATCH_ARGS[@]}" --db "$db" > "$td/owner.out" 2> "$td/owner.err" &
    local pid=$!
    if ! wait_for 60 has_chunks "$db" 1; then fail "resume-live $i: the run never showed a stored chunk"; kill -KILL "$pid" 2>/dev/null; wait "$pid"; continue; fi
    local id; id=$(state "$db"); id=${id%%|*}
    local t0; t0=$(now_ms)
    ln_ "${PATCH_ARGS[@]}" --db "$db" --resume "$id" > "$td/second.out" 2> "$td/second.err"; local rc=$?
    local took=$(( $(now_ms) - t0 ))
    local stillrun; kill -0 "$pid" 2>/dev/null && ! is_zombie_or_gone "$pid" && stillrun=yes || stillrun=no
    wait "$pid"; local orc=$?
    local lines; lines=$(wc -l < "$td/second.err")
    inc conc.live_resume_attempts
    if [ $rc != 0 ] && [ "$lines" = 1 ] && grep -q "being written by process $pid" "$td/second.err"; then
      inc conc.live_resume_refused
    elif [ "$stillrun" = no ]; then
      inc conc.live_resume_owner_finished_first   # not a valid trial: the owner ended before the check
    else
      fail "resume-live $i: second process exit $rc, $lines stderr line(s): $(head -2 "$td/second.err" | tr '\n' ' ')"
    fi
    [ $orc = 0 ] || fail "resume-live $i: the owner exited $orc: $(tail -1 "$td/owner.err")"
    compare "$db" "$id" "$dir/ref-patch.sqlite" 1 run_prompts results summaries batches_done estimator_errors
    [ "$CMP" = identical ] && inc conc.live_resume_owner_identical || fail "resume-live $i: owner's rows: $CMP_DETAIL"
    echo "$i rc=$rc lines=$lines took_ms=$took owner_rc=$orc rows=$CMP msg=$(head -1 "$td/second.err")" >> "$dir/resume-live.txt"
    log "resume-live $i: second exit $rc in ${took} ms ($lines line): $(head -1 "$td/second.err" | cut -c1-110)…"
  done

  # Two simultaneous --resume of the same killed run: exactly one takes it over.
  for i in $(seq 1 "$Q"); do
    local td=$dir/double-resume-$i; mkdir -p "$td"; local db=$td/db.sqlite
    "${NICE[@]}" "$BIN" "${DLA_ARGS[@]}" --model gpt2-tiny --db "$db" > "$td/first.out" 2> "$td/first.err" &
    local pid=$!
    rand 12; local minc=$(( RND + 1 ))
    if ! wait_for 60 has_chunks "$db" "$minc"; then fail "double-resume $i: no chunk stored"; kill -KILL "$pid" 2>/dev/null; wait "$pid"; continue; fi
    kill -KILL "$pid"; wait "$pid" 2>/dev/null
    local st; st=$(state "$db"); local id=${st%%|*}
    "${NICE[@]}" "$BIN" "${DLA_ARGS[@]}" --model gpt2-tiny --db "$db" --resume "$id" > "$td/a.out" 2> "$td/a.err" & local pa=$!
    "${NICE[@]}" "$BIN" "${DLA_ARGS[@]}" --model gpt2-tiny --db "$db" --resume "$id" > "$td/b.out" 2> "$td/b.err" & local pb=$!
    wait $pa; local ra=$?; wait $pb; local rb=$?
    local owner; owner=$(q "$db" "SELECT owner_pid FROM runs WHERE id = $id")
    local fst; fst=$(q "$db" "SELECT status FROM runs WHERE id = $id")
    inc conc.double_resume_trials; inc conc.double_resume_starts 2
    local winner=none loser_msg="" outcome
    [ "$owner" = "$pa" ] && winner=a; [ "$owner" = "$pb" ] && winner=b
    if [ $winner = none ]; then fail "double-resume $i: the run's owner $owner is neither resumer ($pa, $pb)"; outcome=bad
    else
      local l=b lrc=$rb; [ $winner = b ] && { l=a; lrc=$ra; }
      local wrc=$ra; [ $winner = b ] && wrc=$rb
      loser_msg=$(head -1 "$td/$l.err")
      if [ "$wrc" != 0 ]; then fail "double-resume $i: the winner exited $wrc: $(head -1 "$td/$winner.err")"; outcome=bad
      elif [ "$lrc" != 0 ] && [ "$(wc -l < "$td/$l.err")" = 1 ] && grep -q "being written by process $owner" "$td/$l.err"; then outcome=refused; inc conc.double_resume_refused
      elif [ "$lrc" = 0 ] && ! [ -s "$td/$l.err" ]; then outcome=found-completed; inc conc.double_resume_loser_found_completed
      else fail "double-resume $i: loser exit $lrc: $(head -2 "$td/$l.err" | tr '\n' ' ')"; outcome=bad
      fi
    fi
    [ "$fst" = completed ] && inc conc.double_resume_completed || fail "double-resume $i: run $id is $fst"
    compare "$db" "$id" "$dir/ref-gpt2-tiny.sqlite" 1 run_prompts results summaries batches_done
    [ "$CMP" = identical ] && inc conc.double_resume_identical || fail "double-resume $i: $CMP_DETAIL"
    echo "$i killed_after_chunks=$(echo "$st" | cut -d'|' -f3) a_rc=$ra b_rc=$rb winner=$winner outcome=$outcome status=$fst rows=$CMP loser=$loser_msg" >> "$dir/double-resume.txt"
    log "double-resume $i: a=$ra b=$rb winner=$winner $outcome $fst $CMP"
  done
  local locks; locks=$(grep_locks "$dir"/*/*.err "$dir"/*.err)
  [ -n "$locks" ] && { fail "conc: lock errors: $(echo "$locks" | head -3)"; inc conc.lock_errors "$(echo "$locks" | wc -l)"; }
}

# ---------------------------------------------------------------- 5: hot rollback journal
# What a writer killed while switching a new, empty database file to WAL leaves behind (found by
# the dla trials: page 1 of a WAL-mode database and a hot rollback journal whose original size is
# 0 pages), rebuilt byte for byte; then a reader (`lnlens runs`) and a writer (`lnlens dla`) open it.
journal_check() {
  local dir=$WORK/journal; rm -rf "$dir"; mkdir -p "$dir"; local db=$dir/db.sqlite
  sqlite3 "$db" "PRAGMA journal_mode=WAL;" > /dev/null
  { printf '\331\325\005\371\040\241\143\327'   # journal magic
    printf '\0\0\0\0'                               # nRec 0
    printf '\054\166\112\104'                       # checksum nonce
    printf '\0\0\0\0'                               # database size before the transaction: 0 pages
    printf '\0\0\002\0\0\0\020\0'               # sector 512, page 4096
    head -c 484 /dev/zero; } > "$db-journal"
  ln_ runs --db "$db" > "$dir/runs.out" 2> "$dir/runs.err"; local r1=$?
  ln_ dla --model gpt2-tiny --prompts prompts/ioi.jsonl --chunk-size 8 --db "$db" > "$dir/dla.out" 2> "$dir/dla.err"; local r2=$?
  S[journal.runs]="exit $r1 $(head -1 "$dir/runs.err")"
  S[journal.dla]="exit $r2 $(head -1 "$dir/dla.err")"
  [ $r2 = 0 ] || fail "hot journal: lnlens dla cannot open a database left with a hot rollback journal: $(head -1 "$dir/dla.err") (repro: $dir)"
  log "hot journal: runs exit $r1, dla exit $r2"
}

# ---------------------------------------------------------------- 6: eval, Ctrl-C
eval_trials() {
  local n=$1 dir=$WORK/eval; rm -rf "$dir"; mkdir -p "$dir"
  local tsv=$dir/trials.tsv
  printf 'trial\tdelay_ms\trc\tstatus_after\tstored_after\tresume_rc\trows\tdetail\n' > "$tsv"
  # The first 60,000 bytes of the held-out text (whole lines; about 15,000 tokens, 230 windows of 64).
  head -c 60000 corpus/heldout.txt | sed '$d' > "$dir/text.txt"
  local args=(eval gpt2-tiny gpt2-tiny-lnfree --text "$dir/text.txt" --context 64 --batch 1 --chunk-size 16)
  log "eval: reference run"
  local t0; t0=$(now_ms)
  ln_ "${args[@]}" --db "$dir/ref.sqlite" > "$dir/ref.out" 2> "$dir/ref.err" || { fail "eval reference failed: $(tail -1 "$dir/ref.err")"; return; }
  local D=$(( $(now_ms) - t0 )); S[eval.ref_ms]=$D
  local i
  for i in $(seq 1 "$n"); do
    local td=$dir/trial-$(printf %03d "$i"); mkdir -p "$td"
    local db=$td/db.sqlite; rand $(( D * 11 / 10 )); local delay=$RND
    "${NICE[@]}" "$BIN" "${args[@]}" --db "$db" > "$td/run.out" 2> "$td/run.err" &
    local pid=$!
    msleep "$delay"; kill -INT "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null; local rc=$?
    inc eval.trials
    local st stored rrc="-"
    st=$(q "$db" "SELECT status FROM runs WHERE id = 1" 2>/dev/null); stored=$(q "$db" "SELECT count(*) FROM results WHERE run_id = 1" 2>/dev/null)
    case $rc in
      130) inc eval.interrupted
           grep -q -- "--resume 1" "$td/run.err" || fail "eval trial $i: exit 130 without the resume hint: $(tail -1 "$td/run.err")"
           [ "$st" = interrupted ] || fail "eval trial $i: exit 130 but the run is ${st:-missing}" ;;
      0) inc eval.ended_first ;;
      *) if [ -z "$st" ]; then inc eval.before_row; else fail "eval trial $i: exit $rc: $(tail -1 "$td/run.err")"; fi ;;
    esac
    if [ -n "$st" ] && [ "$st" != completed ]; then
      ln_ "${args[@]}" --db "$db" --resume 1 > "$td/resume.out" 2> "$td/resume.err"; rrc=$?
      inc eval.resumes
      [ "$rrc" = 0 ] || fail "eval trial $i: resume exited $rrc: $(tail -1 "$td/resume.err")"
    elif [ -z "$st" ]; then
      ln_ "${args[@]}" --db "$db" > "$td/rerun.out" 2> "$td/rerun.err"; rrc=$?
    fi
    compare "$db" 1 "$dir/ref.sqlite" 1 results summaries
    if [ "$CMP" = identical ]; then inc eval.identical; else inc eval.mismatch; fail "eval trial $i (${delay} ms): $CMP_DETAIL"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$delay" "$rc" "${st:-none}" "${stored:-0}" "$rrc" "$CMP" "$CMP_DETAIL" >> "$tsv"
    log "eval trial $i: SIGINT at ${delay} ms -> exit $rc, ${st:-no run} with ${stored:-0} rows; resume rc=$rrc; rows=$CMP"
  done
}

# ---------------------------------------------------------------- 7: train resume with other options
mismatch_trials() {
  local dir=$WORK/mismatch; rm -rf "$dir"; mkdir -p "$dir"
  printf '{"model_type":"gpt2","n_embd":32,"n_layer":2,"n_head":4,"n_positions":64,"vocab_size":50257}\n' > "$dir/config.json"
  printf '{"model_type":"gpt2","n_embd":32,"n_layer":2,"n_head":2,"n_positions":64,"vocab_size":50257}\n' > "$dir/other.json"
  local base=(--corpus corpus/heldout.txt --seq-len 32 --batch-tokens 256 --micro-batch 4 --steps 30 --checkpoint-every 5)
  ln_ train --init "$dir/config.json" "${base[@]}" --out "$dir/ref-out" --db "$dir/ref.sqlite" > /dev/null 2> "$dir/ref.err" \
    || { fail "mismatch reference failed: $(tail -1 "$dir/ref.err")"; return; }
  local db=$dir/db.sqlite out=$dir/out
  "${NICE[@]}" "$BIN" train --init "$dir/config.json" "${base[@]}" --out "$out" --db "$db" > /dev/null 2> "$dir/run.err" &
  local pid=$! waited=0
  while [ ! -e "$out/checkpoints/step-000005/state.json" ] && [ $waited -lt 600 ]; do msleep 50; waited=$(( waited + 1 )); done
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  local before; before=$(cat "$out"/checkpoints/*/state.json | sha256sum | cut -c1-16)
  local rows_before; rows_before=$(table_hash "$db" 1 train_steps)
  local name change
  for change in "init:--init $dir/other.json" "from:--from gpt2-tiny" "dtype:--dtype f16" "seq-len:--seq-len 16" "lr:--lr 1e-3" \
                "seed:--seed 7" "weight-decay:--weight-decay 0.1" "batch-tokens:--batch-tokens 512"; do
    name=${change%%:*}
    local extra; read -r -a extra <<< "${change#*:}"
    local source=(--init "$dir/config.json"); case $name in init|from) source=() ;; esac
    local err=$dir/refused-$name.err
    ln_ train "${source[@]}" "${base[@]}" "${extra[@]}" --out "$out" --db "$db" --resume > /dev/null 2> "$err"; local rc=$?
    inc mismatch.trials
    local lines; lines=$(wc -l < "$err")
    local what=--$name; [ "$name" = init ] || [ "$name" = from ] && what="its source"
    if [ "$rc" != 0 ] && [ "$lines" = 1 ] && grep -q -- "$what" "$err"; then inc mismatch.refused; else fail "mismatch $name: rc=$rc, $lines line(s): $(head -2 "$err" | tr '\n' ' ')"; fi
    log "mismatch $name: rc=$rc: $(head -1 "$err")"
  done
  local after; after=$(cat "$out"/checkpoints/*/state.json | sha256sum | cut -c1-16)
  [ "$before" = "$after" ] && inc mismatch.checkpoint_untouched || fail "mismatch: a refused resume changed the checkpoint"
  [ "$rows_before" = "$(table_hash "$db" 1 train_steps)" ] && inc mismatch.rows_untouched || fail "mismatch: a refused resume changed the stored steps"
  ln_ train --init "$dir/config.json" "${base[@]}" --out "$out" --db "$db" --resume > /dev/null 2> "$dir/resume.err" \
    || fail "mismatch: the same options did not resume: $(tail -1 "$dir/resume.err")"
  if cmp -s "$out/model.safetensors" "$dir/ref-out/model.safetensors"; then S[mismatch.final]="identical to the reference"; else S[mismatch.final]=differs; fail "mismatch: resumed model differs"; fi
}

# ---------------------------------------------------------------- main
START=$(now_ms)
log "lnlens: $BIN (sha256 $(sha256sum < "$BIN" | cut -c1-16), repo $(git rev-parse --short HEAD 2>/dev/null)); work: $WORK; seed $SEED"
want dla && prompt_trials dla "$N_DLA" dla --model gpt2-tiny --prompts prompts/ioi.jsonl --chunk-size 8
want patch && prompt_trials patch "$N_PATCH" "${PATCH_ARGS[@]}"
want train && train_trials "$N_TRAIN"
want conc && conc_trials
want journal && journal_check
want eval && eval_trials "$N_EVAL"
want mismatch && mismatch_trials

v() { echo "${S[$1]:-0}"; }
{
echo
echo "=== lnlens kill -9 / concurrency trials ($(date -u '+%Y-%m-%d %H:%M UTC'), $(( ($(now_ms) - START) / 1000 )) s, seed $SEED)"
for sec in dla patch; do
  want $sec || continue
  echo
  echo "[$sec] reference: $(v $sec.ref_ms) ms (run row after $(v $sec.ref_row_ms) ms), $(v $sec.ref_rows) result rows; ${S[$sec.ref_hash]:-}"
  printf '  %-34s %s\n' "trials" "$(v $sec.trials)" \
    "killed (SIGKILL reached the process)" "$(v $sec.killed)" \
    "  before the run row existed" "$(v $sec.kill_before_row)" \
    "  mid-run (row running)" "$(v $sec.kill_mid_run)" \
    "  after the run was completed" "$(v $sec.kill_after_completed)" \
    "  inside a write transaction" "$(v $sec.kill_in_txn)" \
    "    schema/run row, chunk, final" "$(v $sec.txn_before_row), $(v $sec.txn_chunk), $(v $sec.txn_finish)" \
    "not killed (run had ended)" "$(v $sec.not_killed)" \
    "hot rollback journal left" "$(v $sec.hot_journal_left)" \
    "resumed with --resume ID" "$(v $sec.resumes)" \
    "run again (no row)" "$(v $sec.reruns)" \
    "rows identical to the reference" "$(v $sec.identical)" \
    "mismatches" "$(v $sec.mismatch)" \
    "runs left not completed" "$(v $sec.left_not_completed)" \
    "lock/busy errors" "$(v $sec.lock_errors)"
done
if want train; then
  echo
  echo "[train] reference: $(v train.ref_ms) ms; ${S[train.ref_hash]:-}"
  printf '  %-34s %s\n' "trials" "$(v train.trials)" \
    "killed" "$(v train.killed)" \
    "  before the run row existed" "$(v train.kill_before_row)" \
    "  mid-run" "$(v train.kill_mid_run)" \
    "  after the run was completed" "$(v train.kill_after_completed)" \
    "  while writing a checkpoint" "$(v train.kill_in_ckpt)" \
    "  inside a write transaction" "$(v train.kill_in_txn)" \
    "not killed (run had ended)" "$(v train.not_killed)" \
    "resumed from a checkpoint" "$(v train.resumes)" \
    "row but no checkpoint yet" "$(v train.resume_without_checkpoint)" \
    "run again (--force)" "$(v train.reruns)" \
    "model.safetensors identical" "$(v train.model_identical)" \
    "train_steps+summaries identical" "$(v train.identical)" \
    "mismatches (model / rows)" "$(v train.model_differs) / $(v train.mismatch)" \
    "runs left not completed" "$(v train.left_not_completed)" \
    "lock/busy errors" "$(v train.lock_errors)"
fi
if want conc; then
  echo
  echo "[concurrency] $R rounds of $K simultaneous dla writers on one fresh database, readers looping"
  printf '  %-34s %s\n' "writer starts" "$(v conc.starts)" \
    "writers exiting 0" "$(v conc.writer_exit0)" \
    "runs stored" "$(v conc.runs_stored)" \
    "runs completed" "$(v conc.completed)" \
    "lost runs" "$(v conc.lost)" \
    "rows identical to the reference" "$(v conc.identical) (mismatches $(v conc.mismatch))" \
    "reader calls (runs, query nmae)" "$(v conc.reader_calls) ($(v conc.reader_errors) failed)" \
    "final statuses" "$(awk '{c[$1]+=$2} END {for (s in c) printf "%s %d ", s, c[s]}' "$WORK/conc/statuses" 2>/dev/null)" \
    "resume of a live run: attempts" "$(v conc.live_resume_attempts)" \
    "  refused (exit≠0, one line)" "$(v conc.live_resume_refused)" \
    "  owner ended first (no test)" "$(v conc.live_resume_owner_finished_first)" \
    "  owner's rows identical" "$(v conc.live_resume_owner_identical)" \
    "double resume of a killed run" "$(v conc.double_resume_trials) trials, $(v conc.double_resume_starts) resumes" \
    "  loser refused" "$(v conc.double_resume_refused)" \
    "  loser found it completed" "$(v conc.double_resume_loser_found_completed)" \
    "  run completed / rows identical" "$(v conc.double_resume_completed) / $(v conc.double_resume_identical)" \
    "lock/busy errors" "$(v conc.lock_errors)"
fi
if want journal; then
  echo
  echo "[hot rollback journal] a new database's WAL set-up killed half-way (rebuilt byte for byte)"
  printf '  %-34s %s\n' "lnlens runs" "${S[journal.runs]:-}" "lnlens dla" "${S[journal.dla]:-}"
fi
if want eval; then
  echo
  echo "[eval] Ctrl-C (SIGINT) at a random moment, then --resume; reference $(v eval.ref_ms) ms"
  printf '  %-34s %s\n' "trials" "$(v eval.trials)" \
    "stopped: exit 130, run interrupted" "$(v eval.interrupted)" \
    "ended before the signal (exit 0)" "$(v eval.ended_first)" \
    "stopped before the run row existed" "$(v eval.before_row)" \
    "resumed" "$(v eval.resumes)" \
    "results+summaries identical" "$(v eval.identical) (mismatches $(v eval.mismatch))"
fi
if want mismatch; then
  echo
  echo "[mismatch] a killed training resumed with one option changed"
  printf '  %-34s %s\n' "resumes with a change" "$(v mismatch.trials)" \
    "refused in one line naming it" "$(v mismatch.refused)" \
    "checkpoint / stored steps untouched" "$(v mismatch.checkpoint_untouched) / $(v mismatch.rows_untouched)" \
    "then the same options" "${S[mismatch.final]:-}"
fi
echo
if [ ${#FAILURES[@]} = 0 ]; then echo "failures: none"; else echo "failures: ${#FAILURES[@]}"; printf '  - %s\n' "${FAILURES[@]}"; fi
} | tee "$WORK/summary.txt"
[ ${#FAILURES[@]} = 0 ]
