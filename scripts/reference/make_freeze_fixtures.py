"""Reference for `lnlens patch --freeze` (linearised variants): Tests/Fixtures/reference/freeze/.

For the LN and LN-free test checkpoints (TransformerLens 2.16.1, processed as lnlens processes
them), two IOI prompt pairs with BOS, both directions, and the variants none, attention, mlp, ln,
all: activation patching and AtP at every index of every site lnlens patches, computed in the
model linearised around the base run (the run that receives the patch and where AtP's gradient is
taken: the corrupted run when denoising, the clean run when noising) with TransformerLens hooks:

- attention: every `blocks.l.attn.hook_pattern` replaced by the base run's pattern (a constant);
- mlp: `blocks.l.mlp.hook_post` replaced by gelu(x0) + gelu'(x0) * (pre - x0), pre the run's own
  `hook_pre`, x0 the base run's, gelu' by autograd of the model's own act_fn at x0;
- ln: every `hook_scale` (ln1, ln2, ln_final) replaced by the base run's (a constant).

Activation patching: the donor run's (unfrozen) activation written into the frozen base run at the
site's index (a TL forward hook added before the freeze hooks, so at hook_pattern the frozen
pattern wins: pattern patches change nothing when attention is frozen), metric(patched) -
metric(frozen base run). AtP: sum over the site's index of (donor - base activation) * gradient,
the gradient by torch.autograd of the metric of the frozen base run with respect to each site
hook's activation as it enters the hook (before the freeze replaces it: 0 at hook_pattern, and at
q and k, when attention is frozen). Nothing here uses lnlens.

Run from the repository root (~1 min):
    nice /tmp/venv-tl/bin/python scripts/reference/make_freeze_fixtures.py
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformer_lens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_models_and_fixtures import (  # noqa: E402
    BOS_ID, BOTH_MODELS, PATCHING_PROMPTS, PATCHING_SITES, REFERENCE_DIR, TEST_MODELS_DIR, TEST_MODEL_VARIATIONS,
    load_checkpoint, load_tl, load_tokenizer, pad_nan, save_numpy, tl_version,
)

FREEZE_DIR = REFERENCE_DIR / "freeze"
PROMPTS = [0, 2]  # of PATCHING_PROMPTS: one S2 -> IO corruption, one with every name replaced
VARIANTS = ("none", "attention", "mlp", "ln", "all")
DIRECTIONS = ("denoise", "noise")
TOLERANCE = 1e-4  # of the scale: |lnlens - reference| <= 1e-4 * max(1, max |reference|) per tensor


def parts(variant: str) -> set[str]:
    return {"attention", "mlp", "ln"} if variant == "all" else set() if variant == "none" else {variant}


def metric_fn(answer: int, wrong: int):
    return lambda logits: logits[0, -1, answer] - logits[0, -1, wrong]


def freeze_hooks(model, base_cache: dict, variant: str) -> list:
    """TL forward hooks that linearise the model around the base run's cache."""
    hooks = []
    L = model.cfg.n_layers
    if "attention" in parts(variant):
        for l in range(L):
            frozen = base_cache[f"blocks.{l}.attn.hook_pattern"]
            hooks.append((f"blocks.{l}.attn.hook_pattern", lambda x, hook, f=frozen: f.clone()))
    if "mlp" in parts(variant):
        for l in range(L):
            x0 = base_cache[f"blocks.{l}.mlp.hook_pre"]
            at = x0.clone().requires_grad_(True)
            with torch.enable_grad():
                y0 = model.blocks[l].mlp.act_fn(at)
                slope = torch.autograd.grad(y0.sum(), at)[0]
            seen: dict = {}

            def keep(x, hook, seen=seen):
                seen["pre"] = x

            def tangent(x, hook, seen=seen, x0=x0, y0=y0.detach(), slope=slope):
                return y0 + slope * (seen["pre"] - x0)
            hooks += [(f"blocks.{l}.mlp.hook_pre", keep), (f"blocks.{l}.mlp.hook_post", tangent)]
    if "ln" in parts(variant):
        names = [f"blocks.{l}.ln{i}.hook_scale" for l in range(L) for i in (1, 2)] + ["ln_final.hook_scale"]
        for n in names:
            hooks.append((n, lambda x, hook, f=base_cache[n]: f.clone()))
    return hooks


