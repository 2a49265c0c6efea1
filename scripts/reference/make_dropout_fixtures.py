#!/usr/bin/env python3
"""Independent reference for lnlens's training dropout (train / remove-ln --dropout).

Writes Tests/Fixtures/reference/training/:

    dropout.safetensors   four optimizer steps of tiny-ln with dropout at GPT-2's three sites:
                          losses, the first step's gradients, the parameters after every step
    dropout.json          the settings, tokens, learning rates, losses, mask self-checks, and
                          the first keep bits of a few masks (a bit-exactness check of the mask)

The masks are lnlens's (Sources/GPT2/Dropout.swift, Sources/TensorCore/Dropout.swift),
re-implemented here with numpy uint64 (wrapping) arithmetic and checked against a plain Python
integer version:

    mix(z)  = SplitMix64's output function: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
              z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31      (all mod 2^64)
    key(w)  = k = mix(w[0] + G); for each further word x: k = mix((k ^ x) + G),  G = 0x9E3779B97F4A7C15
    site key = key([seed ^ 0x64726F706F7574, step, micro_batch, site, layer])
               site: 1 embeddings (layer 0), 2 attention pattern, 3 attention output, 4 MLP output
    element i of the site's tensor (row-major over the micro-batch: (B, T, C) or (B, NH, T, T))
              kept  iff  mix(key + (i + 1) * G) >> 32 >= floor(p * 2^32)
    kept elements are multiplied by 1 / (1 - p), dropped ones are 0 (inverted dropout).

They are applied inside transformers' GPT2LMHeadModel (float64, eager attention, train mode) by
replacing its nn.Dropout modules: transformer.drop (embd_pdrop, on wte + wpe), every block's
attn.attn_dropout (attn_pdrop, on the softmaxed pattern), attn.resid_dropout and mlp.dropout
(resid_pdrop). Training is lnlens's: per step, micro-batches of 2 sequences, each one's mean
next-token cross-entropy weighted by its share of the step, backward accumulating; the global
gradient norm (float64) clipped to 1; torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, decay 0.01 on
matrices and embeddings); lr per step from the cosine-with-floor formula.

Run from the repository root (CPU, one thread; reruns give the same bytes):

    /tmp/venv-tl/bin/python scripts/reference/make_dropout_fixtures.py
"""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.numpy import save_file as save_numpy
from transformers import GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "Tests" / "Fixtures" / "models" / "tiny-ln"
OUT_DIR = REPO / "Tests" / "Fixtures" / "reference" / "training"

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
DOMAIN = 0x0064726F706F7574  # "dropout"
SITES = {"embedding": 1, "attention": 2, "attention_output": 3, "mlp_output": 4}

SETTINGS = {
    "seed": 7,  # lnlens's --seed: the masks' seed
    "tokens_seed": 303,
    "steps": 4,
    "sequences_per_step": 4,
    "seq_len": 16,
    "micro_batch": 2,
    "rates": {"embd_pdrop": 0.1, "attn_pdrop": 0.2, "resid_pdrop": 0.15},
    "lr": 1e-3,
    "min_lr": 1e-4,
    "warmup": 0,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
}
VOCAB = 50257
WTE_HEAD_ROWS = 64


# ---------------------------------------------------------------------------------------------
# The mask function


def mix_int(z: int) -> int:
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def site_key(seed: int, step: int, micro: int, site: str, layer: int) -> int:
    words = [seed ^ DOMAIN, step, micro, SITES[site], layer]
    k = mix_int(words[0] + GOLDEN)
    for w in words[1:]:
        k = mix_int((k ^ w) + GOLDEN)
    return k


def threshold(p: float) -> int:
    return int(p * 4294967296.0)


