#!/usr/bin/env python3
"""Independent reference for lnlens: test checkpoints, recorded reference outputs, default models.

Everything is built offline (no downloads): random GPT-2 checkpoints are made with Hugging Face
transformers, their LayerNorm-free twins with Baroni et al.'s `remove_layernorm_by_scaling`
recipe, and reference activations with TransformerLens 2.x (built from a HookedTransformerConfig
exactly as `transformer_lens.loading_from_pretrained` does for GPT-2) and with transformers.

Run with the reference venv (see scripts/reference/README.md), from the repository root:

    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py            # all committed outputs
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --test-fixtures
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --default-models
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --small-shape /tmp/small-shape

Each fixture family is one function (`build_test_models`, `write_forward_fixtures`,
`write_processed_weights`, `build_default_models`, `build_small_shape`); new families (e.g. DLA /
direct effects) add a function and a flag in `main`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys

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
    if REFERENCE_DIR.exists():
        shutil.rmtree(REFERENCE_DIR)
    REFERENCE_DIR.mkdir(parents=True)
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
    parser.add_argument("--default-models", action="store_true", help="models/gpt2-tiny{,-lnfree}")
    parser.add_argument("--small-shape", metavar="OUTDIR", type=Path, help="GPT-2-small-shaped random pair")
    args = parser.parse_args()
    everything = not (args.test_fixtures or args.default_models or args.small_shape)
    torch.set_num_threads(1)  # same bytes on every rerun
    torch.use_deterministic_algorithms(True)
    tokenizer = load_tokenizer()
    if args.test_fixtures or everything:
        write_test_fixtures(tokenizer)
    if args.default_models or everything:
        build_default_models(tokenizer)
    if args.small_shape:
        build_small_shape(tokenizer, args.small_shape)


if __name__ == "__main__":
    main()
