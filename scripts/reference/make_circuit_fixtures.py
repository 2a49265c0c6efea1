"""Reference for circuit evaluation (faithfulness): Tests/Fixtures/reference/circuit/.

For the LN and LN-free test checkpoints (TransformerLens 2.16.1, processed as lnlens processes them,
with use_attn_result, use_split_qkv_input, use_hook_mlp_in) and the two IOI prompt pairs with BOS of
the edges fixtures (make_edges_fixtures.py), hannamw/EAP-IG's own code selects circuits and
evaluates them:

- scores: the EAP scores of the edges fixtures (lnlens's convention, = hannamw `attribute(method='EAP')`
  with clean and corrupted swapped), computed here again with hannamw's code;
- selection: hannamw `Graph.apply_topn(n, absolute=True)` (reset, top n by |score|, prune) and
  `Graph.apply_greedy(n, absolute=True)` (from the logits up, prune) on those scores; stored as
  the in_graph mask after selection and pruning (topn_raw: apply_topn with prune=False);
- evaluation: hannamw `evaluate_graph(model, graph, [([clean], [corrupt], label)], metric,
  intervention='patching')`: the clean run in which every edge outside the (pruned) circuit carries
  the corrupted run's upstream activation, metric logit[answer] - logit[wrong] at the last position;
- threshold: hannamw `Graph.apply_threshold(t, absolute=True)` (reset, every edge with |score| >= t,
  prune; threshold_raw: prune=False) at t = 0 (every edge), t = 2 max |score| (none) and thresholds
  keeping near the counts below before pruning;
- random: two random edge masks (density 0.3 and 0.8, seeded) evaluated the same way (evaluate_graph
  prunes them first), to check evaluation apart from selection.

n for the in-between circuits: near the targets below, moved up until the selection is stable, i.e.
the same under 8 random perturbations of the scores by 1e-4 of max |score| (lnlens's own EAP scores
differ from these by far less, float32 rounding), so the Swift test can select from its own scores. n = 0 (the corrupted run) and n = all edges (the clean run) always.
A threshold likewise sits in a gap of the sorted |scores| wider than that perturbation on each
side (the shortest decimal there), checked with the same 8 perturbations.

hannamw/EAP-IG is loaded as by make_edges_fixtures.py (commit 795f560 from EAP_SRC, default
/tmp/eap/src; scores on model.cfg.device, token ids instead of strings: `tokenize_plus` replaced in
eap.attribute and eap.evaluate).

Files: {model}.safetensors and manifest.json (scores, topn, greedy, random), {model}.threshold.safetensors
and threshold.json (threshold); --threshold writes only the latter (they were added later: float32
results differ across CPUs in the last bits, so adding them must not rewrite the others).

Run from the repository root (~10 s):
    nice /tmp/venv-tl-building/bin/python scripts/reference/make_circuit_fixtures.py [--threshold]
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_edges_fixtures import EAP_COMMIT, PROMPTS, hannamw_metric, hannamw_scores, import_eap  # noqa: E402
from make_models_and_fixtures import (  # noqa: E402
    BOS_ID, BOTH_MODELS, PATCHING_PROMPTS, REFERENCE_DIR, TEST_MODELS_DIR, TEST_MODEL_VARIATIONS,
    load_checkpoint, load_tl, load_tokenizer, save_numpy, tl_version,
)

CIRCUIT_DIR = REFERENCE_DIR / "circuit"
TOPN_TARGETS = [1, 3, 8, 15, 30, 60]
GREEDY_TARGETS = [4, 12, 40]
THRESHOLD_TARGETS = [10, 20, 30, 50, 80]  # edges with |score| >= t, before pruning
RANDOM_DENSITIES = [0.3, 0.8]
PERTURBATION = 1e-4


def select(Graph, model, scores, method, n, prune=True):
    graph = Graph.from_model(model)
    graph.scores[:] = torch.nan_to_num(scores.to(graph.scores.dtype), nan=0.0)
    if method == "topn":
        graph.apply_topn(n, absolute=True, prune=prune)
    elif method == "threshold":
        graph.apply_threshold(n, absolute=True, prune=prune)
    else:
        graph.apply_greedy(n, absolute=True, prune=prune)
    return graph


def stable_n(Graph, model, scores, method, target, scale):
    """The first n >= target whose selection is unchanged by small perturbations of the scores."""
    rng = np.random.default_rng(target)
    for n in range(target, int(torch.isfinite(scores).sum())):
        want = select(Graph, model, scores, method, n).in_graph.clone()
        if all(torch.equal(select(Graph, model, scores + torch.tensor(rng.uniform(-1, 1, scores.shape)) * PERTURBATION * scale,
                                  method, n).in_graph, want) for _ in range(8)):
            return n
    raise RuntimeError(f"no stable {method} selection from n = {target}")


def stable_threshold(Graph, model, scores, target, scale):
    """A threshold keeping the first k >= target edges (before pruning) whose |score| gap to the
    next is more than twice the perturbation: the shortest decimal inside the gap, at least one
    perturbation from both ends, whose selection is unchanged by 8 perturbations of the scores."""
    rng = np.random.default_rng(1000 + target)
    real = Graph.from_model(model).real_edge_mask
    mags = np.sort(np.abs(scores[real].numpy().astype(np.float64)))[::-1]
    margin = PERTURBATION * scale
    for k in range(target, len(mags)):
        lo, hi = mags[k] + margin, mags[k - 1] - margin
        if lo >= hi:
            continue
        t = next(float(f"{(lo + hi) / 2:.{d}g}") for d in range(1, 18) if lo < float(f"{(lo + hi) / 2:.{d}g}") < hi)
        want = select(Graph, model, scores, "threshold", t, prune=False).in_graph.clone()
        assert int(want.sum()) == k
        if all(torch.equal(select(Graph, model, scores + torch.tensor(rng.uniform(-1, 1, scores.shape)) * margin,
                                  "threshold", t, prune=False).in_graph, want) for _ in range(8)):
            return t
    raise RuntimeError(f"no stable threshold from {target} edges")


def evaluate(evaluate_module, model, graph, clean, corrupt, label) -> float:
    loader = [([clean], [corrupt], torch.tensor([label]))]
    result = evaluate_module.evaluate_graph(model, graph, loader, hannamw_metric, quiet=True, intervention="patching")
    return float(result.reshape(-1)[0])


def prompt_pairs(tokenizer) -> list[dict]:
    prompts = []
    for i in PROMPTS:
        p = PATCHING_PROMPTS[i]
        ids = [BOS_ID] + tokenizer(p["prompt"])["input_ids"]
        cids = [BOS_ID] + tokenizer(p["corrupt"])["input_ids"]
        a, w = tokenizer(p["answer"])["input_ids"], tokenizer(p["wrong"])["input_ids"]
        assert len(a) == 1 and len(w) == 1 and len(ids) == len(cids)
        prompts.append({**p, "tokens": ids, "corrupt_tokens": cids, "answer_id": a[0], "wrong_id": w[0]})
    return prompts


def circuits_of_prompt(modules, model, p, seed) -> tuple[dict, dict]:
    """Every circuit of one prompt pair: its masks, hannamw's metric of each, the n used."""
    attribute, Graph, evaluate_module = modules
    clean, corrupt, label = p["tokens"], p["corrupt_tokens"], [p["answer_id"], p["wrong_id"]]
    graph, eap = hannamw_scores(attribute, Graph, model, corrupt, clean, label, "EAP")
    n_edges = int(graph.real_edge_mask.sum())
    scale = float(np.nanmax(np.abs(eap.numpy())))
    out: dict = {"eap": eap.numpy()}
    ns = {"topn": sorted({0, n_edges} | {stable_n(Graph, model, eap, "topn", t, scale) for t in TOPN_TARGETS}),
          "greedy": sorted({stable_n(Graph, model, eap, "greedy", t, scale) for t in GREEDY_TARGETS}),
          "threshold": sorted({0.0, float(f"{2 * scale:.3g}")} | {stable_threshold(Graph, model, eap, t, scale) for t in THRESHOLD_TARGETS})}
    for method in ("topn", "greedy", "threshold"):
        masks, metrics, counts = [], [], []
        for n in ns[method]:
            g = select(Graph, model, eap, method, n)
            masks.append(g.in_graph.numpy().copy())
            metrics.append(evaluate(evaluate_module, model, g, clean, corrupt, label))
            counts.append(int(g.in_graph.sum()))
        out[f"{method}.mask"], out[f"{method}.metric"], out[f"{method}.edges"] = masks, metrics, counts
    for method in ("topn", "threshold"):
        out[f"{method}_raw.mask"] = [select(Graph, model, eap, method, n, prune=False).in_graph.numpy().copy() for n in ns[method]]
    rng = np.random.default_rng(seed)
    masks, metrics, pruned = [], [], []
    for density in RANDOM_DENSITIES:
        g = Graph.from_model(model)
        g.reset()
        mask = torch.tensor(rng.uniform(size=tuple(g.in_graph.shape)) < density) & g.real_edge_mask
        g.in_graph[:] = mask
        masks.append(mask.numpy().copy())
        metrics.append(evaluate(evaluate_module, model, g, clean, corrupt, label))
        pruned.append(g.in_graph.numpy().copy())  # evaluate_graph prunes the graph in place
    out["random.mask"], out["random.metric"], out["random.pruned"] = masks, metrics, pruned
    with torch.no_grad():
        out["metric.clean"], out["metric.corrupt"] = [
            (lambda lg: (lg[0, -1, label[0]] - lg[0, -1, label[1]]).item())(model(torch.tensor([t]))) for t in (clean, corrupt)]
    return out, ns