def keep_bits(key: int, n: int, p: float) -> np.ndarray:
    """Element i kept iff mix(key + (i+1) G) >> 32 >= floor(p 2^32), for i < n (numpy uint64)."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    z = np.uint64(key) + i * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)) >= np.uint64(threshold(p))


def keep_bits_int(key: int, n: int, p: float) -> list[bool]:
    return [mix_int(key + (i + 1) * GOLDEN) >> 32 >= threshold(p) for i in range(n)]


class Context:
    step = 0
    micro = 0
    calls: dict = {}


class MaskDropout(torch.nn.Module):
    """lnlens's mask at one site of one layer, for the step and micro-batch in `Context`."""

    def __init__(self, site: str, layer: int, p: float):
        super().__init__()
        self.site, self.layer, self.p = site, layer, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Context.calls[(self.site, self.layer)] = Context.calls.get((self.site, self.layer), 0) + 1
        if not self.training or self.p == 0:
            return x
        key = site_key(SETTINGS["seed"], Context.step, Context.micro, self.site, self.layer)
        keep = torch.from_numpy(keep_bits(key, x.numel(), self.p).reshape(x.shape))
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


# ---------------------------------------------------------------------------------------------
# Training


def load_model(rates: dict) -> GPT2LMHeadModel:
    model = GPT2LMHeadModel.from_pretrained(MODEL_DIR, dtype=torch.float32, attn_implementation="eager",
                                            local_files_only=True).to(torch.float64)
    model.transformer.drop = MaskDropout("embedding", 0, rates["embd_pdrop"])
    for l, block in enumerate(model.transformer.h):
        block.attn.attn_dropout = MaskDropout("attention", l, rates["attn_pdrop"])
        block.attn.resid_dropout = MaskDropout("attention_output", l, rates["resid_pdrop"])
        block.mlp.dropout = MaskDropout("mlp_output", l, rates["resid_pdrop"])
    assert model.lm_head.weight is model.transformer.wte.weight
    return model.train()


def named_params(model) -> dict:
    return {n.removeprefix("transformer."): p for n, p in model.named_parameters()}


def lr_at(step: int) -> float:
    s = SETTINGS
    if step < s["warmup"]:
        return s["lr"] * step / max(1, s["warmup"])
    progress = (step - s["warmup"]) / max(1, s["steps"] - s["warmup"])
    r = s["min_lr"] / s["lr"]
    return s["lr"] * max(0.0, 0.5 * (1 + math.cos(math.pi * progress)) * (1 - r) + r)


