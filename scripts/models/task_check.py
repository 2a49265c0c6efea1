#!/usr/bin/env python3
"""Does a model do a prompt set's task? Reads `lnlens patch ... --json` on standard input and
prints one Markdown row per model run: prompts, mean clean logit difference (answer - wrong),
fraction of prompts with answer > wrong, mean and median |clean - corrupt|, and how many prompts
have |clean - corrupt| < 0.5 logit. The first argument, if any, names the task in the rows.

    lnlens patch --model gpt2-tiny --model gpt2-tiny-lnfree --model gpt2-tiny-vanilla \
      --prompts topic --prepend-bos --sites resid_pre --methods activation --json --db /tmp/t.sqlite \
      | python3 scripts/models/task_check.py topic
"""
import json
import os
import statistics
import sys

task = sys.argv[1] if len(sys.argv) > 1 else ""
runs = json.load(sys.stdin)["runs"]
print("| task | model | prompts | mean clean logit diff | answer > wrong | mean \\|clean − corrupt\\| "
      "| median \\|clean − corrupt\\| | gap < 0.5 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for run in runs:
    clean = [p["clean_metric"] for p in run["prompts"]]
    gaps = [abs(p["clean_metric"] - p["corrupt_metric"]) for p in run["prompts"]]
    n = len(clean)
    correct = sum(c > 0 for c in clean)
    print(f"| {task} | `{os.path.basename(run['model'])}` | {n} | {statistics.mean(clean):.3f} "
          f"| {correct}/{n} ({100 * correct / n:.1f} %) | {statistics.mean(gaps):.3f} "
          f"| {statistics.median(gaps):.3f} | {sum(g < 0.5 for g in gaps)} |")
