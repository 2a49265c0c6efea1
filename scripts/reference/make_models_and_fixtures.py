#!/usr/bin/env python3
"""Independent reference for lnlens: test checkpoints, recorded reference outputs, default models.

Everything is built offline (no downloads): random GPT-2 checkpoints are made with Hugging Face
transformers, their LayerNorm-free twins with Baroni et al.'s `remove_layernorm_by_scaling`
recipe, and reference activations with TransformerLens 2.x (built from a HookedTransformerConfig
exactly as `transformer_lens.loading_from_pretrained` does for GPT-2) and with transformers.

Run with the reference venv (see scripts/reference/README.md), from the repository root:

    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py            # all committed outputs
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --test-fixtures
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --dla --interventions
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --processing-variants
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --gradients
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --patching
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --default-models
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --small-shape /tmp/small-shape

Each fixture family is one function (`build_test_models`, `write_forward_fixtures`,
`write_processed_weights`, `write_dla_fixtures`, `write_intervention_fixtures`,
`write_processing_fixtures`, `write_gradient_fixtures`, `write_patching_fixtures`, `build_default_models`,
`build_small_shape`); new families add a function and a flag in `main`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import re
import shutil
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download; set before importing transformers
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
import transformer_lens
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch, save_file as save_torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prose import PRIDE_AND_PREJUDICE  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "models" / "tokenizer"
TEST_MODELS_DIR = REPO / "Tests" / "Fixtures" / "models"
REFERENCE_DIR = REPO / "Tests" / "Fixtures" / "reference"
DEFAULT_MODELS_DIR = REPO / "models"

VOCAB = 50257
HEAD_VOCAB = 512  # logits_head / W_U.head keep vocab ids 0..511 (full logits would be too big)
LNFREE_EPS = 1e12  # Baroni et al.: eps = 1e12, w_saved = w * 1e6 / sigma_avg
LNFREE_SCALE = 1e6  # sqrt(LNFREE_EPS)
SIGMA_TOKENS = 256  # real-text tokens used to measure sigma_avg

# batch0: two prompts with the same token count; batch1: one longer prompt. No BOS.
BATCHES = {
    "batch0": ["The cat sat on the mat and", "A dog ran in the park and"],
    "batch1": [
        "It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune must be in want of a"
    ],
}
SMALL_SHAPE_PROMPT = "When Mary and John went to the store, John gave a drink to"

TOLERANCES = {
    "logits_atol": 1e-4,
    "hooks_atol": 1e-4,
    "weights_rtol": 1e-5,
    "note": "atol = max |lnlens - reference|; weights_rtol is relative to max |reference| of each "
    "tensor (TL's processed LN-free weights carry the 1e6 factor of w_saved). attn_scores hold "
    "-inf at masked positions: compare them as equal when both are -inf.",
}


# ---------------------------------------------------------------------------------------------
# Model construction


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_layer: int
    n_head: int
    n_positions: int
    vocab_size: int = VOCAB


@dataclass(frozen=True)
class InitRecipe:
    """Random GPT-2 init with perturbed LN and biases, so that weight processing is exercised."""

    seed: int
    weight_std: float  # c_attn / c_fc / c_proj weights (c_proj further / sqrt(2 n_layer), as GPT-2)
    embed_std: float = 0.1  # wte (tied unembedding) and wpe
    ln_weight_std: float = 0.3  # ln weight = 1 + 0.3 N(0,1)
    ln_bias_std: float = 0.1
    linear_bias_std: float = 0.05


def gpt2_config(shape: Shape, eps: float = 1e-5) -> GPT2Config:
    return GPT2Config(
        vocab_size=shape.vocab_size,
        n_positions=shape.n_positions,
        n_ctx=shape.n_positions,
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        activation_function="gelu_new",
        layer_norm_epsilon=eps,
        tie_word_embeddings=True,
        bos_token_id=50256,
        eos_token_id=50256,
        architectures=["GPT2LMHeadModel"],
    )


def init_random_gpt2(shape: Shape, recipe: InitRecipe) -> GPT2LMHeadModel:
    """A float32 GPT-2 whose every parameter is drawn from one seeded generator, in name order."""
    torch.manual_seed(recipe.seed)  # transformers' own init uses the global RNG; overwritten below
    model = GPT2LMHeadModel(gpt2_config(shape)).eval()
    gen = torch.Generator().manual_seed(recipe.seed)
    residual_scale = 1.0 / math.sqrt(2 * shape.n_layer)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):  # lm_head.weight is tied, not listed
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith(("wte.weight", "wpe.weight")):
                value = recipe.embed_std * noise
            elif ".ln_" in name and name.endswith(".weight"):
                value = 1.0 + recipe.ln_weight_std * noise
            elif ".ln_" in name and name.endswith(".bias"):
                value = recipe.ln_bias_std * noise
            elif name.endswith("c_proj.weight"):
                value = recipe.weight_std * residual_scale * noise
            elif name.endswith(("c_attn.weight", "c_fc.weight")):
                value = recipe.weight_std * noise
            elif name.endswith(("c_attn.bias", "c_fc.bias", "c_proj.bias")):
                value = recipe.linear_bias_std * noise
            else:
                raise ValueError(f"init_random_gpt2: no init rule for parameter {name}")
            p.copy_(value)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    return model


def round_through_fp16(model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """Round every parameter to float16 and back, so fp32 references equal the fp16 checkpoint."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def layer_norms(model: GPT2LMHeadModel) -> dict[str, torch.nn.LayerNorm]:
    """LayerNorms in HF names: h.L.ln_1, h.L.ln_2, ln_f."""
    out = {}
    for l, block in enumerate(model.transformer.h):
        out[f"h.{l}.ln_1"] = block.ln_1
        out[f"h.{l}.ln_2"] = block.ln_2
    out["ln_f"] = model.transformer.ln_f
    return out


def measure_ln_sigmas(model: GPT2LMHeadModel, tokens: torch.Tensor) -> dict[str, float]:
    """sigma_avg per LN: mean over all positions of sqrt(var(x) + eps) at the LN input (one pass)."""
    sums: dict[str, float] = {}
    handles = []
    for name, ln in layer_norms(model).items():

        def hook(module, args, name=name):
            x = args[0].double()
            sigma = torch.sqrt(x.var(-1, unbiased=False) + module.eps)
            sums[name] = sigma.mean().item()

        handles.append(ln.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(tokens)
    for h in handles:
        h.remove()
    return sums


def make_lnfree(model: GPT2LMHeadModel, sigmas: dict[str, float]) -> GPT2LMHeadModel:
    """Baroni et al.'s remove_layernorm_by_scaling: w_saved = w * 1e6 / sigma_avg, eps = 1e12."""
    config = copy.deepcopy(model.config)
    config.layer_norm_epsilon = LNFREE_EPS
    twin = GPT2LMHeadModel(config).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, sigma in sigmas.items():
        key = f"transformer.{name}.weight"
        state[key] = (state[key].double() * LNFREE_SCALE / sigma).float()
    twin.load_state_dict(state)
    twin.tie_weights()
    assert twin.lm_head.weight.data_ptr() == twin.transformer.wte.weight.data_ptr()
    return twin


def real_text_tokens(tokenizer: GPT2TokenizerFast, n_positions: int) -> torch.Tensor:
    """SIGMA_TOKENS tokens of prose as a [SIGMA_TOKENS / chunk, chunk] batch, chunk = min(n_ctx, 128)."""
    ids = tokenizer(PRIDE_AND_PREJUDICE)["input_ids"]
    assert len(ids) >= SIGMA_TOKENS, f"prose has only {len(ids)} tokens"
    chunk = min(n_positions, 128)
    return torch.tensor(ids[:SIGMA_TOKENS], dtype=torch.long).reshape(-1, chunk)


def load_tokenizer() -> GPT2TokenizerFast:
    return GPT2TokenizerFast(
        vocab_file=str(TOKENIZER_DIR / "vocab.json"), merges_file=str(TOKENIZER_DIR / "merges.txt")
    )


# ---------------------------------------------------------------------------------------------
# Saving and loading checkpoints


def save_checkpoint(
    model: GPT2LMHeadModel,
    folder: Path,
    dtype: torch.dtype,
    max_shard_size: str | None = None,
    strip_prefix: bool = False,
    tokenizer_files: bool = False,
) -> None:
    """save_pretrained (safetensors); optionally shard and drop the `transformer.` key prefix."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    to_save = copy.deepcopy(model).to(dtype)
    kwargs = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    to_save.save_pretrained(folder, **kwargs)
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        assert not any(k.startswith("lm_head") for k in load_torch(f)), f"{f}: lm_head saved"
    if strip_prefix:
        for f in files:
            tensors = load_torch(f)
            renamed = {k.removeprefix("transformer."): v.contiguous() for k, v in tensors.items()}
            save_torch(renamed, f, metadata={"format": "pt"})
        index_path = folder / "model.safetensors.index.json"
        if index_path.exists():
            index = json.loads(index_path.read_text())
            index["weight_map"] = {
                k.removeprefix("transformer."): v for k, v in sorted(index["weight_map"].items())
            }
            index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    if tokenizer_files:
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(TOKENIZER_DIR / name, folder / name)


def load_checkpoint(folder: Path) -> GPT2LMHeadModel:
    """The saved folder read back in float32 (fp16 checkpoints upcast), eager attention."""
    model = GPT2LMHeadModel.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    return model.eval()


def assert_same_weights(a: GPT2LMHeadModel, b: GPT2LMHeadModel, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{what}: key sets differ"
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{what}: {k} differs after save/load"


# ---------------------------------------------------------------------------------------------
# TransformerLens


def tl_config(hf_config: GPT2Config, fold_ln: bool) -> HookedTransformerConfig:
    """As convert_hf_model_config + get_pretrained_model_config do for GPT2LMHeadModel."""
    cfg = {
        "d_model": hf_config.n_embd,
        "d_head": hf_config.n_embd // hf_config.n_head,
        "n_heads": hf_config.n_head,
        "d_mlp": hf_config.n_embd * 4,
        "n_layers": hf_config.n_layer,
        "n_ctx": hf_config.n_ctx,
        "eps": hf_config.layer_norm_epsilon,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.activation_function,
        "use_attn_scale": True,
        "use_local_attn": False,
        "scale_attn_by_inverse_layer_idx": hf_config.scale_attn_by_inverse_layer_idx,
        "normalization_type": "LNPre" if fold_ln else "LN",
        "positional_embedding_type": "standard",
        "original_architecture": "GPT2LMHeadModel",
        "tokenizer_name": None,  # no tokenizer download; inputs are token ids
        "model_name": "lnlens-reference",
        "init_weights": False,
        "dtype": torch.float32,
        "device": "cpu",
        "n_devices": 1,
        "from_checkpoint": False,
        "default_prepend_bos": False,
        "use_attn_result": True,
    }
    return HookedTransformerConfig.from_dict(cfg)


def load_tl(hf_model: GPT2LMHeadModel, processed: bool) -> HookedTransformer:
    """processed: fold_ln, center_writing_weights, center_unembed, fold_value_biases all True."""
    cfg = tl_config(hf_model.config, fold_ln=processed)
    model = HookedTransformer(cfg)
    state = {k: v.detach().clone() for k, v in convert_gpt2_weights(hf_model, cfg).items()}
    model.load_and_process_state_dict(
        state,
        fold_ln=processed,
        center_writing_weights=processed,
        center_unembed=processed,
        fold_value_biases=processed,
        refactor_factored_attn_matrices=False,
    )
    if not processed:
        assert torch.all(model.unembed.b_U == 0), "unprocessed b_U should be the zero fill"
    return model.eval()


def run_tl(model: HookedTransformer, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return logits, {k: v for k, v in cache.items()}


def numpy_f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


# ---------------------------------------------------------------------------------------------
# Fixture family: forward passes (hooks, logits) for each model, mode and batch


def write_forward_fixtures(
    name: str, hf_model: GPT2LMHeadModel, batches: dict[str, torch.Tensor], out_dir: Path
) -> dict:
    """M.processed|unprocessed.BATCH.safetensors; returns the self-check numbers."""
    checks: dict[str, float] = {}
    tl = {mode: load_tl(hf_model, processed=(mode == "processed")) for mode in ("processed", "unprocessed")}
    lnfree = hf_model.config.layer_norm_epsilon >= 1e6
    for batch_name, tokens in batches.items():
        logits = {}
        for mode, model in tl.items():
            tl_logits, cache = run_tl(model, tokens)
            logits[mode] = tl_logits
            tensors = {k: numpy_f32(v) for k, v in cache.items()}
            tensors["logits_last"] = numpy_f32(tl_logits[:, -1, :])
            tensors["logits_head"] = numpy_f32(tl_logits[:, :, :HEAD_VOCAB])
            if lnfree:
                scales = [v for k, v in cache.items() if k.endswith("hook_scale")]
                worst = max((s - LNFREE_SCALE).abs().max().item() for s in scales)
                assert worst == 0.0, f"{name}: LN-free hook_scale not exactly 1e6 (off by {worst})"
            if mode == "unprocessed":
                with torch.no_grad():
                    hf_out = hf_model(tokens, output_hidden_states=True)
                diff = (hf_out.logits - tl_logits).abs().max().item()
                checks[f"{batch_name}.tl_unprocessed_vs_hf_logits"] = diff
                print(f"  {name} {batch_name}: max |TL unprocessed - HF| logits = {diff:.3e}")
                assert diff < 1e-4, f"{name}: TL and HF logits differ by {diff}"
                tensors["hf.logits_last"] = numpy_f32(hf_out.logits[:, -1, :])
                tensors["hf.logits_head"] = numpy_f32(hf_out.logits[:, :, :HEAD_VOCAB])
                for i, h in enumerate(hf_out.hidden_states):
                    tensors[f"hf.hidden_states.{i}"] = numpy_f32(h)
                if lnfree:
                    exact = exact_lnfree_logits(hf_model, tokens)
                    d = (exact - hf_out.logits).abs().max().item()
                    checks[f"{batch_name}.exact_linear_map_vs_hf_logits"] = d
                    print(f"  {name} {batch_name}: max |exact FakeLN map - HF| logits = {d:.3e}")
                    assert d < 1e-4
            save_numpy(tensors, str(out_dir / f"{name}.{mode}.{batch_name}.safetensors"))
        shift = logits["processed"] - logits["unprocessed"]
        off = (shift - shift.mean(-1, keepdim=True)).abs().max().item()
        checks[f"{batch_name}.processed_minus_unprocessed_non_constant"] = off
        print(f"  {name} {batch_name}: max |(proc - unproc) - per-position mean| = {off:.3e}")
        assert off < 1e-4, f"{name}: processed and unprocessed logits differ beyond a constant"
    return checks


def exact_lnfree_logits(hf_model: GPT2LMHeadModel, tokens: torch.Tensor) -> torch.Tensor:
    """Logits with every LN replaced by lnlens's exact map (x - mean) * w_saved / sqrt(eps) + b."""
    handles = []
    for ln in layer_norms(hf_model).values():

        def hook(module, args, output):
            x = args[0]
            root = torch.sqrt(torch.tensor(module.eps, dtype=torch.float32))
            return (x - x.mean(-1, keepdim=True)) * (module.weight / root) + module.bias

        handles.append(ln.register_forward_hook(hook))
    with torch.no_grad():
        logits = hf_model(tokens).logits
    for h in handles:
        h.remove()
    return logits


# ---------------------------------------------------------------------------------------------
# Fixture family: TL processed weights, matrix by matrix


def write_processed_weights(name: str, hf_model: GPT2LMHeadModel, out_dir: Path) -> list[str]:
    """M.processed.weights.safetensors under TL names; W_E / W_U cut to vocab ids 0..511 (size)."""
    model = load_tl(hf_model, processed=True)
    tensors = {}
    for key, value in model.state_dict().items():
        if key.endswith((".mask", ".IGNORE")):
            continue
        if key == "embed.W_E":
            tensors["embed.W_E.head"] = numpy_f32(value[:HEAD_VOCAB])
        elif key == "unembed.W_U":
            tensors["unembed.W_U.head"] = numpy_f32(value[:, :HEAD_VOCAB])
        else:
            tensors[key] = numpy_f32(value)
    save_numpy(tensors, str(out_dir / f"{name}.processed.weights.safetensors"))
    return sorted(tensors)


# ---------------------------------------------------------------------------------------------
# Test checkpoints + reference outputs

TEST_SHAPE = Shape(n_embd=32, n_layer=2, n_head=4, n_positions=32)
TEST_RECIPE = InitRecipe(seed=1234, weight_std=0.12)
TEST_MODEL_VARIATIONS = {
    "tiny-ln": {"ln_mode": "layernorm", "dtype": "float16", "files": "model.safetensors",
                "key_prefix": "transformer.", "lm_head": "absent (tied to wte)"},
    "tiny-lnfree": {"ln_mode": "ln-free", "dtype": "float32",
                    "files": "2 shards + model.safetensors.index.json", "key_prefix": "",
                    "lm_head": "absent (tied to wte)"},
}


def build_test_models(tokenizer: GPT2TokenizerFast) -> dict:
    """tiny-ln (fp16, one file, transformer. prefix) and tiny-lnfree (fp32, 2 shards, no prefix)."""
    base = round_through_fp16(init_random_gpt2(TEST_SHAPE, TEST_RECIPE))
    sigmas = measure_ln_sigmas(base, real_text_tokens(tokenizer, TEST_SHAPE.n_positions))
    twin = make_lnfree(base, sigmas)
    save_checkpoint(base, TEST_MODELS_DIR / "tiny-ln", torch.float16)
    # wte alone is 6.4 MB in fp32, so a 4 MB limit gives exactly two shards.
    save_checkpoint(twin, TEST_MODELS_DIR / "tiny-lnfree", torch.float32, max_shard_size="4MB", strip_prefix=True)
    shards = sorted((TEST_MODELS_DIR / "tiny-lnfree").glob("*.safetensors"))
    assert len(shards) == 2, f"tiny-lnfree has {len(shards)} shards, expected 2"
    return {"sigmas": sigmas}


def write_test_fixtures(tokenizer: GPT2TokenizerFast) -> None:
    info = build_test_models(tokenizer)
    # Only this family's files (top level); dla/ and interventions/ belong to their own families.
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    for f in REFERENCE_DIR.iterdir():
        if f.is_file() and (f.suffix == ".safetensors" or f.name == "manifest.json"):
            f.unlink()
    batches, manifest_batches = {}, []
    for batch_name, prompts in BATCHES.items():
        ids = [tokenizer(p)["input_ids"] for p in prompts]
        assert len({len(x) for x in ids}) == 1, f"{batch_name}: prompts tokenize to different lengths {ids}"
        batches[batch_name] = torch.tensor(ids, dtype=torch.long)
        manifest_batches.append({"name": batch_name, "prompts": prompts, "tokens": ids})
        print(f"{batch_name}: {len(ids)} x {len(ids[0])} tokens")
    models_info, checks, weight_keys = {}, {}, {}
    for name in ("tiny-ln", "tiny-lnfree"):
        print(f"{name}:")
        hf_model = load_checkpoint(TEST_MODELS_DIR / name)
        checks[name] = write_forward_fixtures(name, hf_model, batches, REFERENCE_DIR)
        weight_keys[name] = write_processed_weights(name, hf_model, REFERENCE_DIR)
        models_info[name] = {
            "path": f"Tests/Fixtures/models/{name}",
            "layer_norm_epsilon": hf_model.config.layer_norm_epsilon,
            **TEST_MODEL_VARIATIONS[name],
        }
    # the in-memory twin equals what was written
    base = round_through_fp16(init_random_gpt2(TEST_SHAPE, TEST_RECIPE))
    assert_same_weights(base, load_checkpoint(TEST_MODELS_DIR / "tiny-ln"), "tiny-ln")
    assert_same_weights(make_lnfree(base, info["sigmas"]), load_checkpoint(TEST_MODELS_DIR / "tiny-lnfree"), "tiny-lnfree")
    models_info["tiny-lnfree"]["sigma_avg"] = info["sigmas"]
    models_info["tiny-lnfree"]["made_from"] = "tiny-ln"
    hooks = sorted(load_torch(REFERENCE_DIR / "tiny-ln.processed.batch0.safetensors"))
    unprocessed = sorted(load_torch(REFERENCE_DIR / "tiny-ln.unprocessed.batch0.safetensors"))
    manifest = {
        "batches": manifest_batches,
        "tolerances": TOLERANCES,
        "generator": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "transformer_lens": tl_version(),
            "numpy": np.__version__,
            "script": "scripts/reference/make_models_and_fixtures.py",
        },
        "models": models_info,
        "files": {
            "forward": "{model}.{processed|unprocessed}.{batch}.safetensors",
            "weights": "{model}.processed.weights.safetensors",
        },
        "keys": {
            "forward_processed": hooks,
            "forward_unprocessed_extra": [k for k in unprocessed if k not in hooks],
            "weights": weight_keys,
        },
        "head_vocab": HEAD_VOCAB,
        "self_checks": checks,
    }
    (REFERENCE_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def tl_version() -> str:
    from importlib.metadata import version

    return version("transformer_lens")


# ---------------------------------------------------------------------------------------------
# Fixture family: direct logit attribution vs exact direct effect (DESIGN.md "Definitions")

DLA_DIR = REFERENCE_DIR / "dla"
# IOI-style prompts, two token lengths (14 and 12) so that grouping prompts by length is exercised.
# corrupt = same template with other names (same token count, checked below).
DLA_PROMPTS = [
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John",
     "When Alice and Bob went to the store, Bob gave a drink to"),
    ("When Tom and James went to the park, James gave a ball to", " Tom", " James",
     "When Dan and Sarah went to the park, Sarah gave a ball to"),
    ("After Lisa and Mark met at the office, Mark sent a letter to", " Lisa", " Mark",
     "After Anna and Paul met at the office, Paul sent a letter to"),
    ("Then Sarah and Paul talked, and Paul handed a book to", " Sarah", " Paul",
     "Then Mary and Tom talked, and Tom handed a book to"),
    ("While Kate and David were at the beach, David threw a stone to", " Kate", " David",
     "While Emma and Peter were at the beach, Peter threw a stone to"),
    ("Then John and Anna talked, and Anna handed a pen to", " John", " Anna",
     "Then Lisa and Mark talked, and Mark handed a pen to"),
    ("Friends Peter and Emma arrived, and Emma gave a gift to", " Peter", " Emma",
     "Friends James and Kate arrived, and Kate gave a gift to"),
    ("Friends Bob and Alice arrived, and Alice gave a key to", " Bob", " Alice",
     "Friends David and Dan arrived, and Dan gave a key to"),
]
LNFREE_NMAE_LIMIT = 1e-3  # percent; DLA and DE are the same linear map without LN


