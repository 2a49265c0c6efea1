#!/usr/bin/env python3
"""Write lnlens's data files from Hugging Face datasets (dev-only: needs the network; never run by
CI or the tests).

    python3 -m venv /tmp/venv-data && /tmp/venv-data/bin/pip install numpy datasets tiktoken "transformers<4.57" tqdm
    /tmp/venv-data/bin/python scripts/data/prepare_datasets.py openwebtext --out data/openwebtext
    /tmp/venv-data/bin/python scripts/data/prepare_datasets.py pile --out data/pile-dla.jsonl --rows 1000

openwebtext: nanoGPT's data/openwebtext/prepare.py. The `openwebtext` dataset split into train and
  val (test_size=0.0005, seed=2357, shuffle=True); each document encoded with tiktoken's gpt2
  `encode_ordinary` and followed by <|endoftext|> (50256); all ids end to end as uint16 in
  OUT/train.bin and OUT/val.bin (np.memmap, written in 1024 batches). For `lnlens train|remove-ln
  --tokens OUT/train.bin` and `lnlens eval --tokens OUT/val.bin` (about 17 GB and 8.5 MB, 9.0 B
  and 4.4 M tokens). `--limit N` keeps the first N documents (a small trial); `--tokenizer hf`
  encodes with transformers' GPT2TokenizerFast built from models/tokenizer instead (no download;
  the same ids for ordinary text, but a literal "<|endoftext|>" in a document becomes the token).

pile: the rows the paper's DLA reads (companion code mech_interp/load_dataset.py, `luca-pile`):
  load_dataset("lucabaroni/apollo-pile-filtered-10k", streaming=True, split="train")
  .shuffle(seed=42).take(ROWS), written to OUT as JSON Lines, one row per line, its `input_ids`
  as stored (GPT-2 ids, 1,024 per row) and its `text` when the dataset has one. For
  `lnlens dla --dataset OUT --field input_ids --context 512 --rows 1000`.

`--source NAME` reads another dataset (with `--data-files F` a local one, e.g. `--source json
--data-files rows.jsonl`); `--field` names the text column (default text).
"""
import argparse
import json
import os

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EOT = 50256


def encoder(kind):
    """A function text -> GPT-2 ids."""
    if kind == "tiktoken":
        import tiktoken
        enc = tiktoken.get_encoding("gpt2")
        return enc.encode_ordinary
    from transformers import GPT2TokenizerFast
    tok = GPT2TokenizerFast(vocab_file=os.path.join(ROOT, "models/tokenizer/vocab.json"),
                            merges_file=os.path.join(ROOT, "models/tokenizer/merges.txt"))
    return lambda text: tok.encode(text)


def load(args, **kwargs):
    from datasets import load_dataset
    if args.data_files:
        kwargs["data_files"] = args.data_files
    return load_dataset(args.source, **kwargs)


def write_bin(dataset, path, field):
    """All `ids` of `dataset` end to end as uint16, as nanoGPT's prepare.py writes them."""
    total = int(np.sum(dataset["len"], dtype=np.uint64))
    arr = np.memmap(path, dtype=np.uint16, mode="w+", shape=(total,))
    shards = min(1024, len(dataset))
    index = 0
    for i in range(shards):
        batch = dataset.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
        ids = np.concatenate(batch["ids"]) if len(batch) else np.zeros(0, dtype=np.uint16)
        arr[index:index + len(ids)] = ids
        index += len(ids)
    arr.flush()
    print(f"{path}: {total:,} tokens, {len(dataset):,} documents")


def openwebtext(args):
    dataset = load(args, num_proc=args.num_proc)["train"]
    if args.limit:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    split = dataset.train_test_split(test_size=0.0005, seed=2357, shuffle=True)
    split["val"] = split.pop("test")
    encode = encoder(args.tokenizer)

    def process(example):
        ids = encode(example[args.field])
        ids.append(EOT)
        return {"ids": ids, "len": len(ids)}

    tokenized = split.map(process, remove_columns=split["train"].column_names, num_proc=args.num_proc,
                          desc="tokenizing")
    os.makedirs(args.out, exist_ok=True)
    for name, part in tokenized.items():
        write_bin(part, os.path.join(args.out, f"{name}.bin"), args.field)


def pile(args):
    dataset = load(args, streaming=True, split="train").shuffle(seed=args.seed).take(args.rows)
    directory = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(directory, exist_ok=True)
    n = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for row in dataset:
            out = {}
            if "input_ids" in row:
                out["input_ids"] = [int(t) for t in row["input_ids"]]
            if args.field in row:
                out["text"] = row[args.field]
            if not out:
                raise SystemExit(f"row {n}: neither input_ids nor {args.field!r} (its keys: {sorted(row)})")
            f.write(json.dumps(out, ensure_ascii=False) + "\n")
            n += 1
    print(f"{args.out}: {n} rows")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["openwebtext", "pile"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--source", help="dataset name (default: openwebtext / lucabaroni/apollo-pile-filtered-10k)")
    parser.add_argument("--data-files", help="local files for --source json|text|parquet")
    parser.add_argument("--field", default="text")
    parser.add_argument("--rows", type=int, default=1000, help="pile: rows taken (the paper: 1000)")
    parser.add_argument("--seed", type=int, default=42, help="pile: the shuffle's seed (the companion's: 42)")
    parser.add_argument("--limit", type=int, help="openwebtext: keep only the first N documents")
    parser.add_argument("--num-proc", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--tokenizer", choices=["tiktoken", "hf"], default="tiktoken")
    args = parser.parse_args()
    args.source = args.source or ("openwebtext" if args.what == "openwebtext" else "lucabaroni/apollo-pile-filtered-10k")
    openwebtext(args) if args.what == "openwebtext" else pile(args)


if __name__ == "__main__":
    main()
