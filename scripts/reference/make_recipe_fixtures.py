#!/usr/bin/env python3
"""The published LayerNorm-removal recipes, read from the companion code's own config.py.

Writes Tests/Fixtures/reference/training/companion_recipes.json: for each of the four runs of
Baroni et al. 2025 (submarat/removing-layer-norm, commit a15a638, config.py `FINETUNE_CONFIGS`
keys gpt2_aux, gpt2-medium_fasttune_aux, gpt2-large_aux, gpt2-xl_aux) every value of its
`FinetuneConfig` that lnlens's `--recipe` reproduces, the derived sequences per optimizer step
(batch_size * gradient_accumulation_steps, as transformers' Trainer on one device takes them), and
the step at which each LayerNorm goes fake, found by replaying the removal callback of train.py
(`LNRemover` called with `state.global_step` at every `on_step_begin`, removers in the order
ln_2, ln_1 qk, ln_1 v, ln_f) over every step of the run.

config.py is imported as it is (it needs pydantic and docopt, nothing else):

    python3 -m venv /tmp/venv-recipes && /tmp/venv-recipes/bin/pip install pydantic docopt
    # a clone:           git clone https://github.com/submarat/removing-layer-norm /tmp/rln
    #                    git -C /tmp/rln checkout a15a638
    /tmp/venv-recipes/bin/python scripts/reference/make_recipe_fixtures.py --config /tmp/rln/config.py
    # or a bare mirror:  ... make_recipe_fixtures.py --git-dir /path/to/repo.git   (reads a15a638:config.py)

Reruns give the same bytes. CI never runs this; the Swift tests read the JSON it wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "Tests" / "Fixtures" / "reference" / "training" / "companion_recipes.json"
COMMIT = "a15a638"
RUNS = {"gpt2": "gpt2_aux", "gpt2-medium": "gpt2-medium_fasttune_aux", "gpt2-large": "gpt2-large_aux",
        "gpt2-xl": "gpt2-xl_aux"}


def load_config_module(args) -> tuple[object, bytes]:
    """config.py imported from --config, or from --git-dir at the paper's commit."""
    if args.config:
        source = Path(args.config).read_bytes()
    else:
        source = subprocess.run(["git", "--git-dir", args.git_dir, "show", f"{COMMIT}:config.py"],
                                check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "companion_config.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("companion_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module, source


def removal_steps(c) -> dict[str, int]:
    """The first global step at which each LayerNorm path is fake, replaying LNRemover's rule:
    with a gap, layer i fires when (step - start) % gap == 0 and i = (step - start) // gap is a
    layer; gap 0 fires every layer at start; gap None fires once at start."""
    removers = [(c.start_ln2, c.gap_ln2, "h.{}.ln_2"), (c.start_ln1qk, c.gap_ln1qk, "h.{}.ln_1.qk"),
                (c.start_ln1v, c.gap_ln1v, "h.{}.ln_1.v"), (c.start_lnf, c.gap_lnf, "ln_f")]
    fired: dict[str, int] = {}
    for step in range(c.max_steps):
        for start, gap, name in removers:
            if gap is None:
                hits = [name] if step == start else []
            elif gap == 0:
                hits = [name.format(i) for i in range(c.n_layers)] if step == start else []
            elif (step - start) % gap == 0 and 0 <= (step - start) // gap < c.n_layers:
                hits = [name.format((step - start) // gap)]
            else:
                hits = []
            for h in hits:
                assert h not in fired, f"{h} removed twice"
                fired[h] = step
    assert len(fired) == 3 * c.n_layers + 1, "a LayerNorm is never removed within max_steps"
    return dict(sorted(fired.items(), key=lambda kv: (kv[1], kv[0])))


def recipe(c) -> dict:
    assert c.lr_scheduler_type == "cosine_with_min_lr", c.lr_scheduler_type
    assert c.block_size == 1024 and c.target_batch_tokens == 2 ** 19
    return {
        "model_name": c.model_name, "n_layers": c.n_layers, "max_steps": c.max_steps,
        "early_stop_step": c.early_stop_step, "warmup_steps": c.warmup_steps, "learning_rate": c.learning_rate,
        "min_lr": c.lr_scheduler_kwargs["min_lr"], "weight_decay": c.weight_decay, "aux_loss_weight": c.aux_loss_weight,
        "momentum": c.momentum, "batch_size": c.batch_size, "gradient_accumulation_steps": c.gradient_accumulation_steps,
        "sequences_per_step": c.batch_size * c.gradient_accumulation_steps, "block_size": c.block_size,
        "target_batch_tokens": c.target_batch_tokens,
        "start_ln2": c.start_ln2, "gap_ln2": c.gap_ln2, "start_ln1qk": c.start_ln1qk, "gap_ln1qk": c.gap_ln1qk,
        "start_ln1v": c.start_ln1v, "gap_ln1v": c.gap_ln1v, "start_lnf": c.start_lnf, "gap_lnf": c.gap_lnf,
        "start_eot": c.start_eot, "start_bos": c.start_bos, "removal_steps": removal_steps(c),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="config.py of a checkout at commit a15a638")
    where.add_argument("--git-dir", help=f"a git directory of submarat/removing-layer-norm (reads {COMMIT}:config.py)")
    args = parser.parse_args()
    module, source = load_config_module(args)
    out = {
        "source": f"github.com/submarat/removing-layer-norm commit {COMMIT}, config.py FINETUNE_CONFIGS",
        "config_py_sha256": hashlib.sha256(source).hexdigest(),
        "notes": "sequences_per_step = batch_size * gradient_accumulation_steps (one device); removal_steps: the "
                 "0-based global step from which each path is fake (train.py LNRemover at on_step_begin); "
                 "momentum is the companion's per-forward-call sigma momentum at micro-batch batch_size",
        "recipes": {name: {"config": key, **recipe(module.FINETUNE_CONFIGS[key])} for name, key in RUNS.items()},
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    for name, r in out["recipes"].items():
        print(f"{name}: {r['config']} steps {r['max_steps']} ln_f {r['start_lnf']} sequences/step {r['sequences_per_step']}"
              f" momentum {r['momentum']}", file=sys.stderr)


if __name__ == "__main__":
    main()