THRESHOLD_KEYS = ("threshold.mask", "threshold_raw.mask", "threshold.metric", "threshold.edges")


def all_circuits(modules, prompts) -> tuple[dict, dict, dict]:
    """Per model: every prompt's circuits (circuits_of_prompt), the sizes and thresholds used, the self-checks."""
    per_model: dict = {}
    manifest_ns: dict = {}
    checks: dict = {}
    for name in BOTH_MODELS:
        model = load_tl(load_checkpoint(TEST_MODELS_DIR / name), processed=True)
        model.set_use_attn_result(True)
        model.set_use_split_qkv_input(True)
        model.set_use_hook_mlp_in(True)
        for i, p in enumerate(prompts):
            out, ns = circuits_of_prompt(modules, model, p, seed=1000 * i + len(name))
            per_model.setdefault(name, []).append(out)
            manifest_ns.setdefault(name, []).append({**ns, **{f"{m}.edges": out[f"{m}.edges"] for m in ("topn", "greedy", "threshold")}})
            # evaluate_graph's own ends: the whole graph is the clean run, the empty graph the corrupted run.
            c = checks.setdefault(name, {"full_vs_clean": 0.0, "empty_vs_corrupt": 0.0})
            c["full_vs_clean"] = max(c["full_vs_clean"], abs(out["topn.metric"][-1] - out["metric.clean"]))
            c["empty_vs_corrupt"] = max(c["empty_vs_corrupt"], abs(out["topn.metric"][0] - out["metric.corrupt"]))
            # The thresholds' ends (t = 0: every edge; t > max |score|: none) are topn's ends.
            assert out["threshold.metric"][0] == out["topn.metric"][-1] and out["threshold.metric"][-1] == out["topn.metric"][0]
        assert all(v < 1e-5 for v in checks[name].values()), checks[name]
        print(name, checks[name], manifest_ns[name])
    return per_model, manifest_ns, checks


