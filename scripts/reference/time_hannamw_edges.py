#!/usr/bin/env python3
"""Time hannamw/EAP-IG (commit 795f560) on CPU on a GPT-2-small-shaped model: the baseline beside
lnlens-bench's `edges` section (docs/bench.md).

One 15-token IOI prompt pair with BOS (the bench's), a TransformerLens 2.16.1 HookedTransformer of
GPT-2 small's shape with random weights (its own init, seed 0; 12 layers, d_model 768, 12 heads,
gelu_new, LayerNorm; use_attn_result, use_split_qkv_input, use_hook_mlp_in as hannamw requires),
float32, torch's default thread count unless --threads. Times, per prompt pair (median of
--repeats runs after one warm-up):

- forward: one plain forward (no hooks, no grad);
- EAP: hannamw `attribute(method='EAP')` over every edge (32,491);
- EAP-IG: `attribute(method='EAP-IG-inputs', ig_steps=5)`;
- circuit: `evaluate_graph` of `apply_topn(500)` and of `apply_topn(edges // 2)` on the EAP scores.

hannamw/EAP-IG is loaded as by make_edges_fixtures.py (EAP_SRC, default /tmp/eap/src; scores on
the model's device; token ids instead of strings).

    nice /tmp/venv-tl-building/bin/python scripts/reference/time_hannamw_edges.py [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_edges_fixtures import hannamw_metric, import_eap  # noqa: E402
from make_models_and_fixtures import BOS_ID, load_tokenizer  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
ANSWER, WRONG = " Mary", " John"


def small_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                                  n_ctx=1024, act_fn="gelu_new", normalization_type="LN", seed=0, device="cpu")
    model = HookedTransformer(cfg)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model.eval()


def median_seconds(body, repeats: int) -> float:
    body()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        body()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    attribute, graph_module = import_eap()
    evaluate = importlib.import_module("eap.evaluate")
    evaluate.tokenize_plus = attribute.tokenize_plus
    Graph = graph_module.Graph
    tok = load_tokenizer()
    clean = [BOS_ID] + tok(PROMPT)["input_ids"]
    corrupt = [BOS_ID] + tok(CORRUPT)["input_ids"]
    label = [tok(ANSWER)["input_ids"][0], tok(WRONG)["input_ids"][0]]
    assert len(clean) == len(corrupt) == 15
    model = small_model()
    loader = [([clean], [corrupt], torch.tensor([label]))]

    def forward():
        with torch.inference_mode():
            model(torch.tensor([clean]))

    def scores(method, steps=None):
        graph = Graph.from_model(model)
        attribute.attribute(model, graph, loader, hannamw_metric, method=method, ig_steps=steps, quiet=True)
        return graph

    eap = scores("EAP")
    n_edges = int(eap.real_edge_mask.sum())

    def circuit(n):
        def body():
            eap.apply_topn(n, absolute=True)
            evaluate.evaluate_graph(model, eap, loader, hannamw_metric, quiet=True)
        return body

    rows = [("one forward, 1x15 tokens", forward),
            (f"EAP over all {n_edges} edges", lambda: scores("EAP")),
            ("EAP-IG (inputs), 5 steps", lambda: scores("EAP-IG-inputs", 5)),
            ("one circuit, apply_topn(500) + evaluate_graph", circuit(500)),
            (f"one circuit, apply_topn({n_edges // 2}) + evaluate_graph", circuit(n_edges // 2))]
    print(f"hannamw/EAP-IG 795f560 on CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"GPT-2 small shape (random weights), 1x{len(clean)} tokens; median of {args.repeats}")
    base = None
    for name, body in rows:
        s = median_seconds(body, args.repeats)
        base = base or s
        print(f"{name:60s} {s * 1e3:10.1f} ms  {s / base:8.2f} x forward")


if __name__ == "__main__":
    main()
