#!/usr/bin/env python3
"""Times the companion's divergence pipeline on CPU, for comparison with lnlens-bench's compare
job (docs/bench.md, section analyses).

Three randomly initialised TransformerLens models of GPT-2 small shape (LNPre, as the companion's
`load_models.py` loads with fold_ln; weights do not change the time), 100 windows of 128 random
token ids, batches of 8 (lnlens-bench's), run through submarat/removing-layer-norm a15a638's own
code, imported with the stand-ins of make_compare_fixtures.py:
- `InferenceRunner._process_batch` (a runner made with `__new__`, its `model_manager` holding the
  three models and the two pairs lnlens computes, original vs each other; the companion's own
  `ModelFactory` would add the third pair), which runs each model, `_compute_metrics_from_logits`,
  `JSDivergence` and `FormatInference.add_batch_data` (the per-token records);
- then `MetricsSummary.calculate_bootstrap_ci` (1,000 resamples) of each of its eight columns over
  all tokens, as `export_ci_statistics` does (no parquet written: pyarrow is not installed).
Prints one JSON object: seconds of the model passes and metrics, of the records, of the bootstrap.

    /tmp/venv-tl/bin/python scripts/reference/time_companion_compare.py --companion /tmp/companion-a15a638 --threads 2
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_compare_fixtures import import_companion  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companion", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run_inference, metrics, format_results, analyse_models = import_companion(args.companion)
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_vocab=50257,
                                  act_fn="gelu_new", normalization_type="LNPre", device="cpu")
    names = ["baseline", "finetuned", "noLN"]
    models = {n: HookedTransformer(cfg).eval() for n in names}
    tokens = torch.randint(0, 50257, (args.windows, args.context))
    runner = run_inference.InferenceRunner.__new__(run_inference.InferenceRunner)
    runner.config = types.SimpleNamespace(batch_size=args.batch)
    runner.model_manager = types.SimpleNamespace(models=models, model_pairs=[p for p in itertools.combinations(names, 2) if p[0] == "baseline"])
    runner.JSD = metrics.JSDivergence()
    runner.results_formatter = format_results.FormatInference("/dev/null", save_text=False)
    start = time.perf_counter()
    with torch.no_grad():
        for i, s in enumerate(range(0, args.windows, args.batch)):
            runner._process_batch(i, tokens[s:s + args.batch])
    passes = time.perf_counter() - start
    import pandas as pd
    df = pd.DataFrame(runner.results_formatter.data)
    summary = analyse_models.MetricsSummary.__new__(analyse_models.MetricsSummary)
    summary.bootstrap_samples = 1000
    columns = [c for c in df.columns if c.startswith(("ce_", "entropy_", "jsd_"))]
    start = time.perf_counter()
    for c in columns:
        summary.calculate_bootstrap_ci(df[c].values)
    bootstrap = time.perf_counter() - start
    print(json.dumps({"windows": args.windows, "context": args.context, "batch": args.batch, "threads": args.threads,
                      "torch": torch.__version__, "tokens_scored": len(df), "columns": columns,
                      "seconds_passes_metrics_records": round(passes, 2), "seconds_bootstrap": round(bootstrap, 2),
                      "seconds_total": round(passes + bootstrap, 2)}, indent=1))


if __name__ == "__main__":
    main()