def save(per_prompt: list[dict], keys, path: Path) -> None:
    tensors = {f"p{i}.{k}": np.asarray(v, np.float32) for i, out in enumerate(per_prompt) for k, v in out.items() if k in keys}
    save_numpy(tensors, str(path))


def write_main(per_model, manifest_ns, checks, prompts) -> None:
    """{model}.safetensors and manifest.json: scores, topn, greedy, random circuits."""
    for name, per_prompt in per_model.items():
        save(per_prompt, [k for k in per_prompt[0] if k not in THRESHOLD_KEYS], CIRCUIT_DIR / f"{name}.safetensors")
    ns = {name: [{k: v for k, v in n.items() if not k.startswith("threshold")} for n in per_prompt]
          for name, per_prompt in manifest_ns.items()}
    manifest = {
        "prompts": prompts,
        "models": {n: {"path": f"Tests/Fixtures/models/{n}", "ln_mode": TEST_MODEL_VARIATIONS[n]["ln_mode"]}
                   for n in BOTH_MODELS},
        "n": ns,
        "files": "{model}.safetensors; per prompt i: p{i}.eap [n_forward, n_backward] (NaN: no edge); "
                 "p{i}.topn.mask / greedy.mask / topn_raw.mask / random.mask / random.pruned [circuit, n_forward, n_backward] (1: in the circuit); "
                 "p{i}.topn.metric / greedy.metric / random.metric [circuit]; p{i}.topn.edges / greedy.edges [circuit] "
                 "(edges after pruning); p{i}.metric.clean, p{i}.metric.corrupt",
        "selection": "topn: Graph.apply_topn(n, absolute=True) (prune=True; topn_raw prune=False); greedy: "
                     "Graph.apply_greedy(n, absolute=True); both on p{i}.eap",
        "evaluation": "evaluate_graph(intervention='patching'): the clean run, every edge outside the pruned circuit "
                      "carrying the corrupted run's upstream activation; metric logit[answer] - logit[wrong], last position",
        "random": {"densities": RANDOM_DENSITIES, "note": "random.mask as given; random.pruned after evaluate_graph's prune"},
        "perturbation": PERTURBATION,
        "eap_ig_commit": EAP_COMMIT,
        "tolerance": {"metric_rel": 1e-5, "note": "|lnlens - hannamw| <= rel * max(1, |clean|, |corrupt|) per prompt"},
        "self_checks": checks,
        "generator": generator(),
    }
    (CIRCUIT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def write_threshold(per_model, manifest_ns) -> None:
    """{model}.threshold.safetensors and threshold.json: the apply_threshold circuits (same prompts
    and tolerance as manifest.json)."""
    for name, per_prompt in per_model.items():
        save(per_prompt, THRESHOLD_KEYS, CIRCUIT_DIR / f"{name}.threshold.safetensors")
    manifest = {
        "thresholds": {name: [{"threshold": n["threshold"], "threshold.edges": n["threshold.edges"]} for n in per_prompt]
                       for name, per_prompt in manifest_ns.items()},
        "targets": THRESHOLD_TARGETS,
        "files": "{model}.threshold.safetensors; per prompt i of manifest.json: p{i}.threshold.mask / threshold_raw.mask "
                 "[circuit, n_forward, n_backward] (1: in the circuit); p{i}.threshold.metric [circuit]; "
                 "p{i}.threshold.edges [circuit] (edges after pruning); circuit j at thresholds[model][i].threshold[j] (ascending)",
        "selection": "Graph.apply_threshold(t, absolute=True) (prune=True; threshold_raw prune=False) on the EAP scores "
                     "p{i}.eap of manifest.json, recomputed in this run",
        "evaluation": "as manifest.json (evaluate_graph, intervention='patching')",
        "perturbation": PERTURBATION,
        "eap_ig_commit": EAP_COMMIT,
        "generator": generator(),
    }
    (CIRCUIT_DIR / "threshold.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def generator() -> dict:
    return {"torch": torch.__version__, "transformer_lens": tl_version(), "numpy": np.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", action="store_true", help="write only the threshold family")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    CIRCUIT_DIR.mkdir(parents=True, exist_ok=True)
    attribute, graph_module = import_eap()
    evaluate_module = importlib.import_module("eap.evaluate")
    evaluate_module.tokenize_plus = attribute.tokenize_plus
    modules = (attribute, graph_module.Graph, evaluate_module)
    prompts = prompt_pairs(load_tokenizer())
    per_model, manifest_ns, checks = all_circuits(modules, prompts)
    if not args.threshold:
        write_main(per_model, manifest_ns, checks, prompts)
    write_threshold(per_model, manifest_ns)


if __name__ == "__main__":
    main()
