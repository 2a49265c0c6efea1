#!/usr/bin/env python3
"""Times PyTorch (CPU) GPT-2 training steps, for comparison with lnlens's training bench.

One optimizer step = forward with labels (mean next-token CE), backward, clip_grad_norm_(1.0),
AdamW step (Trainer's decay groups, weight_decay 0.01), zero_grad. float32, dropout off, randomly
initialised model (transformers' own init, seeded), random token ids. One warm-up step, then
--steps measured steps; prints one JSON object.

    /tmp/venv/bin/python scripts/reference/time_torch_training.py --shape tiny --batch 8 --seq-len 128
    /tmp/venv/bin/python scripts/reference/time_torch_training.py --shape small --batch 4 --seq-len 128

Shapes (vocab 50257, tied embeddings): tiny = n_layer 4, n_embd 64, n_head 4, n_ctx 256 (the
shape of models/gpt2-tiny); small = GPT-2 small, n_layer 12, n_embd 768, n_head 12, n_ctx 1024.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.trainer_pt_utils import get_parameter_names

SHAPES = {
    "tiny": {"n_layer": 4, "n_embd": 64, "n_head": 4, "n_positions": 256},
    "small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--batch", type=int, required=True, help="sequences per optimizer step")
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="measured steps (after 1 warm-up step)")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="sdpa",
                    help="transformers attention implementation (default sdpa, transformers' default)")
    ap.add_argument("--fused", action="store_true",
                    help="fused AdamW (Trainer's default optim with torch >= 2.8)")
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    assert args.seq_len <= shape["n_positions"], "seq-len exceeds n_ctx"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = GPT2Config(vocab_size=50257, n_ctx=shape["n_positions"], activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, **shape)
    model = GPT2LMHeadModel._from_config(config, attn_implementation=args.attn).float()
    model.train()  # as Trainer; every dropout probability is 0
    n_params = sum(p.numel() for p in model.parameters())
    decay = {n for n in get_parameter_names(model, [torch.nn.LayerNorm]) if "bias" not in n}
    named = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for n, p in named if n in decay], "weight_decay": 0.01},
         {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}],
        lr=6e-4, betas=(0.9, 0.999), eps=1e-8, **({"fused": True} if args.fused else {}))
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 50257, (args.batch, args.seq_len), generator=gen) for _ in range(args.steps + 1)]

    def step(ids: torch.Tensor) -> float:
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()

    step(batches[0])  # warm-up
    times, losses = [], []
    for ids in batches[1:]:
        t0 = time.perf_counter()
        losses.append(step(ids))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({
        "shape": args.shape, **shape, "vocab": 50257, "params": n_params,
        "batch": args.batch, "seq_len": args.seq_len, "threads": args.threads,
        "attn": args.attn, "optimizer": "AdamW fused" if args.fused else "AdamW (single-tensor)",
        "steps_measured": args.steps,
        "median_s_per_step": round(median, 4),
        "min_s_per_step": round(min(times), 4),
        "tokens_per_s": round(args.batch * args.seq_len / median, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "last_loss": round(losses[-1], 4),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
    }))


if __name__ == "__main__":
    main()
