#!/usr/bin/env python3
"""Reference fixtures for `lnlens compare`.

Writes Tests/Fixtures/reference/compare/{ln-vs-lnfree.json, lnfree-vs-ln.json} from the committed
test checkpoints (Tests/Fixtures/models/tiny-ln, tiny-lnfree): the first as the original and the
second as the model compared with it, and the other way round, on held-out windows of 16 tokens
of corpus/heldout.txt (tokenized as lnlens tokenizes a text: documents split at `<|endoftext|>`
lines, each followed by 50256): the first six windows of the stream, and three windows that each
read a document boundary (50256 at position 5), so that every token kind occurs; and
calibration.json: `calculate_ece_with_ci` on seeded synthetic confidences over every bin (the
test models' top probabilities all fall in the first).

Everything is computed by the companion code (submarat/removing-layer-norm at the paper's commit
a15a638), imported, never copied:
- `mech_interp/run_inference.py`: `InferenceRunner._compute_metrics_from_logits` (CE, entropy,
  probabilities) on each model's logits, and the JSD of its `metrics.JSDivergence()` (eps 1e-8)
  between the original's and the other's probabilities, as `_process_batch` calls them;
- `mech_interp/format_results.py`: `FormatInference._process_sequence`, the per-token records
  (`sequence_length`, `last_token`, `ce_*`, `entropy_*`, `jsd_*`) the analysis reads;
- `mech_interp/inference_analysis/analyse_models.py`: `MetricsSummary.calculate_bootstrap_ci`
  with `bootstrap_samples=1000` (its `__main__`, which wrote `figures/*/ci_statistics.csv`) on
  each column, and `calculate_ece_with_ci` on each model's `max_prob` and `max_token ==
  next_token` with `np.linspace(0, 1, 11)`, as `export_ci_statistics` calls them, over all
  records and over each token kind.
The companion computes no KL in these scripts; lnlens's `kl` is KL(original || other) with the
same smoothing as `JSDivergence`, computed here with that module's own `kl_div`
(`nn.KLDivLoss(reduction='none')(log q, p).sum(-1)`, p, q smoothed and renormalised as its
`forward` does). Token kinds, which the companion's records hold but its summaries do not split
by: `first` = `sequence_length == 1`, `eot` = `last_token == 50256` otherwise, `other` the rest.

What had to change to import the companion offline, and nothing else:
- `run_inference.py` imports `load_dataset` (Hugging Face `datasets`, absent) and `load_models`
  (which `_compute_metrics_from_logits` does not use): stand-in modules `load_dataset` and
  `load_models` are put in `sys.modules`; the method is called unbound (it reads nothing of
  `self`).
- `analyse_models.py` imports matplotlib, seaborn, mpl_toolkits and scipy (scipy is used only by
  the analytical interval, not the bootstrap the published numbers use): stand-ins; the
  `MetricsSummary` is made with `__new__` and given `bootstrap_samples` (its `__init__` reads a
  parquet file).
- The models are built offline from the test checkpoints as the companion's `load_models.py`
  builds them (make_analyses_fixtures.companion_tl: TransformerLens; the LN-free one with its
  LayerNorm weights / 1e6, eps 1e-5, then `removeLN`), and run as `model(batch)` on each window
  alone, as `_process_batch` does.

Run by hand from the repository root (never in CI), with TransformerLens 2.16.1, transformers
< 4.57 and pandas:

    /tmp/venv-tl/bin/python scripts/reference/make_compare_fixtures.py --companion /tmp/companion-a15a638
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
from make_models_and_fixtures import REFERENCE_DIR, REPO, load_tokenizer, tl_version  # noqa: E402
from make_analyses_fixtures import companion_tl  # noqa: E402

OUT_DIR = REFERENCE_DIR / "compare"
WINDOW = 16
STREAM_WINDOWS = 6
BOUNDARY_WINDOWS = 3
EOT_AT = 5
RESAMPLES = 1000
COMPANION_NAMES = {"tiny-ln": "baseline", "tiny-lnfree": "noLN"}
KINDS = ("first", "eot", "other")


def heldout_stream(tokenizer) -> list[int]:
    tokens: list[int] = []
    doc: list[str] = []
    for line in (REPO / "corpus" / "heldout.txt").read_text().splitlines():
        if line.strip() == "<|endoftext|>":
            if "\n".join(doc).strip():
                tokens += tokenizer.encode("\n".join(doc).strip()) + [50256]
            doc = []
        else:
            doc.append(line)
    return tokens


def windows(tokenizer) -> list[list[int]]:
    stream = heldout_stream(tokenizer)
    out = [stream[i * WINDOW:(i + 1) * WINDOW] for i in range(STREAM_WINDOWS)]
    eots = [i for i, t in enumerate(stream) if t == 50256][:BOUNDARY_WINDOWS]
    out += [stream[e - EOT_AT:e - EOT_AT + WINDOW] for e in eots]
    assert all(len(w) == WINDOW for w in out)
    return out


def import_companion(root: Path):
    """(run_inference, metrics, format_results, analyse_models) with the stand-ins above."""
    for name in ("load_dataset", "load_models"):
        stub = types.ModuleType(name)
        stub.DataLoader = stub.ModelFactory = None
        sys.modules[name] = stub
    for name in ("matplotlib", "matplotlib.pyplot", "seaborn", "mpl_toolkits", "mpl_toolkits.axes_grid1", "scipy", "scipy.stats"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    sys.modules["mpl_toolkits.axes_grid1"].make_axes_locatable = None
    sys.modules["scipy"].stats = sys.modules["scipy.stats"]
    sys.path.insert(0, str(root / "mech_interp"))
    sys.path.insert(0, str(root / "mech_interp" / "inference_analysis"))
    import run_inference, metrics, format_results, analyse_models  # noqa: E401,E402
    return run_inference, metrics, format_results, analyse_models


def compare(companion, names: list[str], wins: list[list[int]]) -> dict:
    run_inference, metrics, format_results, analyse_models = companion
    labels = [COMPANION_NAMES[n] for n in names]
    models = {label: companion_tl(name) for label, name in zip(labels, names)}
    jsd = metrics.JSDivergence()
    formatter = format_results.FormatInference("/dev/null", save_text=False)
    pair = f"{labels[0]}_vs_{labels[1]}"
    records, kls = [], []
    for index, w in enumerate(wins):
        batch = torch.tensor([w])
        with torch.no_grad():
            m = {label: run_inference.InferenceRunner._compute_metrics_from_logits(None, model(batch), batch)
                 for label, model in models.items()}
            p, q = m[labels[0]]["probs"], m[labels[1]]["probs"]
            d = jsd(p, q)
            # KL(original || other): JSDivergence.forward's smoothing, its kl_div
            ps, qs = p + jsd.eps, q + jsd.eps
            ps, qs = ps / ps.sum(dim=-1, keepdim=True), qs / qs.sum(dim=-1, keepdim=True)
            kl = jsd.kl_div(torch.log(qs), ps).sum(-1)
        ce = {k: v["ce_loss"].numpy() for k, v in m.items()}
        ent = {k: v["entropy"].numpy() for k, v in m.items()}
        mp = {k: v["max_prob"].numpy() for k, v in m.items()}
        mt = {k: v["max_token"].numpy() for k, v in m.items()}
        records += formatter._process_sequence((0, index, batch.numpy()[0], ce, {pair: d.numpy()}, ent, mp, mt, None))
        kls += [float(v) for v in kl[0]]
    for r, k in zip(records, kls):
        r["kl"] = k
        r["kind"] = "first" if r["sequence_length"] == 1 else "eot" if r["last_token"] == 50256 else "other"
    summary = analyse_models.MetricsSummary.__new__(analyse_models.MetricsSummary)
    summary.bootstrap_samples = RESAMPLES
    columns = {("ce", "m0"): f"ce_{labels[0]}", ("ce", "m1"): f"ce_{labels[1]}",
               ("entropy", "m0"): f"entropy_{labels[0]}", ("entropy", "m1"): f"entropy_{labels[1]}",
               ("jsd", "m1"): f"jsd_{pair}", ("kl", "m1"): "kl"}
    summaries = []
    for (quantity, site), column in columns.items():
        for kind in (None,) + KINDS:
            data = np.array([r[column] for r in records if kind is None or r["kind"] == kind])
            if len(data) == 0:
                continue
            low, high = summary.calculate_bootstrap_ci(data)
            summaries.append({"scope": quantity, "key": site if kind is None else f"{site}/{kind}",
                              "mean": float(np.mean(data)), "ci_low": float(low), "ci_high": float(high), "n": len(data)})
    margin = 1.0
    for site, label in (("m0", labels[0]), ("m1", labels[1])):
        for kind in (None,) + KINDS:
            of = [r for r in records if kind is None or r["kind"] == kind]
            if not of:
                continue
            conf = np.array([r[f"max_prob_{label}"] for r in of])
            correct = np.array([int(r[f"max_token_{label}"] == r["next_token"]) for r in of])
            ece, low, high, *_ = summary.calculate_ece_with_ci(conf, correct, np.linspace(0, 1, 11), use_bootstrap=True)
            summaries.append({"scope": "ece", "key": site if kind is None else f"{site}/{kind}",
                              "mean": float(ece), "ci_low": float(low), "ci_high": float(high), "n": len(of)})
            margin = min(margin, float(np.min(np.abs(conf[:, None] - np.linspace(0, 1, 11)[None, :]))))
    assert margin > 1e-5, f"a top probability lies within {margin} of a calibration bin edge: pick other windows"
    tokens = [{"unit": r["original_idx"], "position": r["sequence_length"] - 1, "kind": r["kind"],
               "values": {**{f"{q}.{s}": float(r[c]) for (q, s), c in columns.items()},
                          **{f"max_prob.{s}": float(r[f"max_prob_{lab}"]) for s, lab in (("m0", labels[0]), ("m1", labels[1]))},
                          **{f"correct.{s}": float(r[f"max_token_{lab}"] == r["next_token"])
                             for s, lab in (("m0", labels[0]), ("m1", labels[1]))}}} for r in records]
    return {"models": names, "windows": wins, "tokens": tokens, "summaries": summaries}


def calibration_cases(companion) -> list[dict]:
    """`calculate_ece_with_ci` on seeded synthetic confidences spread over every bin (the test
    models' top probabilities all lie in the first bin), including the edges 0.3 and 1."""
    summary = companion[3].MetricsSummary.__new__(companion[3].MetricsSummary)
    summary.bootstrap_samples = RESAMPLES
    rng = np.random.default_rng(20)
    out = []
    for n in (7, 200):
        conf = np.round(rng.uniform(0, 1, n), 6)
        conf[:2] = (0.30000000000000004, 1.0)
        correct = (rng.uniform(0, 1, n) < conf).astype(int)
        ece, low, high, *_ = summary.calculate_ece_with_ci(conf, correct, np.linspace(0, 1, 11), use_bootstrap=True)
        out.append({"confidence": conf.tolist(), "correct": correct.tolist(), "ece": float(ece), "ci_low": float(low),
                    "ci_high": float(high)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companion", type=Path, required=True, help="a checkout of submarat/removing-layer-norm (a15a638)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    companion = import_companion(args.companion)
    wins = windows(load_tokenizer())
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "calibration.json").write_text(json.dumps(calibration_cases(companion), indent=1) + "\n")
    for file, names in (("ln-vs-lnfree", ["tiny-ln", "tiny-lnfree"]), ("lnfree-vs-ln", ["tiny-lnfree", "tiny-ln"])):
        out = compare(companion, names, wins)
        out.update({"context": WINDOW, "resamples": RESAMPLES, "tolerances": {"atol": 1e-4, "rtol": 1e-4},
                    "generator": {"transformer_lens": tl_version(), "torch": torch.__version__, "companion_commit": "a15a638"}})
        (OUT_DIR / f"{file}.json").write_text(json.dumps(out, indent=1) + "\n")
        s = {(r["scope"], r["key"]): r for r in out["summaries"]}
        print(f"{file}: {len(out['tokens'])} tokens, JSD {s[('jsd', 'm1')]['mean']:.4f} "
              f"[{s[('jsd', 'm1')]['ci_low']:.4f}, {s[('jsd', 'm1')]['ci_high']:.4f}], kinds "
              + ", ".join(f"{k} {s[('ce', 'm0/' + k)]['n']}" for k in KINDS if ("ce", "m0/" + k) in s))


if __name__ == "__main__":
    main()