def dla_components(n_layers: int, n_heads: int) -> list[str]:
    """Component order of the rows: embed, pos_embed, then per layer its heads, b_O, mlp_out."""
    names = ["embed", "pos_embed"]
    for l in range(n_layers):
        names += [f"L{l}H{h}" for h in range(n_heads)] + [f"L{l}_bO", f"L{l}_mlp"]
    return names


def nmae(dla: np.ndarray, de: np.ndarray) -> float:
    """mean |DLA - DE| / mean |DE| * 100 (in float64; no epsilon in the denominator)."""
    dla, de = np.asarray(dla, np.float64), np.asarray(de, np.float64)
    return float(np.abs(dla - de).mean() / np.abs(de).mean() * 100)


def dla_for_group(model: HookedTransformer, tokens: torch.Tensor, answer: torch.Tensor,
                  wrong: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, float]]:
    """DLA and DE of every component for one batch of same-length prompts ([B] per component).

    DLA as the paper's code (TL cache.stack_head_results + cache.apply_ln_to_stack, dot u);
    DE = f(r) - f(r - c), f(x) = ln_final(x) . u with TL's own ln_final module (float32).
    Returns (dla, de, errors): errors "sum" = max |sum of components - resid_post|, "dla_sum" =
    max |sum of DLA - f(r)|, "hooked_de" = max |DE - DE from a hooked forward pass|.
    """
    cfg = model.cfg
    last = cfg.n_layers - 1
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        u = (model.W_U[:, answer] - model.W_U[:, wrong]).T  # [B, d]
        heads = cache.stack_head_results(layer=-1, pos_slice=-1)  # [L*H, B, d], (layer head) order
        parts: dict[str, torch.Tensor] = {
            "embed": cache["hook_embed"][:, -1],
            "pos_embed": cache["hook_pos_embed"][:, -1],
        }
        for l in range(cfg.n_layers):
            for h in range(cfg.n_heads):
                head = heads[l * cfg.n_heads + h]
                assert torch.equal(head, cache[f"blocks.{l}.attn.hook_result"][:, -1, h])
                parts[f"L{l}H{h}"] = head
            parts[f"L{l}_bO"] = model.blocks[l].attn.b_O.expand(tokens.shape[0], -1)
            parts[f"L{l}_mlp"] = cache[f"blocks.{l}.hook_mlp_out"][:, -1]
        names = dla_components(cfg.n_layers, cfg.n_heads)
        assert list(parts) == names
        r = cache[f"blocks.{last}.hook_resid_post"][:, -1]  # [B, d]
        total = torch.stack([parts[n] for n in names]).double().sum(0)
        sum_error = (total - r.double()).abs().max().item()

        head_dla = (cache.apply_ln_to_stack(heads, layer=-1, pos_slice=-1) * u).sum(-1)  # [L*H, B]
        head_names = {f"L{l}H{h}" for l in range(cfg.n_layers) for h in range(cfg.n_heads)}
        others = [n for n in names if n not in head_names]
        other_stack = torch.stack([parts[n] for n in others])  # [C, B, d]
        other_dla = (cache.apply_ln_to_stack(other_stack, layer=-1, pos_slice=-1) * u).sum(-1)
        dla = {n: other_dla[i] for i, n in enumerate(others)}
        for l in range(cfg.n_layers):
            for h in range(cfg.n_heads):
                dla[f"L{l}H{h}"] = head_dla[l * cfg.n_heads + h]

        def f(x: torch.Tensor) -> torch.Tensor:  # [..., B, d] -> [..., B]
            return (model.ln_final(x) * u).sum(-1)

        f_r = f(r)
        de = {n: f_r - f(r - parts[n]) for n in names}
        dla_sum_error = (torch.stack([dla[n] for n in names]).double().sum(0) - f_r.double()).abs().max().item()
        # DE again from whole forward passes: remove c from the final residual stream at the last
        # position with a hook and read the logit difference (b_U cancels in the difference).
        rows = torch.arange(tokens.shape[0])

        def logit_diff(logits: torch.Tensor) -> torch.Tensor:
            return logits[rows, -1, answer] - logits[rows, -1, wrong]

        clean_diff = logit_diff(model(tokens))
        worst = 0.0
        for n in names:
            def remove(x, hook, c=parts[n]):
                x[:, -1, :] = x[:, -1, :] - c
                return x
            ablated = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{last}.hook_resid_post", remove)])
            worst = max(worst, ((clean_diff - logit_diff(ablated)) - de[n]).abs().max().item())
        assert worst < 1e-4, f"DE from hooked runs differs from f(r) - f(r - c) by {worst}"
    return {n: dla[n] for n in names}, de, {"sum": sum_error, "dla_sum": dla_sum_error, "hooked_de": worst}


def json_one_item_per_line(obj: dict) -> str:
    """A JSON object with one key per line and lists of objects one element per line."""
    lines = []
    for i, (key, value) in enumerate(obj.items()):
        comma = "," if i < len(obj) - 1 else ""
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join("  " + json.dumps(v) for v in value)
            lines.append(f"{json.dumps(key)}: [\n{items}\n ]{comma}")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}{comma}")
    return "{\n" + "\n".join(" " + line for line in lines) + "\n}\n"


def write_dla_fixtures(tokenizer: GPT2TokenizerFast) -> dict:
    """dla/prompts.jsonl and dla/M.json for M in tiny-ln, tiny-lnfree; returns the NMAE figures."""
    DLA_DIR.mkdir(parents=True, exist_ok=True)
    prompts, token_ids = [], []
    for i, (prompt, answer, wrong, corrupt) in enumerate(DLA_PROMPTS):
        ids = tokenizer(prompt)["input_ids"]
        a, w = tokenizer(answer)["input_ids"], tokenizer(wrong)["input_ids"]
        assert len(a) == 1 and len(w) == 1, f"DLA prompt {i}: answer/wrong not single tokens"
        assert len(tokenizer(corrupt)["input_ids"]) == len(ids), f"DLA prompt {i}: corrupt length differs"
        assert len(ids) <= TEST_SHAPE.n_positions
        prompts.append({"prompt": prompt, "answer": answer, "wrong": wrong, "corrupt": corrupt})
        token_ids.append((ids, a[0], w[0]))
    lengths = sorted({len(ids) for ids, _, _ in token_ids})
    assert len(lengths) >= 2, "DLA prompts should have at least two token lengths"
    (DLA_DIR / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))

    figures = {}
    for name in ("tiny-ln", "tiny-lnfree"):
        hf_model = load_checkpoint(TEST_MODELS_DIR / name)
        model = load_tl(hf_model, processed=True)
        lnfree = hf_model.config.layer_norm_epsilon >= 1e6
        names = dla_components(model.cfg.n_layers, model.cfg.n_heads)
        dla = np.zeros((len(prompts), len(names)), np.float32)
        de = np.zeros_like(dla)
        errors = {"sum": 0.0, "dla_sum": 0.0, "hooked_de": 0.0}
        for length in lengths:  # one batch per prompt token length
            idx = [i for i, (ids, _, _) in enumerate(token_ids) if len(ids) == length]
            tokens = torch.tensor([token_ids[i][0] for i in idx], dtype=torch.long)
            answer = torch.tensor([token_ids[i][1] for i in idx])
            wrong = torch.tensor([token_ids[i][2] for i in idx])
            g_dla, g_de, g_errors = dla_for_group(model, tokens, answer, wrong)
            errors = {k: max(v, g_errors[k]) for k, v in errors.items()}
            for j, n in enumerate(names):
                dla[idx, j] = g_dla[n].numpy()
                de[idx, j] = g_de[n].numpy()
        sum_error, dla_sum_error = errors["sum"], errors["dla_sum"]
        assert sum_error < 1e-4, f"{name}: components do not sum to resid_post ({sum_error})"
        assert dla_sum_error < 1e-3, f"{name}: sum of DLA differs from the logit difference ({dla_sum_error})"
        head_cols = [j for j, n in enumerate(names) if re.fullmatch(r"L\d+H\d+", n)]
        per_head = {names[j]: nmae(dla[:, j], de[:, j]) for j in head_cols}
        per_layer = {}
        for l in range(model.cfg.n_layers):
            cols = [j for j in head_cols if names[j].startswith(f"L{l}H")]
            per_layer[f"L{l}"] = nmae(dla[:, cols], de[:, cols])
        global_heads = nmae(dla[:, head_cols], de[:, head_cols])
        rows = [
            {"prompt": i, "component": n, "dla": float(dla[i, j]), "direct_effect": float(de[i, j])}
            for i in range(len(prompts)) for j, n in enumerate(names)
        ]
        out = {
            "model": name,
            "ln_mode": TEST_MODEL_VARIATIONS[name]["ln_mode"],
            "rows": rows,
            "nmae_heads_global": global_heads,
            "nmae_per_head": per_head,
            "nmae_per_layer": per_layer,
            "components_sum_max_abs_error": sum_error,
            "components": names,
            "prompt_tokens": [{"tokens": ids, "answer_id": a, "wrong_id": w} for ids, a, w in token_ids],
            "dla_sum_minus_logit_diff_max_abs_error": dla_sum_error,
        }
        (DLA_DIR / f"{name}.json").write_text(json_one_item_per_line(out))
        print(f"  {name} DLA vs DE: NMAE heads global {global_heads:.6g} %; per layer "
              + ", ".join(f"{k} {v:.6g} %" for k, v in per_layer.items())
              + f"; components sum error {sum_error:.3e}; sum DLA - logit diff {dla_sum_error:.3e}; "
              f"DE vs hooked forward {errors['hooked_de']:.3e}")
        print(f"  {name} per head NMAE: " + ", ".join(f"{k} {v:.4g}" for k, v in per_head.items()))
        if lnfree:
            assert global_heads < LNFREE_NMAE_LIMIT, f"{name}: LN-free NMAE {global_heads} % >= {LNFREE_NMAE_LIMIT} %"
        figures[name] = {"global": global_heads, "per_layer": per_layer, "per_head": per_head}
    return figures


# ---------------------------------------------------------------------------------------------
# Fixture family: interventions with TL run_with_hooks on batch0

INTERVENTIONS_DIR = REFERENCE_DIR / "interventions"
INTERVENTION_SEED = 99  # add_mlp_out's random vector: 0.5 * N(0, 1), torch.Generator seed 99
INTERVENTION_CASES = [
    {"name": "zero_z_head", "hook": "blocks.0.attn.hook_z", "op": "zero", "head": 1,
     "positions": "all", "prompts": "all",
     "description": "hook_z [B,T,h,dh]: z[:, :, 1, :] = 0"},
    {"name": "patch_resid_pre_pos", "hook": "blocks.1.hook_resid_pre", "op": "replace",
     "positions": [3], "prompts": "all", "value_key": "patch_resid_pre_pos.value",
     "value_shape": "[1,T,d]", "value_source": "clean run, prompt 0, blocks.1.hook_resid_pre",
     "description": "x[b, 3, :] = value[0, 3, :] for every prompt b (prompt 1 receives prompt 0's "
                    "activation; prompt 0 is unchanged)"},
    {"name": "add_mlp_out", "hook": "blocks.1.hook_mlp_out", "op": "add", "positions": [1, 4],
     "prompts": "all", "value_key": "add_mlp_out.value", "value_shape": "[B,T,d]",
     "value_source": f"0.5 * torch.randn([B,T,d], generator=torch.Generator().manual_seed({INTERVENTION_SEED}))",
     "description": "x[:, p, :] += value[:, p, :] for p in {1, 4}; other positions of value unused"},
    {"name": "scale_pattern_head", "hook": "blocks.1.attn.hook_pattern", "op": "scale",
     "factor": 0.5, "head": 2, "positions": "all query positions", "prompts": "all",
     "description": "hook_pattern [B,h,q,k]: pattern[:, 2, :, :] *= 0.5 (no renormalisation)"},
    {"name": "replace_ln_final_scale", "hook": "ln_final.hook_scale", "op": "replace",
     "positions": "all (value differs from clean only at the last position)", "prompts": "all",
     "value_key": "replace_ln_final_scale.value", "value_shape": "[B,T,1]",
     "value_source": "clean ln_final.hook_scale with the last position multiplied by 2",
     "description": "scale = value (normalized = centred x / value)"},
    {"name": "zero_result_head", "hook": "blocks.1.attn.hook_result", "op": "zero", "head": 0,
     "positions": [5], "prompts": "all",
     "description": "hook_result [B,T,h,d]: result[:, 5, 0, :] = 0 (attn_out = sum over heads + b_O)"},
    {"name": "patch_q_head", "hook": "blocks.0.attn.hook_q", "op": "replace", "head": 3,
     "positions": "all", "prompts": "all", "value_key": "patch_q_head.value",
     "value_shape": "[1,T,h,dh]", "value_source": "clean run, prompt 0, blocks.0.attn.hook_q (all heads)",
     "description": "q[b, :, 3, :] = value[0, :, 3, :] for every prompt b"},
]


