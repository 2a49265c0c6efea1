#!/usr/bin/env python3
"""Reference statistics for lnlens's task check, estimator errors and NMAE bootstrap.

Writes Tests/Fixtures/reference/statistics/{bootstrap,estimator_errors,task_check}.json from
small fixed tables, with numpy and scipy only (system python3; no torch). Run by hand from the
repository root:

    python3 scripts/reference/make_statistics_fixtures.py

bootstrap.json — the NMAE bootstrap of DLA against the direct effect (DE) over heads. The
crossed scheme is that of the paper's companion code (submarat/removing-layer-norm,
mech_interp/attention_head_attribution/run_analysis.py, get_global_nmae_with_bootstrap_ci):
each resample draws as many head indices as the set has heads and, independently, as many
prompt indices as it has prompts, both with replacement, and takes the NMAE of the
heads x prompts block they select (DLA_heads[head_indices][:, sample_indices]). The "pairs"
scheme (lnlens's former default) draws (prompt, head) pairs. The paper's script draws with
np.random; to get the same draws in Swift this script re-implements lnlens's generator
(SplitMix64, Lemire's bounded integers) from its published definition, one fresh generator per
set, seeded with 0, 1,000 resamples; the first draws of the global set are written out so that
the Swift test checks the generator as well. NMAE = sum |DLA - DE| / sum |DE| * 100 (no epsilon:
lnlens's definition; the paper adds 1e-10 to the denominator). Intervals: np.percentile
(linear) at 2.5 and 97.5.

estimator_errors.json — patching errors of one estimator with structural zeros: positions
before each prompt's first differing token are exactly 0 for both activation patching and AtP;
lnlens leaves them out of Pearson, Spearman, sign agreement and top-k recall (NMAE over all
entries), and leaves out prompts whose |clean - corrupt| is below min_gap. Expected values come
from scipy.stats.pearsonr / spearmanr and numpy, with and without the zeros.

task_check.json — mean clean logit difference, fraction correct, mean and median |gap|, and
the prompts below min_gap, by numpy.
"""
import json
import math
import os

import numpy as np
from scipy import stats

OUT = os.path.join("Tests", "Fixtures", "reference", "statistics")
MASK = (1 << 64) - 1


class SplitMix64:
    """lnlens's Support/Random.swift, from the algorithm (Vigna's reference C; Lemire 2019)."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        m = self.next() * n
        high, low = m >> 64, m & MASK
        if low < n:
            threshold = ((1 << 64) - n) % n
            while low < threshold:
                m = self.next() * n
                high, low = m >> 64, m & MASK
        return high


def nmae(err, mag):
    if mag == 0:
        return 0.0 if err == 0 else math.inf
    return err / mag * 100


def crossed(dla, de, resamples, seed, keep_draws=0):
    """dla, de: [heads, prompts]. Returns (low, high, nmaes, first draws)."""
    n_heads, n_prompts = de.shape
    rng = SplitMix64(seed)
    values, draws = [], []
    for r in range(resamples):
        heads = [rng.below(n_heads) for _ in range(n_heads)]
        prompts = [rng.below(n_prompts) for _ in range(n_prompts)]
        if r < keep_draws:
            draws.append({"heads": heads, "prompts": prompts})
        b_dla = dla[heads][:, prompts]
        b_de = de[heads][:, prompts]
        values.append(nmae(np.abs(b_dla - b_de).sum(), np.abs(b_de).sum()))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high), draws


def pairs(dla, de, resamples, seed):
    """dla, de: flat arrays of pairs in (prompt, layer, head) order."""
    rng = SplitMix64(seed)
    n = len(de)
    values = []
    for _ in range(resamples):
        idx = [rng.below(n) for _ in range(n)]
        values.append(nmae(np.abs(dla[idx] - de[idx]).sum(), np.abs(de[idx]).sum()))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", path)


def bootstrap_fixture():
    rng = np.random.default_rng(20251204)
    n_layers, n_heads, n_prompts = 3, 2, 9
    resamples, seed = 1000, 0
    # DE of very different sizes per head (so that resampling heads matters), DLA off by a
    # head-dependent relative error plus noise.
    scale = np.array([3.0, 0.2, 1.0, 0.05, 1.5, 0.6])
    de = rng.normal(size=(n_layers * n_heads, n_prompts)) * scale[:, None]
    rel = np.array([0.05, 0.9, 0.3, 0.1, 0.5, 0.2])
    dla = de * (1 + rel[:, None] * rng.normal(size=de.shape)) + 0.02 * rng.normal(size=de.shape)
    names = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
    rows = [{"prompt": p, "component": names[i], "dla": float(dla[i, p]), "direct_effect": float(de[i, p])}
            for p in range(n_prompts) for i in range(len(names))]

    out = {"resamples": resamples, "seed": seed, "level": 0.95, "rows": rows,
           "crossed": {}, "pairs": {}}
    low, high, draws = crossed(dla, de, resamples, seed, keep_draws=3)
    out["crossed"]["all"] = [low, high]
    out["global_first_draws"] = draws
    order = [(p, i) for p in range(n_prompts) for i in range(len(names))]  # (prompt, layer, head)
    flat_dla = np.array([dla[i, p] for p, i in order])
    flat_de = np.array([de[i, p] for p, i in order])
    out["pairs"]["all"] = list(pairs(flat_dla, flat_de, resamples, seed))
    for l in range(n_layers):
        sel = [l * n_heads + h for h in range(n_heads)]
        out["crossed"][f"L{l}"] = list(crossed(dla[sel], de[sel], resamples, seed)[:2])
        idx = [k for k, (p, i) in enumerate(order) if i in sel]
        out["pairs"][f"L{l}"] = list(pairs(flat_dla[idx], flat_de[idx], resamples, seed))
    for i, name in enumerate(names):
        out["crossed"][name] = list(crossed(dla[[i]], de[[i]], resamples, seed)[:2])
        idx = [k for k, (p, j) in enumerate(order) if j == i]
        out["pairs"][name] = list(pairs(flat_dla[idx], flat_de[idx], resamples, seed))
    out["nmae"] = {"all": nmae(np.abs(dla - de).sum(), np.abs(de).sum())}
    write("bootstrap.json", out)


def metrics(estimate, exact):
    """lnlens's estimator-error metrics other than NMAE and the counts."""
    n = len(exact)
    out = {}
    out["pearson"] = float(stats.pearsonr(estimate, exact).statistic) if n >= 2 else None
    out["spearman"] = float(stats.spearmanr(estimate, exact).statistic) if n >= 2 else None
    largest = np.abs(exact).max()
    keep = np.abs(exact) >= 0.01 * largest
    agree = (np.sign(estimate[keep]) == np.sign(exact[keep])) & (estimate[keep] != 0)
    out["sign_agreement"] = float(agree.mean())

    def top(v, k):
        return set(np.argsort(-np.abs(v), kind="stable")[:k].tolist())

    for name, k in [("topk_recall_10", 10), ("topk_recall_5pct", max(1, math.ceil(0.05 * n)))]:
        k = min(k, n)
        out[name] = len(top(exact, k) & top(estimate, k)) / k
    return out