def indices(site: str, model, T: int) -> list[tuple]:
    """(layer, index tuple into the hook tensor without batch) in the order of the stored axes."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    axes = PATCHING_SITES[site][2]
    out = []
    for l in range(L):
        if axes == ("layer", "pos"):
            out += [(l, (p,)) for p in range(T)]                          # [T, d]
        elif axes == ("layer", "head"):
            if site == "pattern":
                out += [(l, (h,)) for h in range(H)]                      # [H, T, T]
            else:
                out += [(l, (slice(None), h)) for h in range(H)]          # [T, H, dh]
        elif axes == ("layer", "pos", "head"):
            out += [(l, (p, h)) for p in range(T) for h in range(H)]
        else:  # pattern_by_pos: layer, head, dest
            out += [(l, (h, p)) for h in range(H) for p in range(T)]
    return out


def hook_name(site: str, l: int) -> str:
    return transformer_lens.utils.get_act_name(PATCHING_SITES[site][1], l)


def one(model, base: torch.Tensor, donor: torch.Tensor, answer: int, wrong: int, variant: str, checks: dict) -> dict:
    """{site: {"activation", "atp"}: [...index axes]} and the metrics, one prompt, one variant."""
    metric = metric_fn(answer, wrong)
    T = base.shape[1]
    with torch.no_grad():
        _, base_cache = model.run_with_cache(base)
        _, donor_cache = model.run_with_cache(donor)
    freeze = freeze_hooks(model, base_cache, variant)
    with torch.no_grad():
        m_base = metric(model.run_with_hooks(base, fwd_hooks=freeze))
        m_plain = metric(model(base))
    checks["frozen_base_metric_minus_metric"] = max(checks.get("frozen_base_metric_minus_metric", 0.0),
                                                   abs(m_base - m_plain).item())
    # Gradients of the frozen base run at every site hook's activation as it enters the hook.
    names = sorted({hook_name(s, l) for s in PATCHING_SITES for l in range(model.cfg.n_layers)})
    entering: dict = {}

    def capture(x, hook):
        entering[hook.name] = x
    with torch.enable_grad():
        m = metric(model.run_with_hooks(base, fwd_hooks=[(n, capture) for n in names] + freeze))
        grads = torch.autograd.grad(m, [entering[n] for n in names], allow_unused=True)
    grad = {n: (g if g is not None else torch.zeros_like(entering[n])).detach()[0] for n, g in zip(names, grads)}
    out: dict = {}
    for site in PATCHING_SITES:
        act, atp = [], []
        for l, ix in indices(site, model, T):
            n = hook_name(site, l)
            d, a = donor_cache[n][0], base_cache[n][0]

            def patch(x, hook, ix=ix, d=d):
                x = x.clone()
                x[(0,) + ix] = d[ix]
                return x
            with torch.no_grad():
                act.append((metric(model.run_with_hooks(base, fwd_hooks=[(n, patch)] + freeze)) - m_base).item())
            atp.append(((d[ix] - a[ix]) * grad[n][ix]).sum().item())
        shape = [model.cfg.n_layers] + [T if ax in ("pos", "dest_pos") else model.cfg.n_heads
                                        for ax in PATCHING_SITES[site][2][1:]]
        out[site] = {"activation": torch.tensor(act, dtype=torch.float64).reshape(shape),
                     "atp": torch.tensor(atp, dtype=torch.float64).reshape(shape)}
        if variant == "all":
            scale = max(1.0, out[site]["activation"].abs().max().item())
            gap = (out[site]["activation"] - out[site]["atp"]).abs().max().item() / scale
            checks["all_frozen.atp_minus_activation_rel"] = max(checks.get("all_frozen.atp_minus_activation_rel", 0.0), gap)
    return out


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    FREEZE_DIR.mkdir(parents=True, exist_ok=True)
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
    keys = None
    for name in BOTH_MODELS:
        model = load_tl(load_checkpoint(TEST_MODELS_DIR / name), processed=True)
        model64 = copy.deepcopy(model).to(torch.float64)  # the identity of the fully frozen model, without float32's floor
        for direction in DIRECTIONS:
            c = checks.setdefault(f"{name}.{direction}", {})
            tensors: dict = {}
            per_variant = {v: [] for v in VARIANTS}
            m_clean, m_corrupt = [], []
            for p in prompts:
                clean, corrupt = torch.tensor([p["tokens"]]), torch.tensor([p["corrupt_tokens"]])
                base, donor = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
                metric = metric_fn(p["answer_id"], p["wrong_id"])
                with torch.no_grad():
                    m_clean.append(metric(model(clean)).item())
                    m_corrupt.append(metric(model(corrupt)).item())
                for v in VARIANTS:
                    per_variant[v].append(one(model, base, donor, p["answer_id"], p["wrong_id"], v, c))
                c64: dict = {}
                one(model64, base, donor, p["answer_id"], p["wrong_id"], "all", c64)
                c["all_frozen.atp_minus_activation_rel_float64"] = max(c.get("all_frozen.atp_minus_activation_rel_float64", 0.0),
                                                                       c64["all_frozen.atp_minus_activation_rel"])
            tensors["metric.clean"] = np.asarray(m_clean, np.float32)
            tensors["metric.corrupt"] = np.asarray(m_corrupt, np.float32)
            for v in VARIANTS:
                for site, (_, _, axes) in PATCHING_SITES.items():
                    for method in ("activation", "atp"):
                        tensors[f"{v}.{site}.{method}"] = pad_nan([r[site][method] for r in per_variant[v]], axes)
            assert c["all_frozen.atp_minus_activation_rel"] < 1e-5, c
            assert c["all_frozen.atp_minus_activation_rel_float64"] < 1e-12, c
            assert c["frozen_base_metric_minus_metric"] < 1e-5, c
            # Each single freeze must change activation patching somewhere (else its fixture would test
            # nothing; AtP's gradient is GELU's own under the mlp freeze). The LN-free model's scales
            # are constants already: its ln variant is the model itself.
            for v in ("attention", "mlp", "ln"):
                moved = max(np.nanmax(np.abs(tensors[f"{v}.{s}.activation"] - tensors[f"none.{s}.activation"]))
                            for s in PATCHING_SITES)
                c[f"{v}.max_abs_activation_change_from_none"] = float(moved)
                assert (moved > 1e-3) == (v != "ln" or name == "tiny-ln"), f"{name} {direction} {v}: change {moved}"
            save_numpy(tensors, str(FREEZE_DIR / f"{name}.{direction}.safetensors"))
            keys = keys or {k: list(v.shape) for k, v in tensors.items()}
            print(f"{name} {direction}: " + ", ".join(f"{k} {v:.3g}" for k, v in c.items()))
    manifest = {
        "prompts": prompts,
        "bos": {"id": BOS_ID, "note": "prepended to prompt and corrupt (TransformerLens to_tokens); position 0"},
        "models": {n: {"path": f"Tests/Fixtures/models/{n}", "ln_mode": TEST_MODEL_VARIATIONS[n]["ln_mode"]}
                   for n in BOTH_MODELS},
        "files": "{model}.{direction}.safetensors; keys metric.clean, metric.corrupt [prompt] and "
                 "{variant}.{site}.{activation|atp} [prompt, ...index axes of the site as in patching/manifest.json]",
        "variants": {"none": "the model", "attention": "hook_pattern := base run's pattern",
                     "mlp": "hook_post := gelu(x0) + gelu'(x0) (hook_pre - x0), x0 = base run's hook_pre",
                     "ln": "ln1/ln2/ln_final hook_scale := base run's", "all": "all three"},
        "base_run": "the run receiving the patch, where AtP's gradient is taken: corrupt when denoising, clean "
                    "when noising; the donor's activations come from its own (unfrozen) run",
        "pattern_sites_under_attention_freeze": "the freeze hook runs after the patch hook: pattern patches "
                                               "change nothing; q, k, pattern gradients are 0",
        "keys": keys,
        "padding": "position axes NaN beyond the prompt's length",
        "tolerance": {"rel": TOLERANCE, "note": "per tensor, |lnlens - reference| <= rel * max(1, max |reference|)"},
        "self_checks": checks,
        "generator": {"torch": torch.__version__, "transformer_lens": tl_version(), "numpy": np.__version__},
    }
    (FREEZE_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