def micro_loss(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def train(tokens: list, rates: dict) -> dict:
    model = load_model(rates)
    params = named_params(model)
    decayed = [p for n, p in params.items() if p.dim() == 2]
    rest = [p for n, p in params.items() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": SETTINGS["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=SETTINGS["lr"], betas=tuple(SETTINGS["betas"]), eps=SETTINGS["eps"])
    rec = {"loss": [], "micro_losses": [], "grad_norm": [], "lr": [], "after": [], "grad1": None,
           "init": {n: p.detach().clone() for n, p in params.items()}}
    mb = SETTINGS["micro_batch"]
    for step in range(SETTINGS["steps"]):
        seqs = torch.tensor(tokens[step], dtype=torch.long)
        total = len(seqs)
        Context.step = step
        loss, micro = 0.0, []
        for i, start in enumerate(range(0, total, mb)):
            Context.micro = i
            ids = seqs[start:start + mb]
            share = len(ids) / total
            l = micro_loss(model, ids)
            (l * share).backward()
            micro.append(l.item())
            loss += share * l.item()
        if step == 0:
            rec["grad1"] = {n: p.grad.detach().clone() for n, p in params.items()}
        norm = math.sqrt(sum((p.grad.double() ** 2).sum().item() for p in params.values()))
        coef = min(1.0, SETTINGS["max_grad_norm"] / (norm + 1e-6))
        for p in params.values():
            p.grad.mul_(coef)
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        opt.zero_grad()
        rec["loss"].append(loss)
        rec["micro_losses"].append(micro)
        rec["grad_norm"].append(norm)
        rec["lr"].append(lr)
        rec["after"].append({n: p.detach().clone() for n, p in params.items()})
    return rec


def f32(t) -> np.ndarray:
    return np.array(t.detach().to(torch.float32).numpy(), copy=True)


def put(tensors: dict, key: str, name: str, value: torch.Tensor, row_ids: torch.Tensor) -> None:
    if name != "wte.weight":
        tensors[f"{key}.{name}"] = f32(value)
        return
    tensors[f"{key}.{name}.rows"] = f32(value[row_ids])
    tensors[f"{key}.{name}.abs_sum"] = np.array([value.double().abs().sum().item()], dtype=np.float32)


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    s = SETTINGS
    gen = torch.Generator().manual_seed(s["tokens_seed"])
    tokens = torch.randint(0, VOCAB, (s["steps"], s["sequences_per_step"], s["seq_len"]), generator=gen).tolist()

    # The mask: numpy against plain integers, and the keep rate near 1 − p.
    checks = {}
    samples = []
    for site, layer, step, micro, p in [("embedding", 0, 0, 0, 0.1), ("attention", 1, 2, 1, 0.2),
                                        ("attention_output", 0, 3, 0, 0.15), ("mlp_output", 1, 1, 1, 0.15)]:
        key = site_key(s["seed"], step, micro, site, layer)
        bits = keep_bits(key, 4096, p)
        assert bits.tolist() == keep_bits_int(key, 4096, p), site
        samples.append({"site": site, "site_code": SITES[site], "layer": layer, "step": step, "micro_batch": micro,
                        "p": p, "key": str(key), "threshold": threshold(p),
                        "first_64_kept": "".join("1" if b else "0" for b in bits[:64]),
                        "kept_of_4096": int(bits.sum())})
    big = keep_bits(site_key(s["seed"], 0, 0, "attention", 0), 1 << 20, 0.2)
    checks["keep_rate_of_2^20_at_p_0.2"] = float(big.mean())
    assert abs(big.mean() - 0.8) < 0.002

    rec = train(tokens, s["rates"])
    Context.calls.clear()
    Context.step, Context.micro = 0, 0
    ref_model = load_model({k: 0.0 for k in s["rates"]})
    ids0 = torch.tensor(tokens[0][:s["micro_batch"]])
    with torch.no_grad():
        plain = micro_loss(ref_model, ids0).item()
        eval_loss = micro_loss(load_model(s["rates"]).eval(), ids0).item()
    n_layer = ref_model.config.n_layer
    assert Context.calls[("embedding", 0)] == 2 and all(Context.calls[(x, l)] == 2 for x in SITES if x != "embedding"
                                                       for l in range(n_layer)), Context.calls
    checks["step1_micro1_loss_without_dropout"] = plain
    checks["step1_micro1_loss_with_dropout"] = rec["micro_losses"][0][0]
    checks["eval_mode_equals_no_dropout"] = abs(eval_loss - plain) < 1e-12
    assert checks["eval_mode_equals_no_dropout"] and abs(plain - rec["micro_losses"][0][0]) > 1e-3

    ids = sorted(set(range(WTE_HEAD_ROWS)) | {t for st in tokens for sq in st for t in sq} | {VOCAB - 1})
    row_ids = torch.tensor(ids, dtype=torch.long)
    tensors = {"loss": np.array(rec["loss"], dtype=np.float64).astype(np.float32),
               "wte.row_ids": row_ids.to(torch.float32).numpy()}
    for name, g in rec["grad1"].items():
        put(tensors, "grad1", name, g, row_ids)
    for k, after in enumerate(rec["after"], start=1):
        for name, value in after.items():
            put(tensors, f"after{k}", name, value, row_ids)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_numpy(tensors, str(OUT_DIR / "dropout.safetensors"))
    manifest = {
        "generator": {"script": "scripts/reference/make_dropout_fixtures.py", "torch": torch.__version__,
                      "transformers": transformers.__version__, "numpy": np.__version__, "threads": 1},
        "model": "Tests/Fixtures/models/tiny-ln (float16 on disk), float64, eager attention, train mode, "
                 "nn.Dropout modules replaced by lnlens's masks",
        "settings": s,
        "tokens": tokens,
        "lr_used": rec["lr"],
        "loss": rec["loss"],
        "micro_batch_losses": rec["micro_losses"],
        "grad_norm_before_clipping": rec["grad_norm"],
        "parameter_names": list(rec["init"]),
        "wte_row_ids": ids,
        "mask_samples": samples,
        "self_checks": checks,
        "keys": "loss [steps]; grad1.<name> = the first step's accumulated gradient before clipping; "
                "after<k>.<name> = the parameters after step k; wte as .rows (wte_row_ids) and .abs_sum",
    }
    (OUT_DIR / "dropout.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print("loss", rec["loss"], "grad norm", rec["grad_norm"])
    print("checks", json.dumps(checks))


if __name__ == "__main__":
    main()