# Interventions on the last layer (blocks.1) at earlier positions that do not reach the last
# position: their logits_last equal clean.logits_last exactly; resid_final / logits_head show them.
LAST_POSITION_UNCHANGED = ("add_mlp_out", "zero_result_head")


def intervention_hooks(case: str, clean: dict, values: dict, shape: tuple[int, int, int]):
    """The TL forward hooks of one case; also fills `values` with the tensors the case stores."""
    B, T, d = shape
    if case == "zero_z_head":
        def hook(z, hook):
            z[:, :, 1, :] = 0.0
            return z
        return [("blocks.0.attn.hook_z", hook)]
    if case == "patch_resid_pre_pos":
        value = clean["blocks.1.hook_resid_pre"][0:1].clone()  # [1, T, d]
        values["patch_resid_pre_pos.value"] = value

        def hook(x, hook):
            x[:, 3, :] = value[0, 3, :]
            return x
        return [("blocks.1.hook_resid_pre", hook)]
    if case == "add_mlp_out":
        gen = torch.Generator().manual_seed(INTERVENTION_SEED)
        value = 0.5 * torch.randn((B, T, d), generator=gen, dtype=torch.float32)
        values["add_mlp_out.value"] = value

        def hook(x, hook):
            x[:, [1, 4], :] = x[:, [1, 4], :] + value[:, [1, 4], :]
            return x
        return [("blocks.1.hook_mlp_out", hook)]
    if case == "scale_pattern_head":
        def hook(p, hook):
            p[:, 2, :, :] = p[:, 2, :, :] * 0.5
            return p
        return [("blocks.1.attn.hook_pattern", hook)]
    if case == "replace_ln_final_scale":
        value = clean["ln_final.hook_scale"].clone()  # [B, T, 1]
        value[:, -1, :] = 2.0 * value[:, -1, :]
        values["replace_ln_final_scale.value"] = value

        def hook(s, hook):
            return value.clone()
        return [("ln_final.hook_scale", hook)]
    if case == "zero_result_head":
        def hook(r, hook):
            r[:, 5, 0, :] = 0.0
            return r
        return [("blocks.1.attn.hook_result", hook)]
    if case == "patch_q_head":
        value = clean["blocks.0.attn.hook_q"][0:1].clone()  # [1, T, h, dh]
        values["patch_q_head.value"] = value

        def hook(q, hook):
            q[:, :, 3, :] = value[0, :, 3, :]
            return q
        return [("blocks.0.attn.hook_q", hook)]
    raise ValueError(f"unknown intervention case {case}")


