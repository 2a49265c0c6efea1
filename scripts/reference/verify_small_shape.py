#!/usr/bin/env python3
"""Checks lnlens against transformers and TransformerLens on GPT-2-small-shaped checkpoints.

Run by hand (never in CI), after
    /tmp/refvenv/bin/python scripts/reference/make_models_and_fixtures.py --small-shape /tmp/small-shape
    swift build -c release --product lnlens
with
    /tmp/refvenv/bin/python scripts/reference/verify_small_shape.py /tmp/small-shape [.build/release/lnlens]

For each model: `lnlens run --json` must give transformers' tokens and top-5 ids and probabilities
to 1e-4 (processing off, so logits too), and `lnlens run --cache … --hooks all` (default processing)
must give every TransformerLens hook to 1e-4 (relative for the LN-free 1e6 / 1e-6 scale hooks).

With --grads (gradients; see README "Gradients"), for the prompt of reference.json with answer
" Mary" and wrong " John", instead:
    lnlens run MODEL --prompt TEXT --metric logit-diff --answer " Mary" --wrong " John" \\
        --grad-cache FILE --hooks all                       # vs TL hook grads, processed
    lnlens run MODEL --prompt TEXT --metric loss --no-process --param-grads FILE
    lnlens run MODEL --prompt TEXT --metric logit-diff --answer " Mary" --wrong " John" \\
        --no-process --param-grads FILE                     # vs transformers autograd
Every reference tensor passes if max |diff| <= 1e-4 * max(1, max |reference|). The references are
computed here (TransformerLens 2.16.1 and transformers, float32, CPU), and cross-checked first
(TL resid_pre gradients against transformers' hidden-state gradients, TL loss against HF loss).
`--self-test` writes the three files from an independent Python path instead of running lnlens
(hook gradients by torch.autograd.grad of each hook's output, no TL backward hooks; parameter
gradients from TL's unprocessed model mapped back to the checkpoint's names), to test the
comparison itself:
    /tmp/refvenv/bin/python scripts/reference/verify_small_shape.py /tmp/small-shape --grads --self-test
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

GRAD_RTOL = 1e-4  # max |diff| <= GRAD_RTOL * max(1, max |reference|), per tensor


def verify_forward(root: str, binary: str) -> bool:
    ref = json.load(open(f"{root}/reference.json"))
    ok = True
    for name, info in ref["models"].items():
        out = json.loads(subprocess.check_output(
            [binary, "run", info["path"], "--prompt", ref["prompt"], "--top-k", "5", "--json", "--no-process"]))
        assert out["tokens"] == ref["tokens"], f"{name}: tokens {out['tokens']} != {ref['tokens']}"
        for got, exp in zip(out["top"], info["top5"]):
            dp, dl = abs(got["prob"] - exp["prob"]), abs(got["logit"] - exp["logit"])
            print(f"{name}: top id {got['id']} vs {exp['id']}  |dprob| {dp:.2e}  |dlogit| {dl:.2e}")
            ok &= got["id"] == exp["id"] and dp <= 1e-4 and dl <= 1e-4
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/cache.safetensors"
            subprocess.check_call([binary, "run", info["path"], "--prompt", ref["prompt"], "--cache", path,
                                   "--hooks", "all"], stdout=subprocess.DEVNULL)
            mine = load_file(path)
        theirs = load_file(f"{root}/{name}.tl_hooks.safetensors")
        worst = (0.0, None)
        for key, exp in theirs.items():
            if key not in mine:
                continue
            got = mine[key].reshape(exp.shape)
            finite = np.isfinite(exp)
            assert (np.isfinite(got) == finite).all(), f"{name} {key}: -inf positions differ"
            m = float(np.abs(exp[finite]).max()) if finite.any() else 0.0
            diff = float(np.abs(got[finite] - exp[finite]).max()) if finite.any() else 0.0
            tol = 1e-4 * m if m < 1e-2 else (1e-6 * m if m > 100 else 1e-4)
            if diff > tol:
                print(f"  FAIL {name} {key}: max |diff| {diff:.3e} > {tol:.1e}")
                ok = False
            if diff > worst[0]:
                worst = (diff, key)
        compared = sum(1 for k in theirs if k in mine)
        print(f"{name}: {compared}/{len(theirs)} TL hooks compared, largest |diff| {worst[0]:.3e} at {worst[1]}")
        ok &= compared >= len(theirs) - 1  # TL's cache may hold hooks lnlens names differently; report them
        missing = [k for k in theirs if k not in mine]
        if missing:
            print(f"  not in lnlens cache: {missing[:10]}")
    return ok


# ---------------------------------------------------------------------------------------------
# --grads


def compare_tensors(label: str, reference: dict, mine: dict) -> bool:
    """Every reference tensor must be in `mine` with the same shape and within the tolerance."""
    ok = True
    failures, worst = 0, (0.0, None)
    for key, exp in reference.items():
        got = mine.get(key)
        if got is None:
            print(f"  FAIL {label} {key}: missing from the lnlens file")
            ok, failures = False, failures + 1
            continue
        if got.shape != exp.shape:
            print(f"  FAIL {label} {key}: shape {list(got.shape)} != {list(exp.shape)}")
            ok, failures = False, failures + 1
            continue
        diff = float(np.abs(got.astype(np.float64) - exp.astype(np.float64)).max())
        m = float(np.abs(exp).max())
        tol = GRAD_RTOL * max(1.0, m)
        passed = bool(np.isfinite(got).all()) and diff <= tol
        print(f"  {'pass' if passed else 'FAIL'} {label} {key}: max |diff| {diff:.3e}  (max |g| {m:.3e}, tol {tol:.1e})")
        ok &= passed
        failures += not passed
        if diff > worst[0]:
            worst = (diff, key)
    extra = sorted(set(mine) - set(reference))
    print(f"{label}: {len(reference) - failures}/{len(reference)} tensors pass; largest |diff| {worst[0]:.3e} at "
          f"{worst[1]}" + (f"; {len(extra)} extra keys in the lnlens file (ignored): {extra[:5]}" if extra else ""))
    return ok


def verify_grads(root: str, binary: str, answer_text: str, wrong_text: str, self_test: bool, keep: Path | None) -> bool:
    import torch
    from transformers import GPT2TokenizerFast

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_models_and_fixtures as ref_impl  # noqa: E402  (sets the offline environment first)

    ref = json.load(open(f"{root}/reference.json"))
    ok = True
    for name, info in ref["models"].items():
        folder = Path(info["path"])
        tokenizer = GPT2TokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
        ids = tokenizer(ref["prompt"])["input_ids"]
        assert ids == ref["tokens"], f"{name}: tokens {ids} != reference.json {ref['tokens']}"
        answer_ids, wrong_ids = tokenizer(answer_text)["input_ids"], tokenizer(wrong_text)["input_ids"]
        assert len(answer_ids) == 1 and len(wrong_ids) == 1, "answer and wrong must be single tokens"
        tokens = torch.tensor([ids], dtype=torch.long)
        answer, wrong = torch.tensor(answer_ids), torch.tensor(wrong_ids)
        hf_model = ref_impl.load_checkpoint(folder)
        processed = ref_impl.load_tl(hf_model, processed=True)
        print(f"{name}: {len(ids)} tokens, answer {answer_ids[0]} {answer_text!r}, wrong {wrong_ids[0]} {wrong_text!r}")

        # references
        run = ref_impl.tl_gradient_run(processed, tokens, "logit_diff", answer, wrong)
        hook_ref = {f"{h}_grad": ref_impl.numpy_f32(g) for h, g in run["grads"].items() if g is not None}
        param_ref, hf_runs = {}, {}
        for metric in ("loss", "logit_diff"):
            hf_runs[metric] = ref_impl.hf_gradient_run(hf_model, tokens, metric, answer,
                                                       wrong if metric == "logit_diff" else None)
            param_ref[metric] = {k: ref_impl.numpy_f32(v) for k, v in
                                 ref_impl.hf_param_grads_by_checkpoint_name(hf_model, folder).items()}

        # cross-checks of the references: resid grads are processing-invariant for logit-diff
        n = processed.cfg.n_layers
        resid = max(ref_impl.rel_diff(run["grads"][f"blocks.{i}.hook_resid_pre"], hf_runs["logit_diff"]["hidden_grads"][i])
                    for i in range(n))
        metric_diff = abs(float(run["total"]) - float(hf_runs["logit_diff"]["total"]))
        with torch.no_grad():
            tl_loss = float(processed(tokens, return_type="loss"))
        loss_diff = abs(tl_loss - float(hf_runs["loss"]["total"]))
        print(f"  reference cross-checks: TL resid_pre grads vs HF hidden-state grads max rel {resid:.2e}; "
              f"logit diff TL {float(run['total']):.6f} vs HF {float(hf_runs['logit_diff']['total']):.6f} "
              f"(|diff| {metric_diff:.2e}); loss TL {tl_loss:.6f} vs HF {float(hf_runs['loss']['total']):.6f} "
              f"(|diff| {loss_diff:.2e})")
        if resid > 1e-4 or metric_diff > 1e-3 or loss_diff > 1e-4:
            print("  FAIL: the references disagree with each other")
            ok = False

        with tempfile.TemporaryDirectory() as tmp:
            out = keep / name if keep else Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            files = {"hooks": out / "grad_cache.safetensors", "loss": out / "param_grads.loss.safetensors",
                     "logit_diff": out / "param_grads.logit_diff.safetensors"}
            pair = ["--answer", answer_text, "--wrong", wrong_text]
            commands = {
                "hooks": ["--metric", "logit-diff", *pair, "--grad-cache", str(files["hooks"]), "--hooks", "all"],
                "loss": ["--metric", "loss", "--no-process", "--param-grads", str(files["loss"])],
                "logit_diff": ["--metric", "logit-diff", *pair, "--no-process", "--param-grads", str(files["logit_diff"])],
            }
            if self_test:
                write_self_test_files(ref_impl, hf_model, processed, folder, tokens, answer, wrong, files)
            else:
                for what, args in commands.items():
                    cmd = [binary, "run", str(folder), "--prompt", ref["prompt"], *args]
                    print("  $ " + " ".join(repr(a) if " " in a else a for a in cmd))
                    subprocess.check_call(cmd, stdout=subprocess.DEVNULL)
            ok &= compare_tensors(f"{name} hook grads (logit-diff, processed)", hook_ref, load_file(str(files["hooks"])))
            for metric in ("loss", "logit_diff"):
                ok &= compare_tensors(f"{name} param grads ({metric})", param_ref[metric],
                                      load_file(str(files[metric])))
    return ok


def write_self_test_files(ref_impl, hf_model, processed, folder: Path, tokens, answer, wrong, files: dict) -> None:
    """The three files lnlens would write, from an independent path (not the references' code path)."""
    _, summed, _ = ref_impl.hook_grads_by_autograd(processed, tokens, "logit_diff", answer, wrong)
    save_file({f"{h}_grad": ref_impl.numpy_f32(g) for h, g in summed.items() if g is not None}, str(files["hooks"]))
    unprocessed = ref_impl.load_tl(hf_model, processed=False)
    stored = set(ref_impl.checkpoint_tensor_names(folder))
    for metric in ("loss", "logit_diff"):
        ref_impl.tl_gradient_run(unprocessed, tokens, metric, answer, wrong if metric == "logit_diff" else None)
        grads = ref_impl.tl_param_grads_as_hf(unprocessed)
        named = {(k if k in stored else k.removeprefix("transformer.")): ref_impl.numpy_f32(v) for k, v in grads.items()}
        save_file(named, str(files[metric]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the --small-shape output folder (with reference.json)")
    parser.add_argument("binary", nargs="?", default=".build/release/lnlens")
    parser.add_argument("--grads", action="store_true", help="check gradients instead of the forward pass")
    parser.add_argument("--self-test", action="store_true",
                        help="with --grads: write the lnlens files from an independent Python path (no lnlens)")
    parser.add_argument("--answer", default=" Mary")
    parser.add_argument("--wrong", default=" John")
    parser.add_argument("--keep", type=Path, help="with --grads: keep the compared files in this folder")
    args = parser.parse_args()
    if args.self_test and not args.grads:
        parser.error("--self-test needs --grads")
    if args.grads:
        ok = verify_grads(args.root, args.binary, args.answer, args.wrong, args.self_test, args.keep)
    else:
        ok = verify_forward(args.root, args.binary)
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
