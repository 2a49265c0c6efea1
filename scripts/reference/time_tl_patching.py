#!/usr/bin/env python3
"""Time TransformerLens activation patching and attribution patching on a GPT-2-small-shaped model.

The baseline for lnlens's patching speed goals (issue 8, "Speed from causality"): one 15-token IOI
prompt with BOS, torch on the CPU with its default thread count, float32, TL 2.16.1 with the default
weight processing. Times, per prompt (median of --repeats runs, after one warm-up):

- forward: one plain forward pass (no hooks, no grad);
- resid_pre sweep: run_with_cache on the clean prompt, one forward of the corrupted prompt (its metric),
  then transformer_lens.patching.get_act_patch_resid_pre (n_layers x n_tokens patched forwards);
- AtP: the paper's way (submarat/removing-layer-norm, attribution_patching_utils.get_cache_fwd_and_bwd):
  clean forward caching every hook, corrupted forward + backward caching every hook and its gradient
  (TL forward and backward hooks), then (clean - corrupt) * grad summed over d_model for resid_pre,
  attn_out and mlp_out (the paper's script also runs a backward pass on the clean prompt, whose
  gradients it never uses; that pass is not timed here);
- resid_pre sweep + AtP: the two above in one timed unit;
- three-site sweep: clean cache + corrupted forward + get_act_patch_resid_pre, get_act_patch_attn_out,
  get_act_patch_mlp_out.

Usage (from the repository root, reference venv; builds nothing if the model exists):

    nice -n 5 /tmp/refvenv/bin/python scripts/reference/time_tl_patching.py [--model DIR] [--repeats 3]
        [--paper-flags]

--model defaults to /tmp/refgrad/small-shape/gpt2-small-random if it exists, else
/tmp/small-shape/gpt2-small-random, built there with `make_models_and_fixtures.py --small-shape`'s
`build_small_shape` if missing. --paper-flags also turns on use_attn_result, use_attn_in and
use_hook_mlp_in, as the paper's script does (more hook points, slower); by default they are off, as in
HookedTransformer.from_pretrained.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_models_and_fixtures as ref  # noqa: E402  (sets HF_HUB_OFFLINE before transformers loads)

import einops  # noqa: E402
import torch  # noqa: E402
import transformer_lens.patching as tl_patching  # noqa: E402

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"  # IOI S2 -> IO
ANSWER, WRONG = " Mary", " John"
DEFAULT_MODEL_DIRS = [Path("/tmp/refgrad/small-shape/gpt2-small-random"), Path("/tmp/small-shape/gpt2-small-random")]


def find_or_build_model(arg: Path | None, tokenizer) -> Path:
    if arg is not None:
        return arg
    for d in DEFAULT_MODEL_DIRS:
        if (d / "config.json").exists():
            return d
    out = DEFAULT_MODEL_DIRS[-1].parent
    print(f"building the GPT-2-small-shaped random model into {out} (build_small_shape)")
    ref.build_small_shape(tokenizer, out)
    return DEFAULT_MODEL_DIRS[-1]


def get_cache_fwd_and_bwd(model, tokens, metric):
    """The paper's attribution_patching_utils.get_cache_fwd_and_bwd (hooks without "_input" in the
    name; hook_result, hook_attn_in, hook_mlp_in only when enabled: TL refuses hooks on disabled points)."""
    disabled = {"hook_result": not model.cfg.use_attn_result, "hook_attn_in": not model.cfg.use_attn_in,
                "hook_mlp_in": not model.cfg.use_hook_mlp_in}

    def keep(name: str) -> bool:
        return "_input" not in name and not disabled.get(name.rsplit(".", 1)[-1], False)

    model.reset_hooks()
    cache, grad_cache = {}, {}

    def forward_cache_hook(act, hook):
        cache[hook.name] = act.detach()

    def backward_cache_hook(act, hook):
        grad_cache[hook.name] = act.detach()

    model.add_hook(keep, forward_cache_hook, "fwd")
    model.add_hook(keep, backward_cache_hook, "bwd")
    value = metric(model(tokens))
    value.backward(retain_graph=False)
    model.reset_hooks()
    return value.item(), cache, grad_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a GPT-2 checkpoint folder (default: see above)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (median reported)")
    parser.add_argument("--paper-flags", action="store_true",
                        help="use_attn_result, use_attn_in, use_hook_mlp_in on (the paper's script)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = ref.load_tokenizer()
    folder = find_or_build_model(args.model, tokenizer)
    model = ref.load_tl(ref.load_checkpoint(folder), processed=True)  # TL default processing
    model.set_use_attn_result(args.paper_flags)  # load_tl turns it on for the fixtures
    if args.paper_flags:
        model.set_use_attn_in(True)
        model.set_use_hook_mlp_in(True)
    clean = torch.tensor([[ref.BOS_ID] + tokenizer(PROMPT)["input_ids"]])
    corrupt = torch.tensor([[ref.BOS_ID] + tokenizer(CORRUPT)["input_ids"]])
    assert clean.shape == corrupt.shape and clean.shape[1] == 15, clean.shape
    answer, wrong = tokenizer(ANSWER)["input_ids"], tokenizer(WRONG)["input_ids"]
    assert len(answer) == 1 and len(wrong) == 1

    def metric(logits):
        return logits[0, -1, answer[0]] - logits[0, -1, wrong[0]]

    tl_patching.tqdm = lambda iterable, *a, **k: iterable  # no progress bars in the timings

    def forward():
        with torch.no_grad():
            model(clean)

    def sweep(fns):
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(clean)
            m_corrupt = metric(model(corrupt))
            return [fn(model, corrupt, clean_cache, metric) - m_corrupt for fn in fns]

    def atp():
        with torch.no_grad():  # the clean run: forward only, every hook cached
            _, clean_cache = model.run_with_cache(clean)
        _, corrupt_cache, grad_cache = get_cache_fwd_and_bwd(model, corrupt, metric)
        model.zero_grad(set_to_none=True)
        out = []
        for act in ("resid_pre", "attn_out", "mlp_out"):
            names = [f"blocks.{l}.hook_{act}" for l in range(model.cfg.n_layers)]
            attr = torch.stack([grad_cache[n] * (clean_cache[n] - corrupt_cache[n]) for n in names])
            out.append(einops.reduce(attr, "layer batch pos d_model -> layer pos", "sum"))
        return out

    rows = [
        ("forward (1 pass, no hooks)", forward, max(args.repeats, 5)),
        ("resid_pre sweep (TL get_act_patch_resid_pre)", lambda: sweep([tl_patching.get_act_patch_resid_pre]),
         args.repeats),
        ("AtP (clean fwd + corrupt fwd+bwd, 3 sites)", atp, max(args.repeats, 5)),
        ("resid_pre sweep + AtP", lambda: (sweep([tl_patching.get_act_patch_resid_pre]), atp()), args.repeats),
        ("three-site sweep (resid_pre, attn_out, mlp_out)",
         lambda: sweep([tl_patching.get_act_patch_resid_pre, tl_patching.get_act_patch_attn_out,
                        tl_patching.get_act_patch_mlp_out]), args.repeats),
    ]
    cfg = model.cfg
    print(f"model {folder} (n_layers {cfg.n_layers}, d_model {cfg.d_model}, n_heads {cfg.n_heads}), "
          f"{clean.shape[1]} tokens with BOS, torch {torch.__version__} threads {torch.get_num_threads()}, "
          f"transformer_lens {ref.tl_version()}, use_attn_result {cfg.use_attn_result}, "
          f"use_attn_in {cfg.use_attn_in}, use_hook_mlp_in {cfg.use_hook_mlp_in}")
    print(f"patched forwards: resid_pre sweep {cfg.n_layers * clean.shape[1]}, "
          f"three-site sweep {3 * cfg.n_layers * clean.shape[1]}")
    print("load average (1, 5, 15 min) at the start: %.2f %.2f %.2f (other processes share the CPUs: "
          "torch's OpenMP threads slow down badly when the machine is oversubscribed)" % os.getloadavg(), flush=True)
    print(f"| {'what (per prompt)':50s} | median s | min s | max s | runs | load avg |")
    print(f"|{'-' * 52}|----------|-------|-------|------|----------|")
    for label, fn, n in rows:
        if n > args.repeats:
            fn()  # warm-up for the short rows (the sweeps run hundreds of forwards anyway)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"| {label:50s} | {statistics.median(times):8.3f} | {min(times):5.3f} | {max(times):5.3f} | {n:4d} | "
              f"{os.getloadavg()[0]:8.2f} |", flush=True)


if __name__ == "__main__":
    main()