def check_interventions_by_weight_edits(name: str, model: HookedTransformer, tokens: torch.Tensor,
                                        tensors: dict, resid_key: str) -> None:
    """Cases that equal a weight edit or a closed form, checked without hooks."""
    def edited_run(layer: int, head: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
        edited = copy.deepcopy(model)
        with torch.no_grad():
            edited.blocks[layer].attn.W_O[head] *= factor  # z of that head scaled (b_O untouched)
        logits, cache = run_tl(edited, tokens)
        return numpy_f32(logits[:, -1]), numpy_f32(cache[resid_key])

    worst = 0.0
    for case, layer, head, factor in (("zero_z_head", 0, 1, 0.0), ("scale_pattern_head", 1, 2, 0.5)):
        logits, resid = edited_run(layer, head, factor)
        worst = max(worst, np.abs(logits - tensors[f"{case}.logits_last"]).max(),
                    np.abs(resid - tensors[f"{case}.resid_final"]).max())
    b_u = numpy_f32(model.unembed.b_U)
    halved = (tensors["clean.logits_last"] - b_u) / 2 + b_u  # normalized / 2 at the last position
    worst = max(worst, np.abs(halved - tensors["replace_ln_final_scale.logits_last"]).max())
    print(f"  {name} interventions vs weight edits / closed form: max abs diff {worst:.3e}")
    assert worst < 1e-5, f"{name}: hooked interventions disagree with weight edits ({worst})"


def write_intervention_fixtures(tokenizer: GPT2TokenizerFast) -> None:
    """interventions/M.safetensors (CASE.logits_last, CASE.resid_final, values) + cases.json."""
    INTERVENTIONS_DIR.mkdir(parents=True, exist_ok=True)
    prompts = BATCHES["batch0"]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    tokens = torch.tensor(ids, dtype=torch.long)
    B, T = tokens.shape
    resid_key = f"blocks.{TEST_SHAPE.n_layer - 1}.hook_resid_post"
    keys = {}
    for name in ("tiny-ln", "tiny-lnfree"):
        model = load_tl(load_checkpoint(TEST_MODELS_DIR / name), processed=True)
        clean_logits, clean = run_tl(model, tokens)
        tensors = {"clean.logits_last": numpy_f32(clean_logits[:, -1]),
                   "clean.logits_head": numpy_f32(clean_logits[:, :, :HEAD_VOCAB]),
                   "clean.resid_final": numpy_f32(clean[resid_key])}
        changes = []
        for case in INTERVENTION_CASES:
            values: dict[str, torch.Tensor] = {}
            captured = {}

            def capture(x, hook):
                captured["resid"] = x.detach().clone()
            hooks = intervention_hooks(case["name"], clean, values, (B, T, model.cfg.d_model))
            with torch.no_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks + [(resid_key, capture)])
            c = case["name"]
            tensors[f"{c}.logits_last"] = numpy_f32(logits[:, -1])
            tensors[f"{c}.resid_final"] = numpy_f32(captured["resid"])
            for k, v in values.items():
                tensors[k] = numpy_f32(v)
            tensors[f"{c}.logits_head"] = numpy_f32(logits[:, :, :HEAD_VOCAB])
            change = (logits[:, -1] - clean_logits[:, -1]).abs().max().item()
            resid_change = (captured["resid"] - clean[resid_key]).abs().max().item()
            changes.append(f"{c} {change:.3g} (resid_final {resid_change:.3g})")
            assert max(change, resid_change) > 1e-4, f"{name} {c}: intervention changed nothing"
            # the last layer's mlp_out / result at positions before the last cannot reach the last position
            assert (change == 0.0) == (c in LAST_POSITION_UNCHANGED), f"{name} {c}: logit change {change}"
        # the patched prompt 0 sees its own values, so it is unchanged by patch_resid_pre_pos / patch_q_head
        for c in ("patch_resid_pre_pos", "patch_q_head"):
            same = np.abs(tensors[f"{c}.logits_last"][0] - tensors["clean.logits_last"][0]).max()
            assert same == 0.0, f"{name} {c}: prompt 0 changed by {same}"
        print(f"  {name} interventions, max |logit change| at the last position: " + ", ".join(changes))
        check_interventions_by_weight_edits(name, model, tokens, tensors, resid_key)
        save_numpy(tensors, str(INTERVENTIONS_DIR / f"{name}.safetensors"))
        keys[name] = sorted(tensors)
    assert keys["tiny-ln"] == keys["tiny-lnfree"]
    doc = {
        "batch": "batch0",
        "prompts": prompts,
        "tokens": ids,
        "model_processing": "TL defaults: fold_ln, center_writing_weights, center_unembed, fold_value_biases",
        "run": "HookedTransformer.run_with_hooks(tokens, fwd_hooks=[...]) (one case at a time, "
               "from the clean model), no BOS",
        "index_conventions": "positions and heads are 0-based; 'all' = every prompt / position / "
                             "head index listed; shapes use B=2, T=7, d=32, h=4, dh=8",
        "files": ["tiny-ln.safetensors", "tiny-lnfree.safetensors"],
        "per_case_keys": {"logits_last": "[B, 50257], last position",
                          "logits_head": f"[B, T, {HEAD_VOCAB}], every position, vocab ids 0..{HEAD_VOCAB - 1}",
                          "resid_final": f"[B, T, d], {resid_key} of the intervened run"},
        "clean_keys": ["clean.logits_last", "clean.logits_head", "clean.resid_final"],
        "logits_last_equal_clean": list(LAST_POSITION_UNCHANGED),
        "logits_last_equal_clean_note": "these cases act on the last layer at positions before the "
                                        "last, so logits_last equals clean.logits_last exactly (checked); "
                                        "compare resid_final and logits_head",
        "keys": keys["tiny-ln"],
        "cases": INTERVENTION_CASES,
        "tolerances": {"logits_atol": TOLERANCES["logits_atol"], "hooks_atol": TOLERANCES["hooks_atol"]},
    }
    (INTERVENTIONS_DIR / "cases.json").write_text(json.dumps(doc, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Fixture family: weight-processing variants (one TL processing switch off, the others on)

PROCESSING_DIR = REFERENCE_DIR / "processing"
PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
PROCESSING_VARIANTS = {f"no_{flag}": {f: f != flag for f in PROCESSING_FLAGS} for flag in PROCESSING_FLAGS}
PROCESSING_HOOKS = ("ln_final.hook_normalized", "blocks.1.hook_resid_post", "blocks.0.attn.hook_v",
                    "blocks.0.ln1.hook_normalized")


class _CaptureLogging(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_tl_flags(hf_model: GPT2LMHeadModel, flags: dict[str, bool]) -> tuple[HookedTransformer, list[str]]:
    """As HookedTransformer.from_pretrained(fold_ln=..., ...) for GPT-2: normalization_type is
    LNPre iff fold_ln (get_pretrained_model_config), then load_and_process_state_dict with the
    flags as given. Returns the model and every warning TL logged while loading."""
    cfg = tl_config(hf_model.config, fold_ln=flags["fold_ln"])
    model = HookedTransformer(cfg)
    state = {k: v.detach().clone() for k, v in convert_gpt2_weights(hf_model, cfg).items()}
    handler = _CaptureLogging()
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_and_process_state_dict(state, refactor_factored_attn_matrices=False, **flags)
    finally:
        logging.getLogger().removeHandler(handler)
    return model.eval(), handler.messages + [str(w.message) for w in caught]


def detect_applied_processing(model: HookedTransformer) -> dict:
    """What TL actually did, read off the loaded weights (not from the flags we passed):
    fold_ln: no LN weights left; center_writing_weights: W_E, W_pos, W_O, b_O, W_out, b_out have
    zero mean over d_model; center_unembed: W_U and b_U have zero mean over the vocabulary;
    fold_value_biases: every b_V is zero. Also the largest |mean| behind each decision."""
    sd = model.state_dict()
    L = model.cfg.n_layers

    def rel_mean(t: torch.Tensor, dim) -> float:  # max |mean| relative to max |t|
        return (t.mean(dim).abs().max() / t.abs().max().clamp_min(1e-30)).item()

    writing = [rel_mean(sd["embed.W_E"], -1), rel_mean(sd["pos_embed.W_pos"], -1)]
    for l in range(L):
        writing += [rel_mean(sd[f"blocks.{l}.attn.W_O"], -1), rel_mean(sd[f"blocks.{l}.attn.b_O"], 0),
                    rel_mean(sd[f"blocks.{l}.mlp.W_out"], -1), rel_mean(sd[f"blocks.{l}.mlp.b_out"], 0)]
    unembed = max(rel_mean(sd["unembed.W_U"], -1), abs(sd["unembed.b_U"].mean().item()))
    b_v = max(sd[f"blocks.{l}.attn.b_V"].abs().max().item() for l in range(L))
    has_ln = any(k.endswith((".w", ".b")) and (".ln" in k or k.startswith("ln_final")) for k in sd)
    centred = 1e-5  # float32 mean of a centred tensor; the raw random weights are ~1e-2 .. 1e-1
    applied = {
        "fold_ln": not has_ln,
        "center_writing_weights": max(writing) < centred,
        "center_unembed": unembed < centred,
        "fold_value_biases": b_v == 0.0,
    }
    evidence = {"ln_weights_present": has_ln, "writing_weights_max_rel_mean": max(writing),
                "unembed_max_rel_mean": unembed, "b_V_max_abs": b_v}
    return {"applied": applied, "evidence": evidence}


def write_processing_fixtures() -> None:
    """processing/M.safetensors (V.logits_last, V.<hook> per variant) + variants.json."""
    PROCESSING_DIR.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((REFERENCE_DIR / "manifest.json").read_text())
    batch = next(b for b in manifest["batches"] if b["name"] == "batch0")
    tokens = torch.tensor(batch["tokens"], dtype=torch.long)
    variants_doc: dict[str, dict] = {}
    keys = {}
    for name in ("tiny-ln", "tiny-lnfree"):
        hf_model = load_checkpoint(TEST_MODELS_DIR / name)
        default_logits, default = run_tl(load_tl(hf_model, processed=True), tokens)
        unprocessed = load_tl(hf_model, processed=False)
        tensors = {}
        for variant, flags in PROCESSING_VARIANTS.items():
            model, messages = load_tl_flags(hf_model, flags)
            detected = detect_applied_processing(model)
            assert detected["applied"] == flags, f"{name} {variant}: TL applied {detected['applied']}, asked {flags}"
            logits, cache = run_tl(model, tokens)
            tensors[f"{variant}.logits_last"] = numpy_f32(logits[:, -1])
            for hook in PROCESSING_HOOKS:
                tensors[f"{variant}.{hook}"] = numpy_f32(cache[hook])
            # self-checks: no switch changes what the model computes beyond TL's documented effects
            shift = logits - default_logits
            off = (shift - shift.mean(-1, keepdim=True)).abs().max().item()
            resid = cache["blocks.1.hook_resid_post"]
            resid_off = ((resid - resid.mean(-1, keepdim=True)) - default["blocks.1.hook_resid_post"]).abs().max().item()
            dv = cache["blocks.0.attn.hook_v"] - default["blocks.0.attn.hook_v"]
            v_off = (dv - dv[:1, :1]).abs().max().item()  # the change of hook_v is one vector per head
            if flags["fold_ln"]:  # LNPre: normalized = (x - mean) / scale, whatever the mean of x
                norm_ref = {h: default[h] for h in ("ln_final.hook_normalized", "blocks.0.ln1.hook_normalized")}
            else:  # full LN: normalized * w + b, as the unprocessed model
                norm_ref = {"ln_final.hook_normalized": default["ln_final.hook_normalized"] * unprocessed.ln_final.w
                            + unprocessed.ln_final.b,
                            "blocks.0.ln1.hook_normalized": default["blocks.0.ln1.hook_normalized"]
                            * unprocessed.blocks[0].ln1.w + unprocessed.blocks[0].ln1.b}
            # relative: LN-free LNPre outputs are (x - mean) / 1e6, so an absolute bound would say nothing
            norm_off = max(((cache[h] - r).abs().max() / r.abs().max()).item() for h, r in norm_ref.items())
            print(f"  {name} {variant}: logits non-constant shift {off:.2e}, centred resid_post {resid_off:.2e}, "
                  f"hook_v non-constant shift {v_off:.2e} (shift {dv.abs().max().item():.2e}), "
                  f"hook_normalized rel {norm_off:.2e}; TL warnings: {messages}")
            for what, d, bound in (("logits", off, 1e-4), ("resid_post", resid_off, 1e-4), ("hook_v", v_off, 1e-4),
                                   ("hook_normalized (relative)", norm_off, 1e-5)):
                assert d < bound, f"{name} {variant}: {what} differs from the default processing by {d}"
            entry = variants_doc.setdefault(variant, {
                "requested": flags,
                "applied": detected["applied"],
                "normalization_type": model.cfg.normalization_type,
                "models": {},
            })
            assert entry["applied"] == detected["applied"]
            assert entry["normalization_type"] == model.cfg.normalization_type
            entry["models"][name] = {"tl_warnings": messages, "evidence": detected["evidence"]}
        save_numpy(tensors, str(PROCESSING_DIR / f"{name}.safetensors"))
        keys[name] = sorted(tensors)
    assert keys["tiny-ln"] == keys["tiny-lnfree"]
    doc = {
        "batch": "batch0",
        "prompts": batch["prompts"],
        "tokens": batch["tokens"],
        "load": "as HookedTransformer.from_pretrained(fold_ln=..., center_writing_weights=..., "
                "center_unembed=..., fold_value_biases=...) does for GPT-2: normalization_type 'LNPre' "
                "if fold_ln else 'LN', then load_and_process_state_dict(flags, "
                "refactor_factored_attn_matrices=False); run_with_cache(tokens), no BOS",
        "applied_how": "'applied' is read off the loaded TL weights, not copied from the request: "
                       "fold_ln = no LN weights left; center_writing_weights = W_E, W_pos, W_O, b_O, "
                       "W_out, b_out have zero mean over d_model; center_unembed = W_U, b_U have zero "
                       "mean over the vocabulary; fold_value_biases = every b_V is 0",
        "files": ["tiny-ln.safetensors", "tiny-lnfree.safetensors"],
        "per_variant_keys": {"logits_last": "[B, 50257], last position",
                             "ln_final.hook_normalized": "[B, T, d]",
                             "blocks.1.hook_resid_post": "[B, T, d]",
                             "blocks.0.attn.hook_v": "[B, T, h, dh]",
                             "blocks.0.ln1.hook_normalized": "[B, T, d]"},
        "shapes": "B=2, T=7, d=32, h=4, dh=8",
        "keys": keys["tiny-ln"],
        "variants": variants_doc,
        "tolerances": {"logits_atol": TOLERANCES["logits_atol"], "hooks_atol": TOLERANCES["hooks_atol"]},
    }
    (PROCESSING_DIR / "variants.json").write_text(json.dumps(doc, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Fixture family: gradients (TL hook gradients per case, transformers parameter gradients)

GRADIENTS_DIR = REFERENCE_DIR / "gradients"
# Per prompt of batch0: fixed answer / wrong ids. Picked from the last-position logits of the test
# models: each answer is among the two largest logits and each wrong id among the smallest of
# tiny-ln or tiny-lnfree, so that every metric is well away from 0 (asserted: |logit| > 2 for every
# model and mode). Decoded in manifest.json.
GRADIENT_ANSWER_IDS = [35789, 23028]
GRADIENT_WRONG_IDS = [42046, 44057]
GRADIENT_MIN_ABS_LOGIT = 2.0
GRADIENT_INTERVENTION_SEED = 4242  # intervention.resid_pre_value = 0.2 * N(0, 1), [B, d_model]
GRADIENT_RESID_VALUE_STD = 0.2
GRADIENT_TOLERANCES = {
    "grad_rtol": 1e-4,
    "grad_atol_floor": 1e-10,
    "metric_atol": 1e-4,
    "logits_atol": 1e-4,
    "param_grad_rtol": 1e-4,
    "wte_abs_sum_rtol": 1e-4,
    "note": "a gradient tensor passes if max |lnlens - reference| <= max(grad_rtol * max |reference|, "
            "grad_atol_floor), per tensor (relative because magnitudes span ~1e-7 (LN-free hook_scale "
            "grads) to ~5e6 (LN-free processed hook_normalized grads)). All-zero "
            "reference tensors (hooks_without_tl_gradient) therefore need |value| <= 1e-10. "
            "param_grad_rtol is used the same way for the parameter gradients (wte: on the stored "
            "rows). <wte>.abs_sum: |lnlens - reference| <= wte_abs_sum_rtol * reference. metric and "
            "logits_last.head: absolute.",
}
GRADIENT_METRICS = {
    "logit_diff": "sum_b (logits[b, -1, answer_b] - logits[b, -1, wrong_b])",
    "logit": "sum_b logits[b, -1, answer_b]",
    "loss": "mean over all prompts b and positions p < T-1 of -log_softmax(logits[b, p])[tokens[b, p+1]] "
            "(TL return_type='loss' = transformers labels=input_ids); the per-prompt `metric` is the "
            "mean over that prompt's T-1 positions, the differentiated scalar is their mean",
}
GRADIENT_INTERVENTIONS = [
    {"hook": "blocks.0.hook_resid_pre", "kind": "replace", "positions": [2], "heads": None,
     "prompts": "all", "value_key": "intervention.resid_pre_value", "value_shape": "[B, d_model]",
     "value_source": f"{GRADIENT_RESID_VALUE_STD} * torch.randn([B, d_model], "
                     f"generator=torch.Generator().manual_seed({GRADIENT_INTERVENTION_SEED}))",
     "description": "x[b, 2, :] = value[b, :] for every prompt b"},
    {"hook": "blocks.1.attn.hook_pattern", "kind": "scale", "factor": 0.5, "positions": "all",
     "heads": [1], "prompts": "all",
     "description": "hook_pattern [B,h,q,k]: pattern[:, 1, :, :] *= 0.5 (every query and key position, "
                    "no renormalisation)"},
    {"hook": "blocks.0.attn.hook_z", "kind": "zero", "positions": "all", "heads": [2], "prompts": "all",
     "description": "hook_z [B,T,h,dh]: z[:, :, 2, :] = 0"},
]
BOTH_MODELS = ["tiny-ln", "tiny-lnfree"]
GRADIENT_CASES = [
    {"case": "logit_diff", "metric": "logit_diff", "modes": ["processed", "unprocessed"],
     "freeze_ln_scale": False, "interventions": []},
    {"case": "logit", "metric": "logit", "modes": ["unprocessed"], "freeze_ln_scale": False,
     "interventions": []},
    {"case": "loss", "metric": "loss", "modes": ["processed", "unprocessed"], "freeze_ln_scale": False,
     "interventions": []},
    {"case": "logit_diff_frozen_scale", "metric": "logit_diff", "modes": ["processed"],
     "freeze_ln_scale": True, "interventions": []},
    {"case": "logit_diff_interventions", "metric": "logit_diff", "modes": ["processed"],
     "freeze_ln_scale": False, "interventions": GRADIENT_INTERVENTIONS},
]
PARAM_GRADIENT_METRICS = ("loss", "logit_diff")
# The tied wte gradient [50257, d] is 6.4 MB per file; only these rows are stored (`<wte>.rows`,
# ids in `<wte>.row_ids`), with `<wte>.abs_sum` = sum |g| over every row for the rest.
WTE_GRAD_ROWS_NOTE = ("token ids 0..511 (as embed.W_E.head), every id in the batch, the answer and wrong ids; "
                      "sorted ascending, no repeats")


def wte_grad_row_ids(tokens: torch.Tensor) -> list[int]:
    """Sorted row ids of the stored wte-gradient rows (WTE_GRAD_ROWS_NOTE)."""
    ids = set(range(HEAD_VOCAB)) | set(tokens.flatten().tolist())
    return sorted(ids | set(GRADIENT_ANSWER_IDS) | set(GRADIENT_WRONG_IDS))


def metric_per_prompt(metric: str, logits: torch.Tensor, tokens: torch.Tensor, answer: torch.Tensor,
                      wrong: torch.Tensor | None) -> torch.Tensor:
    """[B] per-prompt values of a metric (see GRADIENT_METRICS) from logits [B, T, V]."""
    rows = torch.arange(tokens.shape[0])
    last = logits[:, -1, :]
    if metric == "logit_diff":
        return last[rows, answer] - last[rows, wrong]
    if metric == "logit":
        return last[rows, answer]
    if metric == "loss":
        return transformer_lens.utils.lm_cross_entropy_loss(logits, tokens, per_token=True).mean(-1)
    raise ValueError(f"unknown metric {metric}")


def gradient_intervention_hooks(value: torch.Tensor, probes: dict) -> list:
    """GRADIENT_INTERVENTIONS as TL forward hooks (out of place). Each keeps its input (before the
    intervention) and output (after) with retain_grad() in `probes[hook name]`, to check which of
    the two TL's backward hook reports."""
    def probe(x, y, hook):
        x.retain_grad()
        y.retain_grad()
        probes[hook.name] = (x, y)
        return y

    def replace_resid(x, hook):
        y = x.clone()
        y[:, 2, :] = value
        return probe(x, y, hook)

    def scale_pattern(p, hook):
        factor = torch.ones(p.shape[1], 1, 1, dtype=p.dtype)
        factor[1] = 0.5
        return probe(p, p * factor, hook)

    def zero_z(z, hook):
        keep = torch.ones(z.shape[2], 1, dtype=z.dtype)
        keep[2] = 0.0
        return probe(z, z * keep, hook)

    return [("blocks.0.hook_resid_pre", replace_resid), ("blocks.1.attn.hook_pattern", scale_pattern),
            ("blocks.0.attn.hook_z", zero_z)]


def tl_gradient_run(model: HookedTransformer, tokens: torch.Tensor, metric: str, answer: torch.Tensor,
                    wrong: torch.Tensor | None, freeze_ln_scale: bool = False, fwd_hooks: list = ()) -> dict:
    """One TL forward + backward of the metric's scalar (sum over prompts, or TL's mean loss).

    Two sets of TL backward hooks on every hook point, in the same run: TL's own caching hooks
    (get_caching_hooks(incl_bwd=True), exactly what run_with_cache(incl_bwd=True) registers; they
    overwrite, so a hook point that fires several times keeps the gradient of the call whose
    backward runs last) and a recorder that keeps every call's gradient, in firing order. A hook
    point fires several times when its module is called several times: TL's TransformerBlock calls
    ln1 three times (for the query, key and value inputs), so blocks.L.ln1.hook_scale and
    blocks.L.ln1.hook_normalized each get three gradients, one per path.

    Returns metric [B], total (the differentiated scalar), logits [B,T,V] and their gradient,
    grads {hook: sum of the gradients its backward hook received = d total / d hook output, or
    None if it never fired}, calls {hook: [gradient per call, firing order]}, tl_cache {hook: what
    run_with_cache(incl_bwd=True) holds}, and ln_final_input_grad (torch full backward hook on
    model.ln_final)."""
    cache, _, bwd = model.get_caching_hooks(None, incl_bwd=True)
    calls: dict[str, list[torch.Tensor]] = {}

    def record(grad, hook):
        calls.setdefault(hook.name, []).append(grad.detach().clone())

    hooks = []
    if freeze_ln_scale:
        hooks.append((lambda name: name.endswith("hook_scale"), lambda x, hook: x.detach()))
    hooks += list(fwd_hooks)
    ln_final_input = {}

    def keep_input_grad(module, grad_in, grad_out) -> None:  # returns None: observes, changes nothing
        ln_final_input["grad"] = grad_in[0].detach().clone()

    handle = model.ln_final.register_full_backward_hook(keep_input_grad)
    model.zero_grad(set_to_none=True)
    try:
        with model.hooks(fwd_hooks=hooks, bwd_hooks=bwd + [(lambda name: True, record)]):
            if metric == "loss":
                logits, total = model(tokens, return_type="both")
            else:
                logits = model(tokens)
            logits.retain_grad()
            per_prompt = metric_per_prompt(metric, logits, tokens, answer, wrong)
            if metric != "loss":
                total = per_prompt.sum()
            total.backward()
    finally:
        handle.remove()
    grads = {}
    for name in model.hook_dict:
        got = calls.get(name)
        grads[name] = None if got is None else (got[0] if len(got) == 1 else torch.stack(got).sum(0))
        assert (got is None) == (name + "_grad" not in cache)
        if got is not None:
            assert torch.equal(cache[name + "_grad"], got[-1]), f"{name}: run_with_cache keeps the last call"
    tl_cache = {name: cache.get(name + "_grad") for name in model.hook_dict}
    return {"metric": per_prompt.detach(), "total": total.detach(), "logits": logits.detach(),
            "logits_grad": logits.grad.detach(), "grads": grads, "calls": calls, "tl_cache": tl_cache,
            "ln_final_input_grad": ln_final_input.get("grad")}


def hook_grads_by_autograd(model: HookedTransformer, tokens: torch.Tensor, metric: str, answer: torch.Tensor,
                           wrong: torch.Tensor | None, freeze_ln_scale: bool = False,
                           fwd_hooks: list = ()) -> tuple[torch.Tensor, dict, dict]:
    """The hook gradients without TL's backward hooks: every call's output of every hook point
    (after the freeze / intervention hooks, which run first) is kept by a forward hook and
    differentiated with torch.autograd.grad. Returns (total, {hook: summed gradient or None},
    {hook: [gradient per call, FORWARD order]}); a call whose output does not require grad (a
    frozen scale) contributes nothing; a hook with no such call gives None. For ln1 the forward
    order is query, key, value (the order of TransformerBlock's keyword arguments)."""
    outputs: dict[str, list[torch.Tensor]] = {}

    def keep(x, hook):
        outputs.setdefault(hook.name, []).append(x)
        return x

    hooks = [(lambda name: name.endswith("hook_scale"), lambda x, hook: x.detach())] if freeze_ln_scale else []
    hooks += list(fwd_hooks) + [(lambda name: True, keep)]
    with model.hooks(fwd_hooks=hooks):
        if metric == "loss":
            logits, total = model(tokens, return_type="both")
        else:
            logits = model(tokens)
            total = metric_per_prompt(metric, logits, tokens, answer, wrong).sum()
        flat = [(k, i, x) for k, xs in outputs.items() for i, x in enumerate(xs) if x.requires_grad]
        grads = torch.autograd.grad(total, [x for _, _, x in flat])
    per_call: dict[str, list[torch.Tensor]] = {}
    for (k, _, _), g in zip(flat, grads):
        per_call.setdefault(k, []).append(g.detach())
    summed = {k: (torch.stack(per_call[k]).sum(0) if k in per_call else None) for k in outputs}
    return total.detach(), summed, per_call


def frozen_scale_leaf_grads(model: HookedTransformer, tokens: torch.Tensor, answer: torch.Tensor,
                            wrong: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The logit-diff run with every hook_scale output replaced by a detached copy made a leaf:
    the gradient that reaches the frozen value (which TL's backward hook never reports), summed
    over the calls of a hook point (ln1 is called three times per block)."""
    leaves: dict[str, list[torch.Tensor]] = {}

    def freeze(x, hook):
        leaf = x.detach().requires_grad_(True)
        leaves.setdefault(hook.name, []).append(leaf)
        return leaf

    model.zero_grad(set_to_none=True)
    with model.hooks(fwd_hooks=[(lambda name: name.endswith("hook_scale"), freeze)]):
        metric = metric_per_prompt("logit_diff", model(tokens), tokens, answer, wrong)
        metric.sum().backward()
    return metric.detach(), {k: torch.stack([v.grad for v in vs]).sum(0) for k, vs in leaves.items()}


def hf_gradient_run(hf_model: GPT2LMHeadModel, tokens: torch.Tensor, metric: str, answer: torch.Tensor,
                    wrong: torch.Tensor | None) -> dict:
    """transformers forward + backward: metric [B], total, hidden-state grads, parameter .grad."""
    hf_model.zero_grad(set_to_none=True)
    out = hf_model(tokens, output_hidden_states=True, labels=tokens if metric == "loss" else None)
    for h in out.hidden_states:
        h.retain_grad()
    per_prompt = metric_per_prompt(metric, out.logits, tokens, answer, wrong)
    total = out.loss if metric == "loss" else per_prompt.sum()
    total.backward()
    return {"metric": per_prompt.detach(), "total": total.detach(), "logits": out.logits.detach(),
            "hidden_grads": [h.grad.detach() for h in out.hidden_states]}


def checkpoint_tensor_names(folder: Path) -> list[str]:
    """Tensor names as stored in the checkpoint's safetensors file(s)."""
    from safetensors import safe_open

    names = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "np") as s:
            names += list(s.keys())
    return sorted(names)


def hf_param_grads_by_checkpoint_name(hf_model: GPT2LMHeadModel, folder: Path) -> dict[str, torch.Tensor]:
    """Every trainable parameter's .grad under the checkpoint's own tensor name (with or without the
    `transformer.` prefix, as the file has it). The tied lm_head is not a separate parameter."""
    stored = set(checkpoint_tensor_names(folder))
    params = dict(hf_model.named_parameters())  # shared Parameters appear once: no lm_head.weight
    assert "lm_head.weight" not in params
    assert hf_model.lm_head.weight is hf_model.transformer.wte.weight, "unembedding not tied"
    out = {}
    for name, p in params.items():
        key = name if name in stored else name.removeprefix("transformer.")
        assert key in stored, f"{folder.name}: parameter {name} not in the checkpoint"
        assert p.grad is not None, f"{folder.name}: no gradient for {name}"
        out[key] = p.grad.detach().clone()
    assert set(out) == stored, f"{folder.name}: checkpoint tensors without a parameter: {stored - set(out)}"
    return out


def untied_wte_grad_parts(hf_model: GPT2LMHeadModel, tokens: torch.Tensor, metric: str,
                          answer: torch.Tensor, wrong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d/d embedding, d/d unembedding) from a copy whose lm_head is a separate Parameter."""
    untied = copy.deepcopy(hf_model)
    untied.lm_head.weight = torch.nn.Parameter(untied.transformer.wte.weight.detach().clone())
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    hf_gradient_run(untied, tokens, metric, answer, wrong)
    return untied.transformer.wte.weight.grad.detach(), untied.lm_head.weight.grad.detach()


def tl_param_grads_as_hf(model: HookedTransformer) -> dict[str, torch.Tensor]:
    """.grad of an UNPROCESSED TL model's parameters in transformers' GPT-2 layout and names (the
    inverse of convert_gpt2_weights; W_E's and W_U's gradients added, as for the tied wte)."""
    g = {k: p.grad.detach() for k, p in model.named_parameters() if p.grad is not None}

    def columns(w):  # [h, d, dh] -> [d, h*dh]
        return w.permute(1, 0, 2).reshape(w.shape[1], -1)

    out = {"transformer.wte.weight": g["embed.W_E"] + g["unembed.W_U"].T,
           "transformer.wpe.weight": g["pos_embed.W_pos"],
           "transformer.ln_f.weight": g["ln_final.w"], "transformer.ln_f.bias": g["ln_final.b"]}
    for l in range(model.cfg.n_layers):
        a, h = f"blocks.{l}.attn.", f"transformer.h.{l}."
        out[h + "attn.c_attn.weight"] = torch.cat([columns(g[a + w]) for w in ("W_Q", "W_K", "W_V")], 1)
        out[h + "attn.c_attn.bias"] = torch.cat([g[a + b].reshape(-1) for b in ("b_Q", "b_K", "b_V")])
        out[h + "attn.c_proj.weight"] = g[a + "W_O"].reshape(-1, model.cfg.d_model)
        out[h + "attn.c_proj.bias"] = g[a + "b_O"]
        for tl_ln, hf_ln in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[h + f"{hf_ln}.weight"] = g[f"blocks.{l}.{tl_ln}.w"]
            out[h + f"{hf_ln}.bias"] = g[f"blocks.{l}.{tl_ln}.b"]
        m = f"blocks.{l}.mlp."
        out[h + "mlp.c_fc.weight"], out[h + "mlp.c_fc.bias"] = g[m + "W_in"], g[m + "b_in"]
        out[h + "mlp.c_proj.weight"], out[h + "mlp.c_proj.bias"] = g[m + "W_out"], g[m + "b_out"]
    return out


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are all zero)."""
    scale = b.abs().max().item()
    d = (a.double() - b.double()).abs().max().item()
    return d / scale if scale > 0 else d


def write_gradient_fixtures(tokenizer: GPT2TokenizerFast) -> None:
    """gradients/{model}.{mode}.{case}.safetensors, gradients/{model}.params.{metric}.safetensors,
    gradients/manifest.json. Reads the test checkpoints and batch0 of reference/manifest.json."""
    GRADIENTS_DIR.mkdir(parents=True, exist_ok=True)
    for f in GRADIENTS_DIR.iterdir():
        if f.is_file() and (f.suffix == ".safetensors" or f.name == "manifest.json"):
            f.unlink()
    reference = json.loads((REFERENCE_DIR / "manifest.json").read_text())
    batch = next(b for b in reference["batches"] if b["name"] == "batch0")
    tokens = torch.tensor(batch["tokens"], dtype=torch.long)
    B, T = tokens.shape
    answer, wrong = torch.tensor(GRADIENT_ANSWER_IDS), torch.tensor(GRADIENT_WRONG_IDS)
    assert len(GRADIENT_ANSWER_IDS) == len(GRADIENT_WRONG_IDS) == B
    forward_hooks = [k for k in reference["keys"]["forward_processed"] if not k.startswith("logits_")]
    case_rows, param_rows, checks = [], [], {}
    hook_keys, param_keys, wte_keys = None, {}, {}
    wte_row_ids = wte_grad_row_ids(tokens)
    intervention_note = None
    multi_call_order: dict[str, str] = {}
    for name in BOTH_MODELS:
        hf_model = load_checkpoint(TEST_MODELS_DIR / name)
        lnfree = hf_model.config.layer_norm_epsilon >= 1e6
        d_model = hf_model.config.n_embd
        gen = torch.Generator().manual_seed(GRADIENT_INTERVENTION_SEED)
        resid_value = GRADIENT_RESID_VALUE_STD * torch.randn((B, d_model), generator=gen, dtype=torch.float32)
        tl = {mode: load_tl(hf_model, processed=(mode == "processed")) for mode in ("processed", "unprocessed")}
        tl64 = {mode: copy.deepcopy(m).to(torch.float64) for mode, m in tl.items()}  # float error of the reference
        c = checks.setdefault(name, {})
        runs = {}
        for spec in GRADIENT_CASES:
            case, metric = spec["case"], spec["metric"]
            for mode in spec["modes"]:
                model = tl[mode]
                # the forward fixtures hold every hook that fires (hook_attn_in, hook_q_input, ...,
                # hook_mlp_in exist but are disabled in TL's GPT-2 config and get no gradient either)
                assert set(forward_hooks) <= set(model.hook_dict), "forward fixture hooks missing in TL"
                probes: dict = {}
                hooks = gradient_intervention_hooks(resid_value, probes) if spec["interventions"] else []
                run = tl_gradient_run(model, tokens, metric, answer, wrong if metric == "logit_diff" else None,
                                      freeze_ln_scale=spec["freeze_ln_scale"], fwd_hooks=hooks)
                runs[(case, mode)] = run
                tag = f"{case}.{mode}"
                silent = [h for h in model.hook_dict if h not in forward_hooks and run["grads"][h] is not None]
                assert not silent, f"{name} {tag}: gradients at hooks outside the forward list: {silent}"
                missing = sorted(h for h in forward_hooks if run["grads"][h] is None)
                fwd = load_torch(REFERENCE_DIR / f"{name}.{mode}.batch0.safetensors")
                tensors = {}
                for h in forward_hooks:  # a hook TL reports no gradient for: zeros of the activation's shape
                    g = run["grads"][h]
                    tensors[f"{h}_grad"] = numpy_f32(g) if g is not None else np.zeros(fwd[h].shape, np.float32)
                    assert tensors[f"{h}_grad"].shape == tuple(fwd[h].shape), f"{name} {tag}: {h} grad shape"
                tensors["metric"] = numpy_f32(run["metric"])
                tensors["logits_last.head"] = numpy_f32(run["logits"][:, -1, :HEAD_VOCAB])
                if spec["interventions"]:
                    tensors["intervention.resid_pre_value"] = numpy_f32(resid_value)
                # --- self-checks common to every case
                # TL's backward hooks = torch.autograd.grad of each hook's output (same run, same hooks)
                ag_total, ag, ag_calls = hook_grads_by_autograd(
                    model, tokens, metric, answer, wrong if metric == "logit_diff" else None, spec["freeze_ln_scale"],
                    gradient_intervention_hooks(resid_value, {}) if spec["interventions"] else [])
                assert sorted(ag) == sorted(forward_hooks) and torch.equal(ag_total, run["total"])
                assert [h for h in forward_hooks if ag[h] is None] == missing, f"{name} {tag}: None sets differ"
                d = max(rel_diff(run["grads"][h], ag[h]) for h in forward_hooks if ag[h] is not None)
                c[f"{tag}.tl_backward_hooks_vs_autograd_grad_rel"] = d
                assert d < 1e-6, f"{name} {tag}: TL backward-hook gradients differ from autograd.grad ({d})"
                # hook points that fire more than once (ln1: query, key, value inputs): which path is which
                multi = sorted(h for h, g in run["calls"].items() if len(g) > 1)
                expected_multi = sorted(f"blocks.{l}.ln1.{k}" for l in range(model.cfg.n_layers)
                                        for k in ("hook_scale", "hook_normalized") if f"blocks.{l}.ln1.{k}" not in missing)
                assert multi == expected_multi, f"{name} {tag}: hooks firing several times: {multi}"
                for h in multi:
                    assert len(run["calls"][h]) == len(ag_calls[h]) == 3
                    order = []  # path of each TL backward call, in firing order
                    for g in run["calls"][h]:
                        match = [p for p, a in zip("qkv", ag_calls[h]) if rel_diff(g, a) < 1e-6]
                        assert len(match) == 1, f"{name} {tag} {h}: a TL call matches paths {match}"
                        order.append(match[0])
                    assert sorted(order) == ["k", "q", "v"]
                    firing = ",".join(order)
                    assert multi_call_order.setdefault("firing_order", firing) == firing, f"{h}: firing order varies"
                    for p, g in zip(order, run["calls"][h]):
                        tensors[f"per_call.{h}_grad.{p}"] = numpy_f32(g)
                    d = rel_diff(run["tl_cache"][h], run["grads"][h])
                    c_key = f"{tag}.run_with_cache_vs_summed_ln1_grad_max_rel"
                    c[c_key] = max(c.get(c_key, 0.0), d)
                finite = all(torch.isfinite(g).all() for g in run["grads"].values() if g is not None)
                assert finite, f"{name} {tag}: non-finite gradient"
                causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)  # key after query: masked
                scores_masked = max(run["grads"][f"blocks.{l}.attn.hook_attn_scores"][..., causal].abs().max().item()
                                    for l in range(model.cfg.n_layers))
                pattern_masked = max(run["grads"][f"blocks.{l}.attn.hook_pattern"][..., causal].abs().max().item()
                                     for l in range(model.cfg.n_layers))
                assert scores_masked == 0.0, f"{name} {tag}: attn_scores grad at masked entries {scores_masked}"
                assert pattern_masked > 0.0, f"{name} {tag}: expected pattern grads at masked entries"
                c[f"{tag}.pattern_grad_max_abs_at_masked_entries"] = pattern_masked
                last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
                d = (run["grads"][last] - run["ln_final_input_grad"]).abs().max().item()
                c[f"{tag}.resid_post_last_vs_ln_final_input_grad"] = d
                assert d == 0.0, f"{name} {tag}: {last} grad != ln_final input grad ({d})"
                if metric == "loss":
                    total_check = (run["total"] - run["metric"].mean()).abs().item()
                else:
                    total_check = (run["total"] - run["metric"].sum()).abs().item()
                assert total_check < 1e-5, f"{name} {tag}: total != reduction of per-prompt metric"
                lg = run["logits_grad"]
                if metric in ("logit_diff", "logit"):  # d metric / d logits: +-1 at the ids, 0 elsewhere
                    expect = torch.zeros_like(lg)
                    expect[torch.arange(B), -1, answer] = 1.0
                    if metric == "logit_diff":
                        expect[torch.arange(B), -1, wrong] = -1.0
                    assert torch.equal(lg, expect), f"{name} {tag}: d metric / d logits is not +-1 at the ids"
                else:  # loss: (softmax - onehot) / (B (T-1)) at p < T-1, 0 at the last position
                    assert torch.all(lg[:, -1] == 0)
                    s = lg[:, :-1].double().sum(-1).abs().max().item()
                    assert s < 1e-6, f"{name} {tag}: loss logits grad rows do not sum to 0 ({s})"
                if not spec["interventions"]:
                    d = (run["logits"][:, -1] - fwd["logits_last"]).abs().max().item()
                    c[f"{tag}.logits_last_vs_forward_fixture"] = d
                    assert d < TOLERANCES["logits_atol"], f"{name} {tag}: logits differ from the forward fixture ({d})"
                    m_fwd = metric_per_prompt(metric, fwd["logits_last"][:, None, :], tokens[:, -1:], answer, wrong) \
                        if metric != "loss" else None
                    if m_fwd is not None:
                        d = (run["metric"] - m_fwd).abs().max().item()
                        c[f"{tag}.metric_vs_forward_fixture_logits"] = d
                        assert d < GRADIENT_TOLERANCES["metric_atol"], f"{name} {tag}: metric vs forward logits {d}"
                if metric in ("logit_diff", "logit"):
                    m_ids = metric_per_prompt(metric, run["logits"], tokens, answer, wrong)
                    assert torch.equal(m_ids, run["metric"])
                    for ids in (answer, wrong) if metric == "logit_diff" else (answer,):
                        small = run["logits"][torch.arange(B), -1, ids].abs().min().item()
                        assert small > GRADIENT_MIN_ABS_LOGIT, f"{name} {tag}: a chosen logit is only {small}"
                # transformers autograd where it overlaps: hidden_states i < n_layer = resid_pre of
                # block i (processing-invariant for logit_diff and loss: every read of the residual
                # stream is centred), hidden_states[n_layer] = ln_final.hook_normalized (unprocessed)
                if not spec["interventions"] and not spec["freeze_ln_scale"] and (
                        mode == "unprocessed" or metric in ("logit_diff", "loss")):
                    hf = hf_gradient_run(hf_model, tokens, metric, answer, wrong if metric == "logit_diff" else None)
                    n = model.cfg.n_layers
                    pairs = [(f"blocks.{i}.hook_resid_pre", hf["hidden_grads"][i]) for i in range(n)]
                    if mode == "unprocessed":
                        pairs.append(("ln_final.hook_normalized", hf["hidden_grads"][n]))
                    worst = max(rel_diff(run["grads"][h], g) for h, g in pairs)
                    c[f"{tag}.hook_grads_vs_hf_hidden_state_grads_rel"] = worst
                    assert worst < 1e-5, f"{name} {tag}: TL hook grads vs HF hidden-state grads {worst}"
                    d = max((run["total"] - hf["total"]).abs().item(), (run["metric"] - hf["metric"]).abs().max().item())
                    c[f"{tag}.metric_vs_hf"] = d
                    assert d < 1e-5, f"{name} {tag}: TL and HF metric differ by {d}"
                if metric == "loss":  # TL's own run_with_cache(incl_bwd=True) gives the same bytes
                    model.zero_grad(set_to_none=True)
                    loss, own = model.run_with_cache(tokens, return_type="loss", incl_bwd=True)
                    assert torch.equal(loss.detach(), run["total"])
                    for h in forward_hooks:
                        assert torch.equal(own[h + "_grad"], run["tl_cache"][h]), f"{name} {tag}: {h} run_with_cache"
                if spec["interventions"]:
                    intervention_note = check_gradient_interventions(name, run, probes, c)
                # the float32 reference against the same case in float64 (how exact the fixture is)
                hooks64 = gradient_intervention_hooks(resid_value.double(), {}) if spec["interventions"] else []
                run64 = tl_gradient_run(tl64[mode], tokens, metric, answer, wrong if metric == "logit_diff" else None,
                                        freeze_ln_scale=spec["freeze_ln_scale"], fwd_hooks=hooks64)
                f64 = {h: rel_diff(g, run64["grads"][h]) for h, g in run["grads"].items() if g is not None}
                worst_h = max(f64, key=f64.get)
                c[f"{tag}.float32_vs_float64_max_rel"] = f64[worst_h]
                # worst: LN-free hook_scale grads (~1e-7, a sum of terms of both signs), ~1e-5 relative
                assert f64[worst_h] < 2e-5, f"{name} {tag}: float32 reference vs float64 at {worst_h}: {f64[worst_h]}"
                if spec["freeze_ln_scale"]:
                    assert all(h.endswith("hook_scale") for h in missing) and len(missing) == 2 * model.cfg.n_layers + 1, missing
                    metric_leaf, leaf = frozen_scale_leaf_grads(model, tokens, answer, wrong)
                    assert torch.equal(metric_leaf, run["metric"])
                    for h, g in leaf.items():
                        tensors[f"leaf_grad.{h}"] = numpy_f32(g)
                    # nothing downstream of ln_final's scale is frozen: same gradient as unfrozen
                    normal = runs[("logit_diff", mode)]
                    d = rel_diff(leaf["ln_final.hook_scale"], normal["grads"]["ln_final.hook_scale"])
                    c[f"{tag}.ln_final_leaf_grad_vs_unfrozen_rel"] = d
                    assert d < 1e-6, f"{name} {tag}: ln_final scale leaf grad differs from unfrozen ({d})"
                    others = [h for h in forward_hooks if h not in missing]
                    d = max(rel_diff(run["grads"][h], normal["grads"][h]) for h in others)
                    c[f"{tag}.frozen_vs_unfrozen_max_rel"] = d
                    if lnfree:  # LN-free: hook_scale is the constant 1e6 anyway
                        assert d < 1e-6, f"{name}: frozen-scale gradients differ from logit_diff ({d})"
                else:
                    assert not missing, f"{name} {tag}: no TL gradient at {missing}"
                fname = f"{name}.{mode}.{case}.safetensors"
                save_numpy(tensors, str(GRADIENTS_DIR / fname))
                grad_keys = sorted(k for k in tensors if k.endswith("_grad"))
                hook_keys = hook_keys or grad_keys
                assert grad_keys == hook_keys
                case_rows.append({
                    "case": case, "model": name, "mode": mode, "file": fname, "tokens": batch["tokens"],
                    "metric": metric, "freeze_ln_scale": spec["freeze_ln_scale"],
                    "interventions": spec["interventions"],
                    "answer_ids": GRADIENT_ANSWER_IDS if metric != "loss" else None,
                    "wrong_ids": GRADIENT_WRONG_IDS if metric == "logit_diff" else None,
                    "metric_values": [float(v) for v in run["metric"]],
                    "metric_total": float(run["total"]),
                    "hooks_without_tl_gradient": missing,
                    "extra_keys": sorted(k for k in tensors if not k.endswith("_grad")),
                    "grad_max_abs": float(max(np.abs(v).max() for k, v in tensors.items() if k.endswith("_grad"))),
                    "tolerance": {k: GRADIENT_TOLERANCES[k] for k in ("grad_rtol", "grad_atol_floor", "metric_atol",
                                                                     "logits_atol")},
                })
                print(f"  {name} {tag}: metric {[round(float(v), 6) for v in run['metric']]}"
                      + (f", no TL gradient at {len(missing)} hooks (zeros stored)" if missing else ""))
        # --- processed vs unprocessed: resid-stream gradients agree for logit_diff and loss
        for case in ("logit_diff", "loss"):
            p, u = runs[(case, "processed")], runs[(case, "unprocessed")]
            resid = [h for h in forward_hooks if re.fullmatch(r"blocks\.\d+\.hook_resid_(pre|mid|post)", h)]
            d = max(rel_diff(p["grads"][h], u["grads"][h]) for h in resid)
            c[f"{case}.processed_vs_unprocessed_resid_grads_rel"] = d
            assert d < 1e-5, f"{name} {case}: processed and unprocessed resid grads differ ({d})"
        # --- parameter gradients (transformers autograd), checked against TL unprocessed's
        folder = TEST_MODELS_DIR / name
        for metric in PARAM_GRADIENT_METRICS:
            hf = hf_gradient_run(hf_model, tokens, metric, answer, wrong if metric == "logit_diff" else None)
            grads = hf_param_grads_by_checkpoint_name(hf_model, folder)
            wte_key = next(k for k in grads if k.endswith("wte.weight"))
            embed_part, unembed_part = untied_wte_grad_parts(hf_model, tokens, metric, answer,
                                                             wrong if metric == "logit_diff" else None)
            d = rel_diff(embed_part + unembed_part, grads[wte_key])
            c[f"params.{metric}.tied_wte_grad_vs_embed_plus_unembed_rel"] = d
            assert d < 1e-6, f"{name} {metric}: tied wte grad != embedding + unembedding grads ({d})"
            assert unembed_part.abs().max() > 0 and embed_part.abs().max() > 0
            # the same gradients from TL's unprocessed model (hook run of the same metric above)
            tl_run = tl_gradient_run(tl["unprocessed"], tokens, metric, answer,
                                     wrong if metric == "logit_diff" else None)
            assert torch.equal(tl_run["metric"], runs[(metric, "unprocessed")]["metric"])
            tl_grads = tl_param_grads_as_hf(tl["unprocessed"])
            prefix = "transformer." if wte_key.startswith("transformer.") else ""
            d = max(rel_diff(g, grads[k.removeprefix("transformer.") if not prefix else k])
                    for k, g in tl_grads.items())
            assert len(tl_grads) == len(grads)
            c[f"params.{metric}.hf_vs_tl_unprocessed_max_rel"] = d
            assert d < 1e-5, f"{name} {metric}: HF and TL parameter gradients differ ({d})"
            fname = f"{name}.params.{metric}.safetensors"
            tensors = {k: numpy_f32(v) for k, v in grads.items() if k != wte_key}
            wte = grads[wte_key]
            row_ids = wte_grad_row_ids(tokens)
            assert row_ids == wte_row_ids and len(row_ids) == len(set(row_ids)) and max(row_ids) < wte.shape[0]
            tensors[f"{wte_key}.rows"] = numpy_f32(wte[row_ids])
            tensors[f"{wte_key}.row_ids"] = np.asarray(row_ids, np.float32)  # exact: ids < 2**24
            assert tensors[f"{wte_key}.row_ids"].astype(np.int64).tolist() == row_ids
            abs_sum = wte.double().abs().sum().item()
            tensors[f"{wte_key}.abs_sum"] = np.asarray(abs_sum, np.float32)  # shape []
            rest = torch.ones(wte.shape[0], dtype=torch.bool)
            rest[row_ids] = False
            rest_abs_sum = wte[rest].double().abs().sum().item()
            c[f"params.{metric}.wte_abs_sum_outside_stored_rows"] = rest_abs_sum
            d = abs(wte.abs().sum().item() - abs_sum) / abs_sum
            c[f"params.{metric}.wte_abs_sum_float32_vs_float64_rel"] = d
            assert d < GRADIENT_TOLERANCES["wte_abs_sum_rtol"], f"{name} {metric}: float32 wte abs sum off by {d}"
            if metric == "logit_diff":  # embedding: batch ids only; unembedding: answer and wrong ids only
                assert rest_abs_sum == 0.0, f"{name} {metric}: wte grad non-zero outside the stored rows"
            else:  # loss: the softmax reaches every unembedding row
                assert bool((wte[rest].abs().sum(1) > 0).all()), f"{name} {metric}: a zero wte grad row"
            tensors["metric"] = numpy_f32(hf["metric"])
            save_numpy(tensors, str(GRADIENTS_DIR / fname))
            param_keys[name] = sorted(k for k in tensors if k != "metric")
            wte_keys[name] = {"full_name": wte_key, "full_shape": list(wte.shape),
                              "rows": f"{wte_key}.rows", "row_ids": f"{wte_key}.row_ids",
                              "abs_sum": f"{wte_key}.abs_sum"}
            param_rows.append({
                "model": name, "metric": metric, "file": fname, "tokens": batch["tokens"],
                "answer_ids": GRADIENT_ANSWER_IDS if metric != "loss" else None,
                "wrong_ids": GRADIENT_WRONG_IDS if metric == "logit_diff" else None,
                "metric_values": [float(v) for v in hf["metric"]], "metric_total": float(hf["total"]),
                "grad_max_abs": float(max(g.abs().max() for g in grads.values())),
                "wte_abs_sum": float(tensors[f"{wte_key}.abs_sum"]),
                "wte_abs_sum_outside_stored_rows": rest_abs_sum,
                "tolerance": {"param_grad_rtol": GRADIENT_TOLERANCES["param_grad_rtol"],
                              "grad_atol_floor": GRADIENT_TOLERANCES["grad_atol_floor"],
                              "wte_abs_sum_rtol": GRADIENT_TOLERANCES["wte_abs_sum_rtol"]},
            })
            print(f"  {name} params.{metric}: total {float(hf['total']):.6f}; tied wte rel {c[f'params.{metric}.tied_wte_grad_vs_embed_plus_unembed_rel']:.2e}; "
                  f"HF vs TL rel {d:.2e}")
        print(f"  {name} self-checks:\n" + "\n".join(f"    {k} {v:.3g}" for k, v in c.items()))
    tok_text = {i: tokenizer.decode([i]) for i in GRADIENT_ANSWER_IDS + GRADIENT_WRONG_IDS}
    manifest = {
        "batch": "batch0",
        "prompts": batch["prompts"],
        "tokens": batch["tokens"],
        "answer_ids": GRADIENT_ANSWER_IDS,
        "wrong_ids": GRADIENT_WRONG_IDS,
        "id_text": {str(k): v for k, v in tok_text.items()},
        "metrics": GRADIENT_METRICS,
        "modes": {"processed": "fold_ln, center_writing_weights, center_unembed, fold_value_biases",
                  "unprocessed": "all four off"},
        "hook_gradient": "d metric_total / d (hook output after any intervention at that hook) = the sum of the "
                         "gradients TL backward hooks (add_hook(dir='bwd')) receive over the hook point's calls in "
                         "the run; key '<hook>_grad', TL shape, batch first. Equal to run_with_cache(incl_bwd=True) "
                         "at every hook except blocks.L.ln1.* (see hooks_called_several_times)",
        "freeze_ln_scale": "forward hook on every *.hook_scale returning act.detach(); TL then reports NO gradient "
                           "at hook_scale (its backward hook never fires): zeros stored, listed in "
                           "hooks_without_tl_gradient; leaf_grad.<hook> = d metric / d (frozen scale value)",
        "hooks_called_several_times": "TL's TransformerBlock calls ln1 three times (query, key, value inputs), so "
                                      "blocks.L.ln1.hook_scale and blocks.L.ln1.hook_normalized fire three times "
                                      "and their backward hooks receive three gradients, one per path. <hook>_grad "
                                      "is their SUM (= d metric / d the LN output, as an implementation with one "
                                      "ln1 computes it); per_call.<hook>_grad.q|k|v are the three parts. "
                                      "run_with_cache(incl_bwd=True) overwrites and keeps only the last one to fire",
        "ln1_backward_firing_order": multi_call_order.get("firing_order"),
        "run_with_cache_keeps": f"per_call.<hook>_grad.{multi_call_order.get('firing_order', '?')[-1]}",
        "interventions": GRADIENT_INTERVENTIONS,
        "intervention_gradient_check": intervention_note,
        "cases": case_rows,
        "hook_grad_keys": hook_keys,
        "param_cases": param_rows,
        "param_grad_keys": param_keys,
        "param_gradient": "transformers autograd, float32, model(input_ids, labels=input_ids).loss or the logit_diff sum; "
                          "keys = the checkpoint's tensor names; wte's grad includes the tied unembedding's and is "
                          "stored in part (wte_grad)",
        "wte_grad": {"keys": wte_keys,
                     "rows": "[R, d_model] float32: rows row_ids of the full [vocab, d_model] wte gradient",
                     "row_ids": "[R] float32 holding exact integer token ids (the Swift reader reads F32, F16, "
                                "BF16 only); " + WTE_GRAD_ROWS_NOTE,
                     "abs_sum": "[] (scalar) float32: sum of |g| over ALL vocab x d_model entries, "
                                "accumulated in float64",
                     "row_count": len(wte_row_ids), "row_ids_list": wte_row_ids,
                     "outside_stored_rows": "logit_diff: exactly 0 (asserted: the embedding gradient touches "
                                            "batch ids only, the unembedding gradient answer and wrong ids only); "
                                            "loss: every row non-zero (softmax), covered by abs_sum only"},
        "tolerances": GRADIENT_TOLERANCES,
        "generator": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "transformer_lens": tl_version(), "numpy": np.__version__,
                      "script": "scripts/reference/make_models_and_fixtures.py --gradients"},
        "self_checks": [{"model": m, "check": k, "value": v} for m, mc in checks.items() for k, v in mc.items()],
    }
    (GRADIENTS_DIR / "manifest.json").write_text(json_one_item_per_line(manifest))


def check_gradient_interventions(name: str, run: dict, probes: dict, checks: dict) -> str:
    """TL's backward hook at an intervened hook reports the gradient w.r.t. the hook's output AFTER
    the intervention (torch wraps a module's output for full backward hooks after its forward hooks
    ran); the replaced / scaled / zeroed entries pass 0 / 0.5x / 0 upstream."""
    grads = run["grads"]
    worst_pre = 0.0
    for hook, (before, after) in probes.items():
        assert torch.equal(grads[hook], after.grad), f"{name}: TL grad at {hook} is not d/d(output after)"
        worst_pre = max(worst_pre, (grads[hook] - before.grad).abs().max().item())
    assert worst_pre > 1e-3, "intervention check cannot tell before from after"
    pre, post = probes["blocks.0.hook_resid_pre"]
    assert torch.all(pre.grad[:, 2] == 0) and torch.equal(pre.grad[:, [0, 1, 3, 4, 5, 6]], post.grad[:, [0, 1, 3, 4, 5, 6]])
    assert torch.all(grads["hook_embed"][:, 2] == 0) and torch.all(grads["hook_pos_embed"][:, 2] == 0)
    pre, post = probes["blocks.1.attn.hook_pattern"]
    assert torch.equal(pre.grad[:, 1], 0.5 * post.grad[:, 1])
    assert torch.equal(pre.grad[:, [0, 2, 3]], post.grad[:, [0, 2, 3]])
    pre, post = probes["blocks.0.attn.hook_z"]
    assert torch.all(pre.grad[:, :, 2] == 0) and post.grad[:, :, 2].abs().max() > 0
    for h in ("blocks.0.attn.hook_v", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k"):
        assert torch.all(grads[h][:, :, 2] == 0), f"{name}: {h} head 2 has gradient behind the zeroed z"
    for h in ("blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"):
        assert torch.all(grads[h][:, 2] == 0), f"{name}: {h} head 2 has gradient behind the zeroed z"
    checks["logit_diff_interventions.max_abs_tl_grad_minus_grad_before_intervention"] = worst_pre
    return ("checked on every run: at each intervened hook TL's gradient equals torch's .grad of the "
            "hook's output after the intervention bit for bit and differs from the .grad of its input "
            "before it (max |difference| in self_checks); upstream, the replaced position 2 of "
            "blocks.0.hook_resid_pre passes exactly 0 (hook_embed_grad, hook_pos_embed_grad are 0 there), "
            "pattern head 1 of blocks.1 passes 0.5x, and z head 2 of blocks.0 passes 0 (its q, k, v, "
            "attn_scores, pattern grads are 0)")


# ---------------------------------------------------------------------------------------------
# Fixture family: activation patching, AtP and AtP* (DESIGN.md "Patching")

PATCHING_DIR = REFERENCE_DIR / "patching"
BOS_ID = 50256  # <|endoftext|>, prepended as TransformerLens's to_tokens does (the paper does this)
# IOI-style pairs, two token lengths (15 and 13 with BOS), interleaved. Prompts 0 and 1: the IOI
# S2 -> IO swap (one token differs); prompts 2 and 3: every name replaced (three tokens differ).
PATCHING_PROMPTS = [
    {"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "wrong": " John",
     "corrupt": "When Mary and John went to the store, Mary gave a drink to", "corruption": "S2 -> IO"},
    {"prompt": "Then Sarah and Paul talked, and Paul handed a book to", "answer": " Sarah", "wrong": " Paul",
     "corrupt": "Then Sarah and Paul talked, and Sarah handed a book to", "corruption": "S2 -> IO"},
    {"prompt": "When Tom and James went to the park, James gave a ball to", "answer": " Tom", "wrong": " James",
     "corrupt": "When Dan and Sarah went to the park, Sarah gave a ball to", "corruption": "all names replaced"},
    {"prompt": "Friends Peter and Emma arrived, and Emma gave a gift to", "answer": " Peter", "wrong": " Emma",
     "corrupt": "Friends Bob and Alice arrived, and Alice gave a gift to", "corruption": "all names replaced"},
]
PATCHING_DIRECTIONS = ("denoise", "noise")
# site -> (transformer_lens.patching function, TL activation name, index axes of the TL result)
PATCHING_SITES = {
    "resid_pre": ("get_act_patch_resid_pre", "resid_pre", ("layer", "pos")),
    "resid_mid": ("get_act_patch_resid_mid", "resid_mid", ("layer", "pos")),
    "attn_out": ("get_act_patch_attn_out", "attn_out", ("layer", "pos")),
    "mlp_out": ("get_act_patch_mlp_out", "mlp_out", ("layer", "pos")),
    "z": ("get_act_patch_attn_head_out_all_pos", "z", ("layer", "head")),
    "q": ("get_act_patch_attn_head_q_all_pos", "q", ("layer", "head")),
    "k": ("get_act_patch_attn_head_k_all_pos", "k", ("layer", "head")),
    "v": ("get_act_patch_attn_head_v_all_pos", "v", ("layer", "head")),
    "z_by_pos": ("get_act_patch_attn_head_out_by_pos", "z", ("layer", "pos", "head")),
    "q_by_pos": ("get_act_patch_attn_head_q_by_pos", "q", ("layer", "pos", "head")),
    "k_by_pos": ("get_act_patch_attn_head_k_by_pos", "k", ("layer", "pos", "head")),
    "v_by_pos": ("get_act_patch_attn_head_v_by_pos", "v", ("layer", "pos", "head")),
    "pattern": ("get_act_patch_attn_head_pattern_all_pos", "pattern", ("layer", "head")),
    "pattern_by_pos": ("get_act_patch_attn_head_pattern_by_pos", "pattern", ("layer", "head", "dest_pos")),
}
QK_SITES = ("q", "k", "q_by_pos", "k_by_pos")
# how AtP reduces (donor - patched) * grad of the TL hook tensor (batch axis dropped) to the index axes
PATCHING_ATP_SUM = {
    "resid_pre": "hook [T, d_model]: sum over d_model -> [pos]",
    "z": "hook [T, H, d_head]: sum over pos and d_head -> [head]",
    "z_by_pos": "hook [T, H, d_head]: sum over d_head -> [pos, head]",
    "pattern": "hook_pattern [H, dest, src]: sum over dest and src -> [head]",
    "pattern_by_pos": "hook_pattern [H, dest, src]: sum over src -> [head, dest_pos]",
}
PATCHING_QK_LIMIT_EPS = 1e-4  # donor difference scale for the QK-fix -> AtP limit check (float64)
PATCHING_TOLERANCES = {
    "atol": 1e-4,
    "note": "every stored value (metric.*, <site>.activation, .atp, .atp_qkfix, .atp_graddrop, .atp_star): "
            "|lnlens - reference| <= atol, NaN where the reference is NaN (padding). The float32 reference "
            "is within float32_vs_float64 (self_checks) of the same computation in float64.",
}


def patching_metric_fn(answer_id: int, wrong_id: int):
    """Logit difference answer - wrong at the last position of prompt 0 (batch of 1): a 0-dim tensor."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, answer_id] - logits[0, -1, wrong_id]
    return metric


def paper_cache_fwd_and_bwd(model: HookedTransformer, tokens: torch.Tensor, metric) -> tuple[float, dict, dict]:
    """As the paper's attribution_patching_utils.get_cache_fwd_and_bwd: forward and backward TL hooks on
    every hook whose name has no "_input", caches overwritten per call, metric(model(tokens)).backward().
    The paper's script also turns on use_attn_in and use_hook_mlp_in (extra hook points, not read by any
    site here); they stay off, so hook_attn_in and hook_mlp_in are skipped as well."""
    def not_qkv_input(name: str) -> bool:
        return "_input" not in name and not name.endswith(("hook_attn_in", "hook_mlp_in"))

    model.reset_hooks()
    cache, grad_cache = {}, {}

    def forward_cache_hook(act, hook):
        cache[hook.name] = act.detach()

    def backward_cache_hook(act, hook):
        grad_cache[hook.name] = act.detach()

    model.add_hook(not_qkv_input, forward_cache_hook, "fwd")
    model.add_hook(not_qkv_input, backward_cache_hook, "bwd")
    value = metric(model(tokens))
    value.backward(retain_graph=False)
    model.reset_hooks()
    model.zero_grad(set_to_none=True)
    return value.item(), cache, grad_cache


def site_hooks(model: HookedTransformer) -> list[str]:
    """Every TL hook a patching site reads, all layers."""
    acts = sorted({act for _, act, _ in PATCHING_SITES.values()})
    return [transformer_lens.utils.get_act_name(a, l) for l in range(model.cfg.n_layers) for a in acts]


def graddrop_backward(model: HookedTransformer, tokens: torch.Tensor, metric,
                      drop_layer: int | None) -> tuple[float, dict, set]:
    """One forward + backward of the metric with the gradient into layer drop_layer's residual-stream
    contributions (blocks.l.hook_attn_out, blocks.l.hook_mlp_out) set to zero: forward hooks there return
    the detached value (a stop-gradient), so nothing flows back through that layer's attention or MLP.
    Gradients at the site hooks from TL backward hooks; a hook whose backward hook does not fire (layer
    drop_layer's attention internals, attn_out, mlp_out) has gradient 0 by definition. drop_layer None:
    an ordinary backward pass. Returns (metric value, {hook: grad [1, ...]}, hooks given 0)."""
    names = site_hooks(model)
    grads: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple] = {}

    def keep_shape(x, hook):
        shapes[hook.name] = (tuple(x.shape), x.dtype)

    def keep_grad(g, hook):
        assert hook.name not in grads, f"{hook.name} fired twice"
        grads[hook.name] = g.detach().clone()

    def stop_gradient(x, hook):
        return x.detach()

    fwd = [(n, keep_shape) for n in names]
    if drop_layer is not None:
        fwd += [(f"blocks.{drop_layer}.hook_attn_out", stop_gradient), (f"blocks.{drop_layer}.hook_mlp_out", stop_gradient)]
    model.zero_grad(set_to_none=True)
    with model.hooks(fwd_hooks=fwd, bwd_hooks=[(n, keep_grad) for n in names]):
        value = metric(model(tokens))
        value.backward()
    model.zero_grad(set_to_none=True)
    zeroed = set()
    for n in names:
        if n not in grads:
            shape, dtype = shapes[n]
            grads[n] = torch.zeros(shape, dtype=dtype)
            zeroed.add(n)
    return value.item(), grads, zeroed


def attention_probs(q: torch.Tensor, k: torch.Tensor, attn_scale: float) -> torch.Tensor:
    """Causal softmax(q k^T / attn_scale) as TL computes it: q, k [T, H, d_head] -> [H, dest, src]."""
    scores = q.permute(1, 0, 2) @ k.permute(1, 2, 0) / attn_scale
    T = q.shape[0]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = torch.where(causal, scores, torch.tensor(-torch.inf, dtype=scores.dtype))
    return torch.softmax(scores, dim=-1)


def qk_fix_estimate(site: str, q: torch.Tensor, k: torch.Tensor, q_donor: torch.Tensor, k_donor: torch.Tensor,
                    grad_pattern: torch.Tensor, attn_scale: float) -> torch.Tensor:
    """AtP* QK fix for one layer: sum over the changed entries of (A' - A) * d metric / d A, A' the
    attention probabilities recomputed exactly with the donor query / key(s) (causal mask), A those of
    the patched run (recomputed the same way), grad_pattern [H, dest, src] the hook_pattern gradient.
    q, k [T, H, d_head] of the patched run, *_donor of the donor run. Returns the site's index shape
    for one layer: q, k [H]; q_by_pos, k_by_pos [T, H]."""
    A = attention_probs(q, k, attn_scale)
    if site in ("q", "q_by_pos"):  # a donor query at dest t changes row t only
        rows = ((attention_probs(q_donor, k, attn_scale) - A) * grad_pattern).sum(-1)  # [H, dest]
        return rows.sum(-1) if site == "q" else rows.T
    if site == "k":  # every key replaced: every row recomputed
        return ((attention_probs(q, k_donor, attn_scale) - A) * grad_pattern).sum((1, 2))
    assert site == "k_by_pos"  # key at src s replaced: column s of every row t >= s changes
    T, H = q.shape[0], q.shape[1]
    out = torch.zeros(T, H, dtype=q.dtype)
    for s in range(T):
        k_s = k.clone()
        k_s[s] = k_donor[s]
        out[s] = ((attention_probs(q, k_s, attn_scale) - A) * grad_pattern).sum((1, 2))
    return out


def atp_site(site: str, model: HookedTransformer, diff: dict, grads: dict, acts: dict, donor: dict,
             qk_fix: bool) -> torch.Tensor:
    """AtP of one site kind for every index, [layer, ...index axes]: (donor - patched) * grad summed as
    PATCHING_ATP_SUM; with qk_fix, q/k sites use qk_fix_estimate instead (other sites unchanged)."""
    _, act, axes = PATCHING_SITES[site]
    out = []
    for l in range(model.cfg.n_layers):
        name = transformer_lens.utils.get_act_name(act, l)
        if qk_fix and site in QK_SITES:
            q, k = (f"blocks.{l}.attn.hook_q", f"blocks.{l}.attn.hook_k")
            out.append(qk_fix_estimate(site, acts[q][0], acts[k][0], donor[q][0], donor[k][0],
                                       grads[f"blocks.{l}.attn.hook_pattern"][0], model.blocks[l].attn.attn_scale))
            continue
        prod = (diff[name] * grads[name])[0]
        if axes == ("layer", "pos"):
            out.append(prod.sum(-1))  # [T, d] -> [T]
        elif site in ("z", "q", "k", "v"):
            out.append(prod.sum((0, 2)))  # [T, H, dh] -> [H]
        elif axes == ("layer", "pos", "head"):
            out.append(prod.sum(-1))  # [T, H, dh] -> [T, H]
        elif site == "pattern":
            out.append(prod.sum((1, 2)))  # [H, T, T] -> [H]
        else:
            assert site == "pattern_by_pos"
            out.append(prod.sum(-1))  # [H, dest, src] -> [H, dest]
    return torch.stack(out)


def patching_one_prompt(model: HookedTransformer, clean: torch.Tensor, corrupt: torch.Tensor, answer_id: int,
                        wrong_id: int, direction: str, checks: dict, activation: bool = True) -> dict:
    """Everything stored for one prompt, model and direction: {'metric.clean', 'metric.corrupt',
    site: {'activation', 'atp', 'atp_qkfix' (q/k sites), 'atp_graddrop' [L, ...], 'atp_star'}}, each
    [...index axes] for this prompt's length. Self-check numbers are max-ed into checks."""
    import transformer_lens.patching as tl_patching

    L = model.cfg.n_layers
    metric = patching_metric_fn(answer_id, wrong_id)
    base, donor_tokens = (corrupt, clean) if direction == "denoise" else (clean, corrupt)

    def worst(key: str, value: float) -> None:
        checks[key] = max(checks.get(key, 0.0), value)

    # metric values and the donor cache TL's patching functions read
    with torch.no_grad():
        m_clean = metric(model(clean))
        m_corrupt = metric(model(corrupt))
        _, donor_cache = model.run_with_cache(donor_tokens)
    m_base = m_corrupt if direction == "denoise" else m_clean
    m_donor = m_clean if direction == "denoise" else m_corrupt
    out: dict = {"metric.clean": m_clean.detach(), "metric.corrupt": m_corrupt.detach()}

    # self-check: patching resid_pre of layer 0 at every position at once turns the patched run into the
    # donor run, so the effect is metric(donor) - metric(patched run)
    def whole(x, hook):
        return donor_cache[hook.name].clone()
    with torch.no_grad():
        m_all = metric(model.run_with_hooks(base, fwd_hooks=[("blocks.0.hook_resid_pre", whole)]))
    worst("activation.resid_pre_layer0_all_positions_minus_metric_difference",
          abs((m_all - m_base) - (m_donor - m_base)).item())
    assert abs((m_all - m_base) - (m_donor - m_base)).item() < 1e-5

    # activation patching with TransformerLens's own functions: metric(patched) - metric(base)
    if activation:
        saved_tqdm = tl_patching.tqdm
        tl_patching.tqdm = lambda iterable, *args, **kwargs: iterable  # no progress bars
        try:
            for site, (fn, _, _) in PATCHING_SITES.items():
                with torch.no_grad():
                    patched = getattr(tl_patching, fn)(model, base, donor_cache, metric)
                out.setdefault(site, {})["activation"] = patched - m_base
        finally:
            tl_patching.tqdm = saved_tqdm

    # AtP as the paper's code: forward+backward on both runs, gradient of the run being patched
    _, donor_acts, _ = paper_cache_fwd_and_bwd(model, donor_tokens, metric)
    m_b, acts, grads = paper_cache_fwd_and_bwd(model, base, metric)
    assert abs(m_b - m_base.item()) < 1e-5
    names = site_hooks(model)
    diff = {n: donor_acts[n] - acts[n] for n in names}
    for site in PATCHING_SITES:
        out.setdefault(site, {})["atp"] = atp_site(site, model, diff, grads, acts, donor_acts, qk_fix=False)
        if site in QK_SITES:
            out[site]["atp_qkfix"] = atp_site(site, model, diff, grads, acts, donor_acts, qk_fix=True)

    # GradDrop: one backward per layer with that layer's residual contributions stop-gradded
    _, plain, zeroed = graddrop_backward(model, base, metric, None)
    assert not zeroed
    worst("graddrop.no_drop_grads_vs_paper_atp_grads_max_abs",
          max((plain[n] - grads[n]).abs().max().item() for n in names))
    per_layer = {site: [] for site in PATCHING_SITES}
    for l in range(L):
        _, g_l, zeroed = graddrop_backward(model, base, metric, l)
        expected = {transformer_lens.utils.get_act_name(a, l) for a in ("attn_out", "mlp_out", "q", "k", "v", "z",
                                                                          "pattern")}
        assert zeroed == expected, f"GradDrop layer {l}: no gradient at {sorted(zeroed)}, expected {sorted(expected)}"
        for site in PATCHING_SITES:
            per_layer[site].append(atp_site(site, model, diff, g_l, acts, donor_acts, qk_fix=True))
    for site in PATCHING_SITES:
        gd = torch.stack(per_layer[site])  # [dropped layer, layer, ...]
        out[site]["atp_graddrop"] = gd
        out[site]["atp_star"] = gd.abs().sum(0) / (L - 1)
        # a site in layer m is not changed by dropping a layer l < m (its gradient comes from downstream);
        # it is 0 when l = m unless it is a residual-stream site
        fixed = out[site].get("atp_qkfix", out[site]["atp"])
        for l in range(L):
            for m in range(l + 1, L):
                worst("graddrop.upstream_drop_changes_estimate_max_abs", (gd[l, m] - fixed[m]).abs().max().item())
            if site not in ("resid_pre", "resid_mid"):
                assert torch.all(gd[l, l] == 0), f"{site}: GradDrop of its own layer {l} is not 0"

    # self-checks on the AtP identities (linear in the donor difference)
    for l in range(L):
        a = out["attn_out"]["atp"][l].sum().item()
        zsum = out["z"]["atp"][l].sum().item()
        worst("atp.sum_attn_out_minus_sum_z_heads_max_abs", abs(a - zsum))
        worst("atp.attn_out_minus_z_by_pos_summed_over_heads_max_abs",
              (out["attn_out"]["atp"][l] - out["z_by_pos"]["atp"][l].sum(-1)).abs().max().item())
        for s in ("q", "k", "v", "z"):
            worst("atp.all_pos_minus_by_pos_summed_over_pos_max_abs",
                  (out[s]["atp"][l] - out[f"{s}_by_pos"]["atp"][l].sum(0)).abs().max().item())
        worst("atp.pattern_minus_pattern_by_pos_summed_over_dest_max_abs",
              (out["pattern"]["atp"][l] - out["pattern_by_pos"]["atp"][l].sum(-1)).abs().max().item())
        worst("qkfix.q_minus_q_by_pos_summed_over_pos_max_abs",
              (out["q"]["atp_qkfix"][l] - out["q_by_pos"]["atp_qkfix"][l].sum(0)).abs().max().item())
        g_attn, g_mid = grads[f"blocks.{l}.hook_attn_out"], grads[f"blocks.{l}.hook_resid_mid"]
        assert torch.equal(g_attn, g_mid), "attn_out's gradient is resid_mid's"
    for key in ("atp.sum_attn_out_minus_sum_z_heads_max_abs", "atp.attn_out_minus_z_by_pos_summed_over_heads_max_abs",
                "atp.all_pos_minus_by_pos_summed_over_pos_max_abs",
                "atp.pattern_minus_pattern_by_pos_summed_over_dest_max_abs",
                "qkfix.q_minus_q_by_pos_summed_over_pos_max_abs", "graddrop.upstream_drop_changes_estimate_max_abs"):
        assert checks[key] < 1e-4, f"{key} = {checks[key]}"
    assert checks["graddrop.no_drop_grads_vs_paper_atp_grads_max_abs"] == 0.0

    # self-check: the recomputed attention probabilities are TL's, with and without a patched q / k
    for l in range(L):
        q, k = acts[f"blocks.{l}.attn.hook_q"][0], acts[f"blocks.{l}.attn.hook_k"][0]
        scale = model.blocks[l].attn.attn_scale
        worst("qkfix.recomputed_pattern_vs_tl_max_abs",
              (attention_probs(q, k, scale) - acts[f"blocks.{l}.attn.hook_pattern"][0]).abs().max().item())
        for which in ("q", "k"):
            hook = f"blocks.{l}.attn.hook_{which}"
            seen = {}

            def patch(x, hook, which=which):
                return donor_acts[hook.name].clone()

            def grab(p, hook):
                seen["p"] = p.detach().clone()
            with torch.no_grad():
                model.run_with_hooks(base, fwd_hooks=[(hook, patch), (f"blocks.{l}.attn.hook_pattern", grab)])
            mine = attention_probs(donor_acts[hook][0] if which == "q" else q, donor_acts[hook][0] if which == "k" else k,
                                   scale)
            worst("qkfix.recomputed_donor_pattern_vs_tl_patched_run_max_abs", (mine - seen["p"][0]).abs().max().item())
    assert checks["qkfix.recomputed_pattern_vs_tl_max_abs"] < 1e-6
    assert checks["qkfix.recomputed_donor_pattern_vs_tl_patched_run_max_abs"] < 1e-6

    # positions before the first differing token: donor == patched there, so every by-position value is 0
    first = int((clean[0] != corrupt[0]).nonzero()[0])
    for site, (_, _, axes) in PATCHING_SITES.items():
        for method in ("activation", "atp", "atp_star") if activation else ("atp", "atp_star"):
            v = out[site][method]
            if "pos" in axes:
                before = v[:, :first]
            elif "dest_pos" in axes:
                before = v[:, :, :first]
            else:
                continue
            assert torch.all(before == 0), f"{site} {method}: non-zero before the first differing position"
            worst("by_position_values_before_first_differing_token_max_abs", before.abs().max().item())
    # the QK fix does change the q / k estimates (else the fixture would not test it)
    for site in QK_SITES:
        checks[f"qkfix.{site}_max_abs_change_from_atp"] = max(
            checks.get(f"qkfix.{site}_max_abs_change_from_atp", 0.0),
            (out[site]["atp_qkfix"] - out[site]["atp"]).abs().max().item())
    return out


def patching_qk_limit_check(model64: HookedTransformer, clean: torch.Tensor, corrupt: torch.Tensor, answer_id: int,
                            wrong_id: int, direction: str) -> float:
    """float64: with the donor q / k moved to base + eps (donor - base), the QK-fixed estimate / eps tends
    to the AtP / eps (= AtP of the full difference). Returns max |qkfix/eps - atp| / max |atp| over sites."""
    metric = patching_metric_fn(answer_id, wrong_id)
    base, donor_tokens = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    _, donor_acts, _ = paper_cache_fwd_and_bwd(model64, donor_tokens, metric)
    _, acts, grads = paper_cache_fwd_and_bwd(model64, base, metric)
    eps = PATCHING_QK_LIMIT_EPS
    near = {n: acts[n] + eps * (donor_acts[n] - acts[n]) for n in site_hooks(model64)}
    diff = {n: donor_acts[n] - acts[n] for n in near}
    worst = 0.0
    for site in QK_SITES:
        atp = atp_site(site, model64, diff, grads, acts, donor_acts, qk_fix=False)
        fixed = atp_site(site, model64, diff, grads, acts, near, qk_fix=True) / eps
        worst = max(worst, ((fixed - atp).abs().max() / atp.abs().max()).item())
    return worst


def pad_nan(values: list[torch.Tensor], axes: tuple[str, ...]) -> np.ndarray:
    """Stack per-prompt [...axes] tensors as [prompt, ...axes] float32, position axes NaN-padded to the
    longest prompt."""
    shape = [max(v.shape[i] for v in values) for i in range(values[0].dim())]
    out = np.full([len(values)] + shape, np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        out[(i,) + tuple(slice(0, n) for n in v.shape)] = numpy_f32(v)
    return out


def write_patching_fixtures(tokenizer: GPT2TokenizerFast) -> None:
    """patching/{model}.{denoise|noise}.safetensors + patching/manifest.json (see the README)."""
    PATCHING_DIR.mkdir(parents=True, exist_ok=True)
    for f in PATCHING_DIR.iterdir():
        if f.is_file() and (f.suffix == ".safetensors" or f.name == "manifest.json"):
            f.unlink()
    prompts = []
    for i, p in enumerate(PATCHING_PROMPTS):
        ids = [BOS_ID] + tokenizer(p["prompt"])["input_ids"]
        cids = [BOS_ID] + tokenizer(p["corrupt"])["input_ids"]
        a, w = tokenizer(p["answer"])["input_ids"], tokenizer(p["wrong"])["input_ids"]
        assert len(a) == 1 and len(w) == 1, f"patching prompt {i}: answer / wrong not one token"
        assert len(ids) == len(cids) <= TEST_SHAPE.n_positions, f"patching prompt {i}: corrupt length differs"
        differ = [t for t in range(len(ids)) if ids[t] != cids[t]]
        prompts.append({**p, "tokens": ids, "corrupt_tokens": cids, "answer_id": a[0], "wrong_id": w[0],
                        "n_tokens": len(ids), "differing_positions": differ})
    assert len({p["n_tokens"] for p in prompts}) >= 2, "patching prompts need two token lengths"
    max_t = max(p["n_tokens"] for p in prompts)
    checks: dict[str, dict] = {}
    keys = None
    metrics: dict[str, dict] = {}
    for name in BOTH_MODELS:
        model = load_tl(load_checkpoint(TEST_MODELS_DIR / name), processed=True)
        model64 = copy.deepcopy(model).to(torch.float64)  # float error of the reference
        L = model.cfg.n_layers
        for direction in PATCHING_DIRECTIONS:
            c = checks.setdefault(f"{name}.{direction}", {})
            per_prompt, f64_diff = [], {}
            for p in prompts:
                clean = torch.tensor([p["tokens"]])
                corrupt = torch.tensor([p["corrupt_tokens"]])
                r = patching_one_prompt(model, clean, corrupt, p["answer_id"], p["wrong_id"], direction, c)
                r64 = patching_one_prompt(model64, clean, corrupt, p["answer_id"], p["wrong_id"], direction, {})
                for site, methods in r.items():
                    if isinstance(methods, dict):
                        for method, v in methods.items():
                            d = (v.double() - r64[site][method]).abs().max().item()
                            f64_diff[method] = max(f64_diff.get(method, 0.0), d)
                    else:
                        d = abs(methods.double() - r64[site]).item()
                        f64_diff["metric"] = max(f64_diff.get("metric", 0.0), d)
                c_lim = patching_qk_limit_check(model64, clean, corrupt, p["answer_id"], p["wrong_id"], direction)
                c["qkfix.limit_eps_1e-4_rel_diff_from_atp_float64"] = max(
                    c.get("qkfix.limit_eps_1e-4_rel_diff_from_atp_float64", 0.0), c_lim)
                per_prompt.append(r)
            for method, d in f64_diff.items():
                c[f"float32_vs_float64.{method}_max_abs"] = d
                assert d < PATCHING_TOLERANCES["atol"] / 10, f"{name} {direction}: float32 vs float64 {method} {d}"
            assert c["qkfix.limit_eps_1e-4_rel_diff_from_atp_float64"] < 1e-3
            for site in QK_SITES:  # the QK fix changes the q / k estimates (else the fixture would not test it)
                assert c[f"qkfix.{site}_max_abs_change_from_atp"] > 1e-3, f"{name} {direction} {site}: QK fix is a no-op"
            tensors = {"metric.clean": np.asarray([float(r["metric.clean"]) for r in per_prompt], np.float32),
                       "metric.corrupt": np.asarray([float(r["metric.corrupt"]) for r in per_prompt], np.float32)}
            for site, (_, _, axes) in PATCHING_SITES.items():
                for method in ("activation", "atp", "atp_qkfix", "atp_graddrop", "atp_star"):
                    if method not in per_prompt[0][site]:
                        continue
                    # layer is axis 0 of every per-prompt value except atp_graddrop ([dropped layer, layer, ...])
                    tensors[f"{site}.{method}"] = pad_nan([r[site][method] for r in per_prompt], axes)
            for k, v in tensors.items():
                if not k.startswith("metric."):
                    assert v.shape[0] == len(prompts) and not np.isinf(v).any()
                    assert np.isnan(v).any() == any(ax in PATCHING_SITES[k.split(".")[0]][2] for ax in ("pos", "dest_pos"))
            assert all(np.all(tensors[f"{s}.atp_star"][~np.isnan(tensors[f"{s}.atp_star"])] >= 0) for s in PATCHING_SITES)
            save_numpy(tensors, str(PATCHING_DIR / f"{name}.{direction}.safetensors"))
            keys = keys or {k: list(v.shape) for k, v in tensors.items()}
            assert {k: list(v.shape) for k, v in tensors.items()} == keys
            metrics[name] = {"clean": tensors["metric.clean"].tolist(), "corrupt": tensors["metric.corrupt"].tolist()}
            print(f"  {name} {direction}: metric clean {[round(x, 4) for x in metrics[name]['clean']]}, corrupt "
                  f"{[round(x, 4) for x in metrics[name]['corrupt']]}")
            print("    " + "\n    ".join(f"{k} {v:.3g}" for k, v in c.items()))
    sites_doc = {}
    for site, (fn, act, axes) in PATCHING_SITES.items():
        atp_sum = PATCHING_ATP_SUM.get(site) or PATCHING_ATP_SUM[
            "resid_pre" if axes == ("layer", "pos") else "z" if axes == ("layer", "head") else "z_by_pos"]
        sites_doc[site] = {"tl_function": f"transformer_lens.patching.{fn}", "tl_activation": act,
                           "hook": transformer_lens.utils.get_act_name(act, 0).replace(".0.", ".{layer}."),
                           "index_axes": ["prompt", *axes], "atp_sum": atp_sum,
                           "atp_star": "QK fix + GradDrop" if site in QK_SITES else "GradDrop"}
    manifest = {
        "prompts": prompts,
        "bos": {"id": BOS_ID, "token": "<|endoftext|>",
                "note": "prepended to prompt and corrupt (TransformerLens to_tokens, as the paper); position 0"},
        "models": {n: {"path": f"Tests/Fixtures/models/{n}", "ln_mode": TEST_MODEL_VARIATIONS[n]["ln_mode"],
                       "processing": "TL defaults: fold_ln, center_writing_weights, center_unembed, fold_value_biases; "
                                     "use_attn_result=True (load_tl)", "n_layers": TEST_SHAPE.n_layer,
                       "n_heads": TEST_SHAPE.n_head} for n in BOTH_MODELS},
        "files": "{model}.{direction}.safetensors, model in tiny-ln, tiny-lnfree; direction in denoise, noise",
        "metric": "logits[0, -1, answer_id] - logits[0, -1, wrong_id], every prompt run alone (batch of 1)",
        "directions": {
            "denoise": "patched run = corrupt tokens, donor = clean run; effect = metric(patched) - metric(corrupt)",
            "noise": "patched run = clean tokens, donor = corrupt run; effect = metric(patched) - metric(clean)"},
        "sites": sites_doc,
        "keys": keys,
        "key_axes": {
            "metric.clean, metric.corrupt": "[prompt]",
            "<site>.activation, <site>.atp, <site>.atp_star": "[prompt, ...index_axes of the site]",
            "<site>.atp_qkfix": "q, k, q_by_pos, k_by_pos only: [prompt, ...index_axes]",
            "<site>.atp_graddrop": "[prompt, dropped_layer, ...index_axes]",
        },
        "padding": f"position axes (pos, dest_pos) have length {max_t} (the longest prompt); entries at positions "
                   ">= the prompt's n_tokens are NaN",
        "activation": "transformer_lens.patching.<tl_function>(model, patched_run_tokens, donor_cache, metric) "
                      "- metric(patched run); donor_cache = run_with_cache(donor tokens)",
        "atp": "paper's code (attribution_patching_utils.get_cache_fwd_and_bwd on both runs, TL backward hooks): "
               "sum over the site's feature axis and covered positions / heads (atp_sum) of "
               "(donor activation - patched-run activation) * d metric / d activation on the patched run",
        "atp_qkfix": "Kramar et al. 2024 QK fix (q, k sites): sum over the changed rows t of head h and every "
                     "source s of (A'[h,t,s] - A[h,t,s]) * dmetric/dA[h,t,s]; A = causal softmax(q k^T / "
                     "sqrt(d_head)) of the patched run, A' = the same with the donor query at the patched "
                     "position(s) (q: rows t = patched positions) or the donor key(s) at the patched position(s) "
                     "(k: every row t >= a patched position); dmetric/dA = hook_pattern's gradient on the patched run",
        "atp_graddrop": "AtP_(l), l = 0..n_layers-1: the atp formula (atp_qkfix for q/k sites) with the gradients "
                        "of a backward pass in which blocks.l.hook_attn_out and blocks.l.hook_mlp_out are "
                        "stop-gradded (their forward value detached): no gradient flows back through layer l's "
                        "attention or MLP; the gradient at layer l's attn_out, mlp_out, q, k, v, z, pattern is 0, "
                        "so AtP_(l) is 0 for every site of layer l except resid_pre / resid_mid",
        "atp_star": "AtP*(n) = 1/(n_layers - 1) * sum_l |AtP_(l)(n)| (non-negative; estimates |effect|)",
        "tolerances": PATCHING_TOLERANCES,
        "generator": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "transformer_lens": tl_version(), "numpy": np.__version__,
                      "script": "scripts/reference/make_models_and_fixtures.py --patching"},
        "metric_values": metrics,
        "self_checks": [{"case": k, "check": ck, "value": v} for k, cs in checks.items() for ck, v in cs.items()],
    }
    (PATCHING_DIR / "manifest.json").write_text(json_one_item_per_line(manifest))


# ---------------------------------------------------------------------------------------------
# Embedded default models

DEFAULT_SHAPE = Shape(n_embd=64, n_layer=4, n_head=4, n_positions=256)
DEFAULT_RECIPE = InitRecipe(seed=20250701, weight_std=0.1)


def model_readme(title: str, body: str) -> str:
    return f"# {title}\n\n{body.strip()}\n"


def build_default_models(tokenizer: GPT2TokenizerFast) -> None:
    base = round_through_fp16(init_random_gpt2(DEFAULT_SHAPE, DEFAULT_RECIPE))
    sigmas = measure_ln_sigmas(base, real_text_tokens(tokenizer, DEFAULT_SHAPE.n_positions))
    twin = make_lnfree(base, sigmas)
    ln_dir, free_dir = DEFAULT_MODELS_DIR / "gpt2-tiny", DEFAULT_MODELS_DIR / "gpt2-tiny-lnfree"
    save_checkpoint(base, ln_dir, torch.float16, tokenizer_files=True)
    save_checkpoint(twin, free_dir, torch.float32, tokenizer_files=True)
    assert_same_weights(base, load_checkpoint(ln_dir), "gpt2-tiny")
    assert_same_weights(twin, load_checkpoint(free_dir), "gpt2-tiny-lnfree")
    tokens = real_text_tokens(tokenizer, DEFAULT_SHAPE.n_positions)
    reloaded = load_checkpoint(free_dir)
    with torch.no_grad():
        d = (exact_lnfree_logits(reloaded, tokens) - reloaded(tokens).logits).abs().max().item()
    print(f"  gpt2-tiny-lnfree: max |exact FakeLN map - HF| logits on the prose = {d:.3e}")
    assert d < 1e-4
    s = DEFAULT_SHAPE
    r = DEFAULT_RECIPE
    shape_text = (
        f"GPT-2 architecture, n_embd {s.n_embd}, n_layer {s.n_layer}, n_head {s.n_head}, "
        f"n_positions {s.n_positions}, vocab {s.vocab_size} (the GPT-2 tokenizer), tied embeddings."
    )
    init_text = (
        f"**Randomly initialised, not trained**: its predictions are noise. Seed {r.seed}; weights "
        f"N(0, {r.weight_std}) (c_proj / sqrt(2 n_layer)), wte/wpe N(0, {r.embed_std}), LN weights "
        f"1 + {r.ln_weight_std}·N(0,1), LN biases {r.ln_bias_std}·N(0,1), linear biases "
        f"{r.linear_bias_std}·N(0,1), then rounded to float16."
    )
    (ln_dir / "README.md").write_text(model_readme("gpt2-tiny", f"""
Small default model embedded in lnlens. {shape_text}

{init_text}

LN mode: `layernorm` (standard GPT-2 LayerNorm, layer_norm_epsilon 1e-5). Stored as float16.
Made by `scripts/reference/make_models_and_fixtures.py --default-models` (reproducible byte for
byte with the pinned reference venv). Its LN-free twin is `../gpt2-tiny-lnfree`.
"""))
    sig = "\n".join(f"| {k} | {v:.6f} |" for k, v in sigmas.items())
    (free_dir / "README.md").write_text(model_readme("gpt2-tiny-lnfree", f"""
LayerNorm-free twin of `../gpt2-tiny` (same weights, float32). {shape_text}

{init_text}

LN mode: `ln-free`. Made like Baroni et al.'s `remove_layernorm_by_scaling` (no fine-tuning):
for every LayerNorm, sigma_avg = mean over the {SIGMA_TOKENS} tokens of a real-text batch (the
opening of *Pride and Prejudice*, in `scripts/reference/prose.py`, as {SIGMA_TOKENS // min(s.n_positions, 128)}
sequences of {min(s.n_positions, 128)}) of sqrt(var(x) + 1e-5) at the LN input of gpt2-tiny, all in one
forward pass; then `w_saved = w · 1e6 / sigma_avg` (bias unchanged) and
`layer_norm_epsilon = 1e12`. Because the twin is not fine-tuned it only approximates gpt2-tiny.

| LayerNorm | sigma_avg |
|---|---|
{sig}
"""))
    print("default models: sigma_avg", json.dumps(sigmas, indent=1))


# ---------------------------------------------------------------------------------------------
# GPT-2-small-shaped random model (not committed; for checking lnlens at full size)

SMALL_SHAPE = Shape(n_embd=768, n_layer=12, n_head=12, n_positions=1024)
SMALL_RECIPE = InitRecipe(seed=7, weight_std=0.02)


def build_small_shape(tokenizer: GPT2TokenizerFast, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = init_random_gpt2(SMALL_SHAPE, SMALL_RECIPE)
    sigmas = measure_ln_sigmas(base, real_text_tokens(tokenizer, SMALL_SHAPE.n_positions))
    twin = make_lnfree(base, sigmas)
    ids = tokenizer(SMALL_SHAPE_PROMPT)["input_ids"]
    tokens = torch.tensor([ids], dtype=torch.long)
    reference = {"prompt": SMALL_SHAPE_PROMPT, "tokens": ids, "models": {}, "generator": {
        "torch": torch.__version__, "transformers": transformers.__version__, "transformer_lens": tl_version()}}
    for name, model in (("gpt2-small-random", base), ("gpt2-small-random-lnfree", twin)):
        folder = out / name
        save_checkpoint(model, folder, torch.float32, tokenizer_files=True)
        hf_model = load_checkpoint(folder)
        with torch.no_grad():
            logits = hf_model(tokens).logits[0, -1]
        probs = torch.softmax(logits.double(), -1)
        top = torch.topk(logits, 5)
        tl_logits, cache = run_tl(load_tl(hf_model, processed=True), tokens)
        shift = tl_logits[0, -1] - logits
        off = (shift - shift.mean()).abs().max().item()
        print(f"  {name}: max |(TL processed - HF) - mean| last-position logits = {off:.3e}")
        save_numpy({k: numpy_f32(v) for k, v in cache.items()}, str(out / f"{name}.tl_hooks.safetensors"))
        entry = {
            "path": str(folder),
            "top5": [
                {"id": int(i), "token": tokenizer.decode([int(i)]), "logit": float(logits[i]), "prob": float(probs[i])}
                for i in top.indices
            ],
            "tl_processed_vs_hf_non_constant": off,
        }
        if name.endswith("lnfree"):
            entry["sigma_avg"] = sigmas
        reference["models"][name] = entry
    (out / "reference.json").write_text(json.dumps(reference, indent=2) + "\n")
    print(f"small-shape models and reference written to {out}")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-fixtures", action="store_true", help="Tests/Fixtures/models + reference")
    parser.add_argument("--dla", action="store_true", help="Tests/Fixtures/reference/dla (needs the test models)")
    parser.add_argument("--interventions", action="store_true",
                        help="Tests/Fixtures/reference/interventions (needs the test models)")
    parser.add_argument("--processing-variants", action="store_true",
                        help="Tests/Fixtures/reference/processing (needs the test models)")
    parser.add_argument("--gradients", action="store_true",
                        help="Tests/Fixtures/reference/gradients (needs the test models and reference/manifest.json)")
    parser.add_argument("--patching", action="store_true",
                        help="Tests/Fixtures/reference/patching (needs the test models)")
    parser.add_argument("--default-models", action="store_true", help="models/gpt2-tiny{,-lnfree}")
    parser.add_argument("--small-shape", metavar="OUTDIR", type=Path, help="GPT-2-small-shaped random pair")
    args = parser.parse_args()
    everything = not (args.test_fixtures or args.dla or args.interventions or args.processing_variants
                      or args.gradients or args.patching or args.default_models or args.small_shape)
    torch.set_num_threads(1)  # same bytes on every rerun
    torch.use_deterministic_algorithms(True)
    tokenizer = load_tokenizer()
    if args.test_fixtures or everything:
        write_test_fixtures(tokenizer)
    if args.dla or everything:
        print("DLA vs direct effect:")
        write_dla_fixtures(tokenizer)
    if args.interventions or everything:
        print("interventions:")
        write_intervention_fixtures(tokenizer)
    if args.processing_variants or everything:
        print("processing variants:")
        write_processing_fixtures()
    if args.gradients or everything:
        print("gradients:")
        write_gradient_fixtures(tokenizer)
    if args.patching or everything:
        print("patching:")
        write_patching_fixtures(tokenizer)
    if args.default_models or everything:
        build_default_models(tokenizer)
    if args.small_shape:
        build_small_shape(tokenizer, args.small_shape)


if __name__ == "__main__":
    main()
