"""Reference for edge attribution (EAP, EAP-IG) and exact edge patching: Tests/Fixtures/reference/edges/.

For the LN and LN-free test checkpoints (TransformerLens 2.16.1, processed as lnlens processes them,
with use_attn_result, use_split_qkv_input, use_hook_mlp_in) and two IOI prompt pairs with BOS, the
score of every edge of hannamw/EAP-IG's graph (nodes input, a{L}.h{H}, m{L}, logits; its
[n_forward, n_backward] score matrix, edges to heads per q/k/v):

- eap: hannamw `attribute(method='EAP')`;
- eap_ig: hannamw `attribute(method='EAP-IG-inputs', ig_steps=5)`;
- exact: a direct path-patching implementation with TransformerLens hooks (below, not hannamw's).

Metric: logit[answer] - logit[wrong] at the last position. Convention (lnlens's, docs/patching.md
"Edges"): score(u -> v) = (a_u(clean) - a_u(corrupt)) . d metric / d (input of v), the gradient
on the corrupted run (denoising). hannamw's own convention is the opposite (activation difference
corrupted - clean, EAP's gradient on the clean run), so:
- eap = hannamw EAP with the roles swapped (its "clean" = our corrupt, its "corrupted" = our clean);
- eap_ig = -(hannamw EAP-IG-inputs, roles as given): its gradients are taken at the input
  embeddings corrupt + k/N (clean - corrupt), k = 0..N-1 (k = 0 is the corrupted run itself), its
  difference is corrupted - clean. Self-check: with N = 1 this equals eap.
- exact(u -> v) = metric(corrupt run with v's input, and only v's (head h's q, k or v copy of
  resid_pre; m's hook_mlp_in; the final resid_post for logits), plus a_u(clean) - a_u(corrupt))
  - metric(corrupt run). Node activations: input = hook_embed, a{l}.h{h} = attn.hook_result[h],
  m{l} = hook_mlp_out (as hannamw).
Non-edges (upstream not before downstream) are NaN.

hannamw/EAP-IG is used from a checkout at EAP_SRC (default /tmp/eap/src, an export of commit
795f560 of github.com/hannamw/EAP-IG). Two changes are made to a temporary copy, nothing else:
its score tensors are created with device='cuda' -> replaced by device=model.cfg.device; and its
`tokenize_plus` (strings through model.to_tokens) is replaced by one that takes our token ids
(the test models have no TransformerLens tokenizer; BOS is already prepended, no padding).

Run from the repository root (~1 min):
    nice /tmp/venv-tl-building/bin/python scripts/reference/make_edges_fixtures.py
(the venv: torch, transformers<4.57, transformer-lens==2.16.1, numpy<2.3; einops, tqdm)
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_models_and_fixtures import (  # noqa: E402
    BOS_ID, BOTH_MODELS, PATCHING_PROMPTS, REFERENCE_DIR, TEST_MODELS_DIR, TEST_MODEL_VARIATIONS,
    load_checkpoint, load_tl, load_tokenizer, save_numpy, tl_version,
)

EDGES_DIR = REFERENCE_DIR / "edges"
PROMPTS = [0, 2]  # of PATCHING_PROMPTS: one S2 -> IO corruption, one with every name replaced
IG_STEPS = 5
EAP_COMMIT = "795f560"


def import_eap():
    src = Path(os.environ.get("EAP_SRC", "/tmp/eap/src"))
    tmp = Path(tempfile.mkdtemp()) / "eap"
    shutil.copytree(src / "eap", tmp)
    text = (tmp / "attribute.py").read_text()
    assert text.count("device='cuda'") >= 2
    (tmp / "attribute.py").write_text(text.replace("device='cuda'", "device=model.cfg.device"))
    sys.path.insert(0, str(tmp.parent))
    attribute = importlib.import_module("eap.attribute")
    graph = importlib.import_module("eap.graph")

    def tokenize_plus(model, inputs, max_length=None):
        tokens = torch.tensor(inputs)
        mask = torch.ones_like(tokens)
        return tokens, mask, mask.sum(1), tokens.shape[1]
    attribute.tokenize_plus = tokenize_plus
    return attribute, graph


def hannamw_metric(logits, clean_logits, input_lengths, label):
    rows = torch.arange(logits.shape[0])
    last = input_lengths - 1
    a, w = label[:, 0], label[:, 1]
    return (logits[rows, last, a] - logits[rows, last, w]).sum()


def hannamw_scores(attribute, Graph, model, first, second, label, method, steps=None):
    graph = Graph.from_model(model)
    loader = [([first], [second], torch.tensor([label]))]
    attribute.attribute(model, graph, loader, hannamw_metric, method=method, ig_steps=steps, quiet=True)
    scores = graph.scores.detach().clone().to(torch.float64)
    scores[~graph.real_edge_mask] = float("nan")
    return graph, scores


def node_activation(cache, name):
    if name == "input":
        return cache["hook_embed"][0]
    if name[0] == "m":
        return cache[f"blocks.{int(name[1:])}.hook_mlp_out"][0]
    layer, head = name.split(".")
    return cache[f"blocks.{int(layer[1:])}.attn.hook_result"][0, :, int(head[1:])]


def exact_scores(model, graph, clean, corrupt, answer, wrong) -> torch.Tensor:
    """Path patching of each edge alone, into the corrupted run (TL hooks, independent of hannamw)."""
    metric = lambda logits: (logits[0, -1, answer] - logits[0, -1, wrong]).item()  # noqa: E731
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        corrupt_logits, corrupt_cache = model.run_with_cache(corrupt)
    base = metric(corrupt_logits)
    out = torch.full((graph.n_forward, graph.n_backward), float("nan"), dtype=torch.float64)
    for edge in graph.edges.values():
        delta = node_activation(clean_cache, edge.parent.name) - node_activation(corrupt_cache, edge.parent.name)
        child = edge.child.name
        if child == "logits":
            hook, head = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", None
        elif child[0] == "m":
            hook, head = f"blocks.{int(child[1:])}.hook_mlp_in", None
        else:
            layer, h = child.split(".")
            hook, head = f"blocks.{int(layer[1:])}.hook_{edge.qkv}_input", int(h[1:])

        def add(x, hook, delta=delta, head=head):
            x = x.clone()
            if head is None:
                x[0] += delta
            else:
                x[0, :, head] += delta
            return x
        with torch.no_grad():
            out[edge.matrix_index] = metric(model.run_with_hooks(corrupt, fwd_hooks=[(hook, add)])) - base
    return out


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    EDGES_DIR.mkdir(parents=True, exist_ok=True)
    attribute, graph_module = import_eap()
    Graph = graph_module.Graph
    tokenizer = load_tokenizer()
    prompts = []
    for i in PROMPTS:
        p = PATCHING_PROMPTS[i]
        ids = [BOS_ID] + tokenizer(p["prompt"])["input_ids"]
        cids = [BOS_ID] + tokenizer(p["corrupt"])["input_ids"]
        a, w = tokenizer(p["answer"])["input_ids"], tokenizer(p["wrong"])["input_ids"]
        assert len(a) == 1 and len(w) == 1 and len(ids) == len(cids)
        prompts.append({**p, "tokens": ids, "corrupt_tokens": cids, "answer_id": a[0], "wrong_id": w[0]})
    checks: dict = {}
    names = None
    for name in BOTH_MODELS:
        model = load_tl(load_checkpoint(TEST_MODELS_DIR / name), processed=True)
        model.set_use_attn_result(True)
        model.set_use_split_qkv_input(True)
        model.set_use_hook_mlp_in(True)
        c = checks.setdefault(name, {})
        tensors: dict = {k: [] for k in ("eap", "eap_ig", "exact", "metric.clean", "metric.corrupt")}
        for p in prompts:
            clean, corrupt = p["tokens"], p["corrupt_tokens"]
            label = [p["answer_id"], p["wrong_id"]]
            graph, eap = hannamw_scores(attribute, Graph, model, corrupt, clean, label, "EAP")
            _, ig = hannamw_scores(attribute, Graph, model, clean, corrupt, label, "EAP-IG-inputs", IG_STEPS)
            _, ig1 = hannamw_scores(attribute, Graph, model, clean, corrupt, label, "EAP-IG-inputs", 1)
            eap_ig = -ig
            scale = max(1.0, np.nanmax(np.abs(eap.numpy())))
            c["ig1_vs_eap_rel"] = max(c.get("ig1_vs_eap_rel", 0.0), float(np.nanmax(np.abs((-ig1 - eap).numpy())) / scale))
            exact = exact_scores(model, graph, torch.tensor([clean]), torch.tensor([corrupt]), *label)
            with torch.no_grad():
                m = [(model(torch.tensor([t]))[0, -1, label[0]] - model(torch.tensor([t]))[0, -1, label[1]]).item()
                     for t in (clean, corrupt)]
            for k, v in (("eap", eap), ("eap_ig", eap_ig), ("exact", exact)):
                tensors[k].append(v.numpy())
            tensors["metric.clean"].append(m[0])
            tensors["metric.corrupt"].append(m[1])
            c["max_abs_exact"] = max(c.get("max_abs_exact", 0.0), float(np.nanmax(np.abs(exact.numpy()))))
            c["max_abs_eap"] = max(c.get("max_abs_eap", 0.0), float(np.nanmax(np.abs(eap.numpy()))))
            c["edges"] = int(graph.real_edge_mask.sum())
            names = names or {"forward": [n for n in graph.nodes if n != "logits"],
                              "backward": graph.get_dst_nodes()}
        assert c["ig1_vs_eap_rel"] < 1e-5, c
        save_numpy({k: np.asarray(v, np.float32) for k, v in tensors.items()}, str(EDGES_DIR / f"{name}.safetensors"))
        print(name, c)
    manifest = {
        "prompts": prompts,
        "bos": {"id": BOS_ID, "note": "prepended to prompt and corrupt; position 0"},
        "models": {n: {"path": f"Tests/Fixtures/models/{n}", "ln_mode": TEST_MODEL_VARIATIONS[n]["ln_mode"]}
                   for n in BOTH_MODELS},
        "files": "{model}.safetensors; keys eap, eap_ig, exact [prompt, n_forward, n_backward] (NaN: no edge), "
                 "metric.clean, metric.corrupt [prompt]",
        "nodes": names,
        "ig_steps": IG_STEPS,
        "convention": "score(u->v) = (a_u(clean) - a_u(corrupt)) . dm/d(input of v) on the corrupted run; "
                      "eap = hannamw EAP with clean/corrupted swapped; eap_ig = -hannamw EAP-IG-inputs; "
                      "exact = m(corrupt run, v's input + a_u(clean) - a_u(corrupt)) - m(corrupt run)",
        "eap_ig_commit": EAP_COMMIT,
        "tolerance": {"eap_rel": 1e-4, "exact_rel": 1e-5,
                      "note": "per tensor, |lnlens - reference| <= rel * max(1, max |reference|)"},
        "self_checks": checks,
        "generator": {"torch": torch.__version__, "transformer_lens": tl_version(), "numpy": np.__version__},
    }
    (EDGES_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
