#!/usr/bin/env python3
"""Reference fixtures for `lnlens neurons` (entropy neurons).

Writes Tests/Fixtures/reference/neurons/{manifest.json, tiny-ln.json, tiny-lnfree.json} from the
committed test checkpoints (Tests/Fixtures/models/tiny-ln, tiny-lnfree) on held-out text windows
(corpus/heldout.txt, the windows make_analyses_fixtures.py uses), with the companion's own code
(submarat/removing-layer-norm at the paper's commit a15a638, mech_interp/entropy_neurons/):

- `svd_comparison.py`, executed whole (it is a script, with no functions to import): per model,
  every last-layer neuron's ||w_out|| (`L2_Wout`), LogitVar (`var`), their `ratio`, the ranking
  `top_indices`, the normalised singular values of W_U (`norm_S`) and the |cosine| of the top
  neuron's w_out with each left singular vector (`cos_sim`);
- `ablate_all_models.py`'s `AblationAnalyzer` (extract_activations, run_simulation,
  run_ablation): per neuron, the per-token |Δloss| and |Δentropy| of its mean-ablation, summarised
  as its `print_ablation_summary` does (median, 25th and 75th percentiles);
- `cumulative_ablation.py`'s `CumulativeAblation`: the mean and standard deviation of the loss
  and entropy with nothing ablated, then with the top 1, 2, … neurons ablated together; and each
  neuron alone (run_ablation([n])), from which lnlens's signed Δloss and Δentropy are taken.
  (`transform_LN_to_noLN.py`'s class is `CumulativeAblation` under another name, with 1000
  samples instead of 250: the same code.)

The neurons ablated are the top K of the LN model's ranking (`top_indices` of `baseline`), the
same indices in both models, as the companion hard-codes the original model's top neurons for all
three models. The null-space fraction of each neuron (lnlens's summary of the companion's SVD
figure: Σ cos² over the bottom NULL_DIMS singular directions, with cos as `svd_comparison.py`
computes it for its top neuron) is computed here from the companion's own `U`.

The companion code is imported or executed, never copied: pass a checkout of it with --companion
(for example `git --git-dir=MIRROR archive a15a638 | tar -x -C /tmp/companion-a15a638`). What had
to change to run it offline, and nothing else:
- `load_dataset.py` imports `datasets` and streams the Pile from a hub: a stand-in module
  `load_dataset` whose `DataLoader(...).create_dataloader()` yields the held-out windows as
  tensors, `batch_size` at a time, as the companion's collate_fn would (no BOS).
- `load_models.py` downloads the models: a stand-in module `load_models` whose `ModelFactory`
  returns the test checkpoints built exactly as make_analyses_fixtures.py's `companion_tl` builds
  them (the companion's StandardModelLoader / NoLNModelLoader, offline). svd_comparison.py asks for
  `baseline`, `finetuned`, `noLN`: there is no vanilla test checkpoint, so `finetuned` is the LN
  model again (its results are not used).
- matplotlib, seaborn: stand-in modules whose every call does nothing (only drawing uses them).
- The scripts write figures/ under the working directory: they are run from a temporary one.
- `svd_comparison.py` calls `t.svd` on float32; nothing changed.

Run by hand from the repository root (never in CI), with TransformerLens 2.16.1, transformers
< 4.57, einops, tqdm and pandas:

    /tmp/venv-tl/bin/python scripts/reference/make_neurons_fixtures.py --companion /tmp/companion-a15a638
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_models_and_fixtures import REFERENCE_DIR, load_tokenizer, tl_version  # noqa: E402
from make_analyses_fixtures import companion_tl, heldout_windows  # noqa: E402

OUT_DIR = REFERENCE_DIR / "neurons"
TOP = 3            # neurons ablated (the companion's ablate_all_models.py and cumulative_ablation.py: 3)
NULL_DIMS = 4      # bottom singular directions of the null-space fraction (lnlens's default for d_model 32)
MODELS = {"tiny-ln": "baseline", "tiny-lnfree": "noLN"}


class Anything(types.ModuleType):
    """A module (or object) every attribute and call of which is a no-op returning itself."""

    def __init__(self, name="stand-in"):
        super().__init__(name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *_a, **_k):
        return self

    def __iter__(self):
        return iter([self, self])

    def __getitem__(self, _k):
        return self


def install_stand_ins(windows: list[list[int]], models: dict) -> None:
    for name in ("matplotlib", "matplotlib.pylab", "matplotlib.pyplot", "matplotlib.patches", "matplotlib.ticker", "seaborn"):
        sys.modules[name] = Anything(name)
    sys.modules["seaborn"].color_palette = lambda *_a, **_k: [(0, 0, 0)] * 10

    class DataLoader:
        def __init__(self, dataset_name="luca-pile", batch_size=10, max_context=1024, num_samples=5000, prepend_bos=False):
            assert not prepend_bos
            self.batch_size, self.max_context = batch_size, max_context

        def create_dataloader(self):
            ws = [w[: self.max_context] for w in windows]
            return [torch.tensor(ws[i:i + self.batch_size]) for i in range(0, len(ws), self.batch_size)]

    load_dataset = types.ModuleType("load_dataset")
    load_dataset.DataLoader = DataLoader
    sys.modules["load_dataset"] = load_dataset

    class ModelFactory:
        def __init__(self, model_names, model_dir=None, model_size="small", **_k):
            self.models = {n: models[n]() for n in model_names}

    load_models = types.ModuleType("load_models")
    load_models.ModelFactory = ModelFactory
    sys.modules["load_models"] = load_models


def svd_results(companion: Path) -> dict:
    """svd_comparison.py run whole; its `results` dict."""
    ns = runpy.run_path(str(companion / "mech_interp" / "entropy_neurons" / "svd_comparison.py"), run_name="svd_comparison")
    return ns["results"]


def weights(r: dict) -> dict:
    U = r["U"].double()
    Wout = torch.tensor(r["Wout"]).double()
    # svd_comparison.py's cos_sim, for every neuron instead of its top one
    cos = ((U.T @ Wout.T) / (Wout.norm(dim=1)[None, :] * U.norm(dim=0)[:, None])).abs()   # [d_model, d_mlp]
    null_fraction = (cos[-NULL_DIMS:] ** 2).sum(0)
    return {
        "L2_Wout": r["L2_Wout"].tolist(), "var": r["var"].tolist(), "ratio": r["ratio"].tolist(),
        "top_indices": [int(i) for i in r["top_indices"]], "norm_S": r["norm_S"].tolist(),
        "cos_sim": r["cos_sim"].tolist(), "null_fraction": null_fraction.tolist(),
    }


def ablations(ablate_mod, cumul_mod, label: str, model, neurons: list[int]) -> dict:
    a = ablate_mod.AblationAnalyzer(model=model, model_name=label)
    a.extract_activations()
    a.run_simulation()
    per = a.run_ablation(list(neurons))
    individual = {}
    for n in neurons:
        le, ee = per[str(n)]["loss_effect"], per[str(n)]["entropy_effect"]
        individual[str(n)] = {
            "loss_effect_median": float(np.median(le)), "loss_effect_q25": float(np.percentile(le, 25)),
            "loss_effect_q75": float(np.percentile(le, 75)), "loss_effect_mean": float(np.mean(le)),
            "entropy_effect_median": float(np.median(ee)), "entropy_effect_q25": float(np.percentile(ee, 25)),
            "entropy_effect_q75": float(np.percentile(ee, 75)), "entropy_effect_mean": float(np.mean(ee)),
        }
    c = cumul_mod.CumulativeAblation(model=companion_model(label), model_name=label)
    c.extract_activations()
    c.run_simulation()
    base = ((c.simulated_loss.mean().item(), c.simulated_loss.std().item()),
            (c.simulated_entropy.mean().item(), c.simulated_entropy.std().item()))
    cumulative = [base] + [c.run_ablation(neurons[:k]) for k in range(1, len(neurons) + 1)]
    for n in neurons:
        (lm, _), (em, _) = c.run_ablation([n])
        individual[str(n)]["loss"], individual[str(n)]["entropy"] = lm, em
        individual[str(n)]["delta_loss"], individual[str(n)]["delta_entropy"] = lm - base[0][0], em - base[1][0]
    ref = a.ref_loss.mean().item()
    return {
        "tokens": int(a.targets.numel()), "ref_loss": ref, "simulated_loss": a.simulated_loss.mean().item(),
        "simulated_entropy": a.simulated_entropy.mean().item(), "individual": individual,
        "cumulative": [{"k": k, "loss_mean": l[0], "loss_sd": l[1], "entropy_mean": e[0], "entropy_sd": e[1]}
                       for k, (l, e) in enumerate(cumulative)],
        "mean_activation": a.mlp_mid.mean(dim=0)[neurons].tolist(),
    }


NAMES = {v: k for k, v in MODELS.items()}


def companion_model(label: str):
    return companion_tl(NAMES[label])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companion", type=Path, required=True, help="a checkout of submarat/removing-layer-norm (a15a638)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    windows = heldout_windows(load_tokenizer())
    install_stand_ins(windows, {"baseline": lambda: companion_tl("tiny-ln"), "finetuned": lambda: companion_tl("tiny-ln"),
                                "noLN": lambda: companion_tl("tiny-lnfree")})
    companion = args.companion.resolve()
    sys.path.insert(0, str(companion / "mech_interp" / "entropy_neurons"))
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            import ablate_all_models  # noqa: E402
            import cumulative_ablation  # noqa: E402
            svd = svd_results(companion)
            neurons = [int(i) for i in svd["baseline"]["top_indices"][:TOP]]
            outs = {}
            for name, label in MODELS.items():
                outs[name] = {"model": name, "companion_name": label, "weights": weights(svd[label]),
                              "ablation": ablations(ablate_all_models, cumulative_ablation, label, companion_tl(name), neurons)}
        finally:
            os.chdir(cwd)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    manifest = {"windows": windows, "context": len(windows[0]), "neurons": neurons, "top": TOP, "null_dims": NULL_DIMS,
                "selected_from": "tiny-ln", "tolerances": {"atol": 1e-4, "rtol": 1e-4},
                "generator": {"transformer_lens": tl_version(), "torch": torch.__version__, "companion_commit": "a15a638"}}
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name, out in outs.items():
        (OUT_DIR / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
        ab = out["ablation"]
        print(f"{name}: neurons {neurons}; loss {ab['simulated_loss']:.5f} (model's own forward {ab['ref_loss']:.5f}); "
              f"cumulative k={TOP} loss {ab['cumulative'][-1]['loss_mean']:.5f}")


if __name__ == "__main__":
    main()
