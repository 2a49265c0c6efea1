#!/usr/bin/env python3
"""Writes a GPT-2 XL-shaped checkpoint with random weights, for memory and timing checks (issue 7).

What it writes, into OUT (default /tmp/xl/gpt2-xl-shape):
  config.json        like gpt2-xl: n_embd 1600, n_layer 48, n_head 25, n_positions 1024,
                     vocab_size 50257, layer_norm_epsilon 1e-5, gelu_new, tied embeddings
  model.safetensors  F32, Hugging Face names (transformer.wte.weight,
                     transformer.h.N.attn.c_attn.weight [1600, 4800], ...; Conv1D weights [in, out];
                     no lm_head: tied), ~6.2 GB (1.56e9 parameters). Weights N(0, 0.02), c_proj
                     weights N(0, 0.02/sqrt(2*48)), LayerNorm weights 1, biases 0.
  vocab.json, merges.txt   copied from models/tokenizer/ of the repository

The safetensors file is written streaming, header first and then one tensor at a time (at most
one tensor, ~330 MB for wte, in memory), so it needs only numpy. Not committed output; ~1 min.

Run from the repository root, with any Python that has numpy (e.g. a venv):

    python3 scripts/reference/make_xl_shape.py [OUT] [--seed N]
    LNLENS_HOME=$PWD lnlens inspect /tmp/xl/gpt2-xl-shape
"""
import argparse
import json
import math
import os
import shutil
import struct

import numpy as np

N_EMBD, N_LAYER, N_HEAD, N_CTX, VOCAB = 1600, 48, 25, 1024, 50257


def tensor_list():
    """(name, shape, kind) in the order the data is written; kind: normal, proj, one, zero."""
    d, m = N_EMBD, 4 * N_EMBD
    out = [("transformer.wte.weight", [VOCAB, d], "normal"), ("transformer.wpe.weight", [N_CTX, d], "normal")]
    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        out += [
            (p + "ln_1.weight", [d], "one"), (p + "ln_1.bias", [d], "zero"),
            (p + "attn.c_attn.weight", [d, 3 * d], "normal"), (p + "attn.c_attn.bias", [3 * d], "zero"),
            (p + "attn.c_proj.weight", [d, d], "proj"), (p + "attn.c_proj.bias", [d], "zero"),
            (p + "ln_2.weight", [d], "one"), (p + "ln_2.bias", [d], "zero"),
            (p + "mlp.c_fc.weight", [d, m], "normal"), (p + "mlp.c_fc.bias", [m], "zero"),
            (p + "mlp.c_proj.weight", [m, d], "proj"), (p + "mlp.c_proj.bias", [d], "zero"),
        ]
    out += [("transformer.ln_f.weight", [d], "one"), ("transformer.ln_f.bias", [d], "zero")]
    return out


def config():
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": N_CTX, "n_embd": N_EMBD,
        "n_head": N_HEAD, "n_inner": None, "n_layer": N_LAYER, "n_positions": N_CTX,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True, "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "tie_word_embeddings": True, "use_cache": True, "vocab_size": VOCAB,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="/tmp/xl/gpt2-xl-shape")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config(), f, indent=2)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(repo, "models", "tokenizer", name), os.path.join(args.out, name))

    tensors = tensor_list()
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data section 8-byte aligned, as the reference writer pads

    rng = np.random.default_rng(args.seed)
    proj_std = 0.02 / math.sqrt(2 * N_LAYER)
    path = os.path.join(args.out, "model.safetensors")
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, kind in tensors:
            if kind == "one":
                a = np.ones(shape, dtype="<f4")
            elif kind == "zero":
                a = np.zeros(shape, dtype="<f4")
            else:
                a = rng.standard_normal(shape, dtype=np.float32)
                a *= 0.02 if kind == "normal" else proj_std
                a = a.astype("<f4", copy=False)
            f.write(a.tobytes(order="C"))
            del a
    os.replace(tmp, path)
    print(f"{path}: {len(tensors)} tensors, {offset / 4:.0f} parameters, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
