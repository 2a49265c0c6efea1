#!/usr/bin/env python3
"""Reference fixtures for `lnlens sinks`, `lnlens norms` and `lnlens lens`.

Writes Tests/Fixtures/reference/analyses/{manifest.json, tiny-ln.json, tiny-lnfree.json} from the
committed test checkpoints (Tests/Fixtures/models/tiny-ln, tiny-lnfree), on held-out text windows
(corpus/heldout.txt) and IOI prompts (prompts/ioi.jsonl), with:

- attention sinks: the companion's own `utils.calculate_sink_rate` (submarat/removing-layer-norm
  at the paper's commit a15a638), on transformers' `output_attentions` of each window alone;
- residual norms: the companion's own `mech_interp/residual_stream/residual_norms.py`
  (`ResidualNorms.run_analysis`, then its `plot_norms`, `plot_norm_growth` and
  `plot_cosine_similarity`, whose plotted means and standard deviations are read back from a
  recording stand-in for matplotlib);
- logit lens: TransformerLens 2.16.1's `cache.accumulated_resid(layer=None, incl_mid=True,
  apply_ln=True)` @ W_U + b_U, probabilities and KL in float64 from those float32 logits.

The companion code is imported, never copied: pass a checkout of it with --companion (for example
`git --git-dir=MIRROR archive a15a638 | tar -x -C /tmp/companion-a15a638`). What had to change to
import it offline, and nothing else:
- `utils.py` starts with `from train import load_model`, and `train.py` imports wandb, datasets,
  pydantic, devtools and the Pile loaders, none of which `calculate_sink_rate` uses: a stand-in
  module `train` (with a `load_model` that raises) is put in `sys.modules` before `import utils`.
- `residual_norms.py` imports seaborn and matplotlib, used only for colours and drawing: stand-ins
  are put in `sys.modules`; the pyplot stand-in records what `ax.plot` and `ax.fill_between`
  receive, which is how the means and standard deviations the companion plots are read.
- `ResidualNorms.__init__` reads a parquet file and downloads models through `ModelFactory`: the
  object is made with `ResidualNorms.__new__` and given the attributes `__init__` would set
  (`df` with the windows in `full_sequence`, `model_names`, `model_factory.models`, the result
  dicts); the models are built offline from the test checkpoints exactly as the companion's
  `load_models.py` builds them (StandardModelLoader: TransformerLens with fold_ln,
  center_writing_weights, center_unembed; NoLNModelLoader: LayerNorm weights / 1e6, eps 1e-5,
  the same processing, then `removeLN` — every LayerNorm an identity, normalization_type None).
  The LN-free model is named `noLN` so that the companion copies its last resid_post as
  `ln_final.hook_normalized`, as it does for its LN-free models.

Run by hand from the repository root (never in CI), with TransformerLens 2.16.1, transformers
< 4.57 and pandas:

    /tmp/venv-tl/bin/python scripts/reference/make_analyses_fixtures.py --companion /tmp/companion-a15a638
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_models_and_fixtures import (  # noqa: E402
    REFERENCE_DIR, REPO, TEST_MODELS_DIR, load_checkpoint, load_tl, load_tokenizer, tl_version)

OUT_DIR = REFERENCE_DIR / "analyses"
WINDOW = 16          # tokens per text window (the test models have 32 positions)
WINDOWS = 6          # held-out windows, the first ones of corpus/heldout.txt
PROMPTS = 5          # IOI prompts (prompts/ioi.jsonl, the first lines), with <|endoftext|> first
SINK_EPS = (0.3, 0.1)
MODELS = {"tiny-ln": "baseline", "tiny-lnfree": "noLN"}  # the companion's name for each


# ---------------------------------------------------------------------------------------------
# Inputs


def heldout_windows(tokenizer) -> list[list[int]]:
    """As `lnlens` cuts a text: documents split at `<|endoftext|>` lines, each followed by 50256,
    non-overlapping windows of WINDOW tokens from the start."""
    text = (REPO / "corpus" / "heldout.txt").read_text()
    tokens: list[int] = []
    doc: list[str] = []
    for line in text.splitlines():
        if line.strip() == "<|endoftext|>":
            if "\n".join(doc).strip():
                tokens += tokenizer.encode("\n".join(doc).strip()) + [50256]
            doc = []
            if len(tokens) >= WINDOW * WINDOWS:
                break
        else:
            doc.append(line)
    assert len(tokens) >= WINDOW * WINDOWS, "heldout.txt's first chapters are shorter than expected"
    return [tokens[i * WINDOW:(i + 1) * WINDOW] for i in range(WINDOWS)]


def ioi_prompts(tokenizer) -> list[dict]:
    out = []
    for line in (REPO / "prompts" / "ioi.jsonl").read_text().splitlines()[:PROMPTS]:
        p = json.loads(line)
        answer = tokenizer.encode(p["answer"])
        assert len(answer) == 1
        out.append({"prompt": p["prompt"], "answer": p["answer"], "tokens": [50256] + tokenizer.encode(p["prompt"]),
                    "answer_id": answer[0]})
    return out


# ---------------------------------------------------------------------------------------------
# Importing the companion


def import_companion(root: Path):
    """(utils, residual_norms, recorder) from the companion checkout, with the stand-ins above."""
    train = types.ModuleType("train")

    def load_model(*_a, **_k):
        raise RuntimeError("stand-in: train.load_model is not used by calculate_sink_rate")

    train.load_model = load_model
    sys.modules["train"] = train
    recorder = PyplotRecorder()
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.pyplot = recorder
    sys.modules["matplotlib"] = matplotlib
    sys.modules["matplotlib.pyplot"] = recorder
    seaborn = types.ModuleType("seaborn")
    seaborn.color_palette = lambda *_a, **_k: [(0, 0, 0)] * 10
    sys.modules["seaborn"] = seaborn
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "mech_interp"))
    sys.path.insert(0, str(root / "mech_interp" / "residual_stream"))
    import utils  # noqa: E402
    import residual_norms  # noqa: E402
    return utils, residual_norms, recorder


class RecordingAxes:
    """Keeps what the companion's plot functions draw: per model label, the means (`plot`) and
    the band around them (`fill_between`)."""

    def __init__(self):
        self.lines: list[tuple[str, list, list]] = []
        self.bands: list[tuple[list, list, list]] = []

    def plot(self, x, y, *_a, label=None, **_k):
        self.lines.append((label, list(x), [float(v) for v in y]))

    def fill_between(self, x, low, high, **_k):
        self.bands.append((list(x), [float(v) for v in low], [float(v) for v in high]))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *_a, **_k: None


class PyplotRecorder(types.ModuleType):
    def __init__(self):
        super().__init__("matplotlib.pyplot")
        self.axes: list[RecordingAxes] = []

    def subplots(self, nrows, ncols, **_k):
        axes = np.empty(nrows * ncols, dtype=object)
        for i in range(nrows * ncols):
            axes[i] = RecordingAxes()
        self.axes = list(axes)
        return None, (axes[0] if nrows * ncols == 1 else axes)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *_a, **_k: None


# ---------------------------------------------------------------------------------------------
# Models as the companion loads them


def companion_tl(name: str):
    """StandardModelLoader / NoLNModelLoader of mech_interp/load_models.py, offline."""
    hf = load_checkpoint(TEST_MODELS_DIR / name)
    if MODELS[name] != "noLN":
        return load_tl(hf, processed=True)
    for block in hf.transformer.h:
        block.ln_1.weight.data = block.ln_1.weight.data / 1e6
        block.ln_1.eps = 1e-5
        block.ln_2.weight.data = block.ln_2.weight.data / 1e6
        block.ln_2.eps = 1e-5
    hf.transformer.ln_f.weight.data = hf.transformer.ln_f.weight.data / 1e6
    hf.transformer.ln_f.eps = 1e-5
    hf.config.layer_norm_epsilon = 1e-5
    model = load_tl(hf, processed=True)
    for i in range(len(model.blocks)):  # HookedTransformerNoLN.removeLN
        model.blocks[i].ln1 = torch.nn.Identity()
        model.blocks[i].ln2 = torch.nn.Identity()
    model.ln_final = torch.nn.Identity()
    model.cfg.normalization_type = None
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The three analyses


def sinks(utils, name: str, windows: list[list[int]]) -> dict:
    hf = load_checkpoint(TEST_MODELS_DIR / name)
    L, H = hf.config.n_layer, hf.config.n_head
    out: dict = {}
    for eps in SINK_EPS:
        per_head, per_window, per_layer, margin = [], [], [], float("inf")
        for w in windows:
            with torch.no_grad():
                att = hf(torch.tensor([w]), output_attentions=True).attentions
            per_window.append(float(utils.calculate_sink_rate(hf, att, eps=eps)))
            per_layer.append([float(utils.calculate_sink_rate(hf, [a], eps=eps)) for a in att])
            per_head.append([[float(utils.calculate_sink_rate(hf, [a[:, h:h + 1]], eps=eps)) * L * H for h in range(H)]
                             for a in att])
            margin = min(margin, min(float((a[..., 0] - eps).abs().min()) for a in att))
        v = np.array(per_window)
        out[str(eps)] = {
            "per_head": per_head, "companion_all": per_window, "companion_layer": per_layer,
            # sink_rate.py main()'s statistics, over windows (its batches of 8 are windows here)
            "mean": float(np.mean(v)), "ci_low": float(np.percentile(v, 2.5)), "ci_high": float(np.percentile(v, 97.5)),
            "q25": float(np.percentile(v, 25)), "q75": float(np.percentile(v, 75)), "median": float(np.median(v)),
            "min_margin": margin,
        }
        assert margin > 1e-4, f"{name}: a pattern value lies within {margin} of eps {eps}: pick other windows"
    return out


def norms(rn_module, recorder, name: str, windows: list[list[int]]) -> dict:
    import pandas as pd
    label = MODELS[name]
    rn = rn_module.ResidualNorms.__new__(rn_module.ResidualNorms)
    rn.df = pd.DataFrame({"full_sequence": windows, "sequence_length": [len(w) for w in windows]})
    rn.last_token_only = False
    rn.model_names = [label]
    rn.model_factory = types.SimpleNamespace(models={label: companion_tl(name)})
    rn.model_colors, rn.model_labels = {label: "k"}, {label: label}
    rn.l2_norms = {label: {}}
    rn.norm_growth_results = {label: {}}
    rn.cosine_sim_results = {label: {}}
    rn.run_analysis()
    pairs, _, hooks, _ = rn._get_hook_pairs_and_labels()
    out = {"hooks": hooks, "pairs": [list(p) for p in pairs],
           "l2_norms": {h: torch.cat(rn.l2_norms[label][h], 0).tolist() for h in hooks}}
    for kind, plot in (("norm", rn.plot_norms), ("norm_ratio", rn.plot_norm_growth), ("cosine", rn.plot_cosine_similarity)):
        plot()
        for ax, position in zip(recorder.axes, ("first", "rest")):
            (_, x, means), = ax.lines
            (_, low, high), = ax.bands
            sds = []
            for m, lo, hi in zip(means, low, high):
                if kind != "cosine":
                    sds.append(hi - m)
                elif hi < 1:          # the companion clips the band to [0, 1]
                    sds.append(hi - m)
                elif lo > 0:
                    sds.append(m - lo)
                else:
                    sds.append(None)
            out[f"{kind}.{position}"] = {"x": [int(i) for i in x], "mean": means, "sd": sds}
    return out


def lens(name: str, units: list[dict]) -> dict:
    """Per unit and accumulated residual (TL labels): mean over the unit's targets of the target's
    probability, rank (1 + number of strictly larger logits), top-1 (rank 1) and KL(final || layer)."""
    model = load_tl(load_checkpoint(TEST_MODELS_DIR / name), processed=True)
    rows = []
    for u in units:
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.tensor([u["tokens"]]))
            resid, labels = cache.accumulated_resid(layer=None, incl_mid=True, apply_ln=True, return_labels=True)
            logits = (resid[:, 0] @ model.W_U + model.b_U).double()   # [layers, T, V]
        logp = torch.log_softmax(logits, dim=-1)
        final = logp[labels.index("final_post")]
        per_layer = {}
        for i, lab in enumerate(labels):
            probs, ranks, top1, kls, ties = [], [], [], [], []
            for pos, target in u["targets"]:
                row = logits[i, pos]
                t = row[target]
                rank = int((row > t).sum()) + 1
                ties.append(int(((row - t).abs() < 1e-4).sum()) - 1)
                probs.append(float(logp[i, pos, target].exp()))
                ranks.append(rank)
                top1.append(1.0 if rank == 1 else 0.0)
                kls.append(float((final[pos].exp() * (final[pos] - logp[i, pos])).sum()))
            per_layer[lab] = {"prob": float(np.mean(probs)), "rank": float(np.mean(ranks)), "top1": float(np.mean(top1)),
                              "kl": float(np.mean(kls)), "ties": max(ties)}
        rows.append(per_layer)
    return {"labels": labels, "units": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companion", type=Path, required=True, help="a checkout of submarat/removing-layer-norm (a15a638)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    utils, rn_module, recorder = import_companion(args.companion)
    tokenizer = load_tokenizer()
    windows = heldout_windows(tokenizer)
    prompts = ioi_prompts(tokenizer)
    text_units = [{"tokens": w, "targets": [(p, w[p + 1]) for p in range(len(w) - 1)]} for w in windows]
    prompt_units = [{"tokens": p["tokens"], "targets": [(len(p["tokens"]) - 1, p["answer_id"])]} for p in prompts]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    manifest = {"windows": windows, "prompts": prompts, "sink_eps": list(SINK_EPS),
                "tolerances": {"atol": 1e-4, "rtol": 1e-4},
                "generator": {"transformer_lens": tl_version(), "torch": torch.__version__,
                              "companion_commit": "a15a638"}}
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in MODELS:
        out = {"model": name, "sinks": sinks(utils, name, windows), "norms": norms(rn_module, recorder, name, windows),
               "lens_text": lens(name, text_units), "lens_prompts": lens(name, prompt_units)}
        (OUT_DIR / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
        s = out["sinks"]["0.3"]
        print(f"{name}: sink rate mean {s['mean']:.4f} (margin {s['min_margin']:.2e}); "
              f"final-layer answer prob {np.mean([u['final_post']['prob'] for u in out['lens_prompts']['units']]):.4f}")


if __name__ == "__main__":
    main()