def estimator_errors_fixture():
    rng = np.random.default_rng(7)
    n_prompts, n_layers, T = 4, 2, 6
    first_diff = [2, 3, 1, 4]               # the first position where clean and corrupt differ
    clean = [2.5, 1.2, 0.3, 3.0]
    corrupt = [-0.5, 2.9, 0.1, 0.4]         # gaps 3.0, -1.7, 0.2, 2.6: prompt 2 is below min_gap
    min_gap = 0.5
    samples = []
    for p in range(n_prompts):
        for l in range(n_layers):
            for pos in range(T):
                if pos < first_diff[p]:
                    act, atp = 0.0, 0.0
                else:
                    act = float(rng.normal() * (1 + pos) * 0.3)
                    atp = float(act * (1 + 0.4 * rng.normal()) + 0.05 * rng.normal())
                samples.append({"prompt": p, "site": "resid_pre", "layer": l, "position": pos,
                                "activation": act, "atp": atp})
    gaps = {p: clean[p] - corrupt[p] for p in range(n_prompts)}
    kept = [p for p in range(n_prompts) if abs(gaps[p]) >= min_gap]

    expected = []
    for layer in [None] + list(range(n_layers)):
        for normalized in [False, True]:
            group = [s for s in samples if s["prompt"] in kept and (layer is None or s["layer"] == layer)]
            exact = np.array([s["activation"] / (gaps[s["prompt"]] if normalized else 1) for s in group])
            est = np.array([s["atp"] / (gaps[s["prompt"]] if normalized else 1) for s in group])
            structural = np.array([s["position"] < first_diff[s["prompt"]] for s in group])
            row = {"layer": layer, "normalized": normalized,
                   "nmae": nmae(np.abs(est - exact).sum(), np.abs(exact).sum()),
                   "n": int((~structural).sum()), "n_structural_zeros": int(structural.sum())}
            row.update(metrics(est[~structural], exact[~structural]))
            with_zeros = metrics(est, exact)
            row["with_zeros"] = {k: with_zeros[k] for k in ["pearson", "spearman", "topk_recall_5pct"]}
            expected.append(row)
    write("estimator_errors.json", {"samples": samples, "first_diff": first_diff, "clean": clean,
                                    "corrupt": corrupt, "min_gap": min_gap, "expected": expected})


def task_check_fixture():
    rng = np.random.default_rng(11)
    n = 23
    clean = rng.normal(loc=0.8, scale=1.5, size=n)
    corrupt = clean - rng.normal(loc=0.6, scale=0.9, size=n)
    corrupt[[4, 9]] = clean[[4, 9]]                     # zero gap: the corrupt prompt changes nothing
    min_gap = 0.5
    gap = clean - corrupt
    write("task_check.json", {
        "clean": clean.tolist(), "corrupt": corrupt.tolist(), "min_gap": min_gap,
        "mean_clean": float(clean.mean()), "fraction_correct": float((clean > 0).mean()),
        "mean_abs_gap": float(np.abs(gap).mean()), "median_abs_gap": float(np.median(np.abs(gap))),
        "small_gap": [int(i) for i in np.nonzero(np.abs(gap) < min_gap)[0]],
        "clean_only": {"mean_clean": float(clean.mean()), "fraction_correct": float((clean > 0).mean())},
    })


if __name__ == "__main__":
    bootstrap_fixture()
    estimator_errors_fixture()
    task_check_fixture()
