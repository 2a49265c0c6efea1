#!/usr/bin/env python3
"""Times the companion's attention-sink, residual-norm and entropy-neuron loops on CPU, for
comparison with lnlens-bench's `analyses` section (docs/bench.md): the same shape and data as the
bench (GPT-2 small shape, random weights, 100 windows of 128 random token ids, batches of 8,
--threads torch threads), run through submarat/removing-layer-norm a15a638's own code.

- sinks: `sink_rate.py`'s `calculate_batch_sink_rates` (transformers' GPT2LMHeadModel with
  `output_attentions=True`, then `utils.calculate_sink_rate` of all layers and of layer 3), on
  each batch of 8 windows, as its `main()` loops (one model here; main() runs two). The model is a
  randomly initialised `GPT2LMHeadModel` of GPT-2 small's config with eager attention (what
  `output_attentions` needs), not `from_pretrained` (no network).
- norms: `mech_interp/residual_stream/residual_norms.py`'s `ResidualNorms.run_analysis(batch_size=8)`
  (every hook's L2 norms, norm growth and cosine between hooks) on one TransformerLens model of
  GPT-2 small's shape (LNPre, as `load_models.py` loads with fold_ln).
- neurons: `mech_interp/entropy_neurons/ablate_all_models.py`'s `AblationAnalyzer`:
  `extract_activations` (the model over every window, caching the last block's resid_pre,
  attn_out, hook_post), `run_simulation` and `run_ablation` of three neurons (each mean-ablated
  alone, the last layer's output and the unembedding recomputed in rows of its default 512) on the
  same TransformerLens model.

What had to change to run them offline, and nothing else:
- `utils.py` imports `train` (wandb, datasets, …), which `calculate_sink_rate` does not use; and
  `sink_rate.py` imports `std_dicts`, `prepare_dataset` and `pile_eval` (datasets, the Pile) for
  its `main()`, and `scipy.stats` it never calls (scipy is not installed): stand-in modules are put
  in `sys.modules`.
- `ablate_all_models.py` imports `load_dataset` (streams the Pile) and `load_models` (downloads
  the models): stand-ins; its `DataLoader(...).create_dataloader()` yields the 100 random windows
  8 at a time (the companion asks for batch_size=1 and 250 Pile samples of 512 tokens; 8 windows
  of 128 is the bench's shape).
- `ResidualNorms.__init__` reads a parquet file and loads models: the object is made with
  `ResidualNorms.__new__` and given the attributes `__init__` sets (as make_analyses_fixtures.py).
- matplotlib and seaborn: stand-ins (nothing is drawn); the scripts' `figures/` go to a scratch
  directory; `tqdm` is left as is.
Prints one JSON object with the seconds of each.

    /tmp/venv-tl/bin/python scripts/reference/time_companion_analyses.py --companion /tmp/companion-a15a638 --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_analyses_fixtures import import_companion  # noqa: E402
from make_neurons_fixtures import Anything  # noqa: E402


def stand_ins(windows: torch.Tensor, batch: int) -> None:
    for name in ("std_dicts", "prepare_dataset", "pile_eval"):
        module = types.ModuleType(name)
        module.std_dicts, module.prepare_dataset, module.preprocess_pile_dataset = {}, None, None
        sys.modules[name] = module
    for name in ("matplotlib.pylab", "matplotlib.patches", "matplotlib.ticker", "scipy"):
        sys.modules[name] = Anything(name)

    class DataLoader:
        def __init__(self, *_a, **_k):
            pass

        def create_dataloader(self):
            return [windows[i:i + batch] for i in range(0, len(windows), batch)]

    load_dataset = types.ModuleType("load_dataset")
    load_dataset.DataLoader = DataLoader
    sys.modules["load_dataset"] = load_dataset
    load_models = types.ModuleType("load_models")
    load_models.ModelFactory = object
    sys.modules["load_models"] = load_models


def tl_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_vocab=50257,
                                  act_fn="gelu_new", normalization_type="LNPre", device="cpu")
    return HookedTransformer(cfg).eval()


def time_sinks(companion: Path, windows: torch.Tensor, batch: int) -> float:
    from transformers import GPT2Config, GPT2LMHeadModel
    sys.path.insert(0, str(companion))
    import sink_rate  # noqa: E402
    model = GPT2LMHeadModel(GPT2Config(attn_implementation="eager")).eval()
    model.config._attn_implementation = "eager"
    start = time.perf_counter()
    rates = []
    for i in range(0, len(windows), batch):
        rates.append(sink_rate.calculate_batch_sink_rates(model, windows[i:i + batch]))
    return time.perf_counter() - start


def time_norms(rn_module, windows: torch.Tensor, batch: int) -> float:
    import pandas as pd
    rn = rn_module.ResidualNorms.__new__(rn_module.ResidualNorms)
    rn.df = pd.DataFrame({"full_sequence": windows.tolist(), "sequence_length": [windows.shape[1]] * len(windows)})
    rn.last_token_only = False
    rn.model_names = ["baseline"]
    rn.model_factory = types.SimpleNamespace(models={"baseline": tl_model()})
    rn.model_colors, rn.model_labels = {"baseline": "k"}, {"baseline": "baseline"}
    rn.l2_norms, rn.norm_growth_results, rn.cosine_sim_results = {"baseline": {}}, {"baseline": {}}, {"baseline": {}}
    start = time.perf_counter()
    with torch.no_grad():
        rn.run_analysis(batch_size=batch)
    return time.perf_counter() - start


def time_neurons(companion: Path) -> dict:
    sys.path.insert(0, str(companion / "mech_interp" / "entropy_neurons"))
    import ablate_all_models  # noqa: E402
    a = ablate_all_models.AblationAnalyzer(model=tl_model(), model_name="baseline")
    start = time.perf_counter()
    a.extract_activations()
    a.run_simulation()
    passed = time.perf_counter() - start
    a.run_ablation([0, 1, 2])
    total = time.perf_counter() - start
    return {"seconds_extract_and_simulation": round(passed, 2), "seconds_with_3_ablations": round(total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companion", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    companion = args.companion.resolve()
    windows = torch.randint(0, 50257, (args.windows, args.context))
    stand_ins(windows, args.batch)
    _, rn_module, _ = import_companion(companion)
    out = {"windows": args.windows, "context": args.context, "batch": args.batch, "threads": args.threads,
           "torch": torch.__version__}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the companion's prints
                out["seconds_sinks"] = round(time_sinks(companion, windows, args.batch), 2)
                out["seconds_norms"] = round(time_norms(rn_module, windows, args.batch), 2)
                out.update({f"neurons_{k}": v for k, v in time_neurons(companion).items()})
        finally:
            os.chdir(cwd)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
