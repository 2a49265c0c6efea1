#!/usr/bin/env python3
"""Write the data-reader fixtures of Tests/Fixtures/data/ (token files, JSON Lines datasets).

Run by hand (never in CI), from the repository root, offline:

    python3 -m venv /tmp/venv-data && /tmp/venv-data/bin/pip install numpy "transformers<4.57"
    /tmp/venv-data/bin/python scripts/reference/make_data_fixtures.py

Documents: the paragraphs of scripts/reference/prose.py (Pride and Prejudice, chapter 1), an
empty one and one with non-ASCII text. Tokenized by transformers' GPT2TokenizerFast built from
models/tokenizer/vocab.json + merges.txt (the ids tiktoken's gpt2 gives for ordinary text).

Outputs (Tests/Fixtures/data/):
  stream.u16.bin, stream.u32.bin   nanoGPT's layout: every document's ids then 50256, end to end,
                                   written through np.memmap as nanoGPT's data/openwebtext/prepare.py
  stream.<u2|u4|i4|i8>.v<1|2|3>.npy  the same ids, np.lib.format.write_array(version=(v, 0))
  docs.jsonl                       one row per document: {"text": ..., "id": i}
  ids.jsonl                        the same documents pre-tokenized: {"input_ids": [...]}
  expected.json                    {"eot", "documents": [[ids]], "stream": [ids],
                                    "windows": {"W": {"tokens", "windows", "short_documents", "dropped"}},
                                    "dla": {"C": {"windows": [[ids]], "skipped_lines": [line]}},
                                    "out_of_range": {"offset", "value"}}
  bad/                             numpy files lnlens must refuse: fortran.npy (Fortran order,
                                   2-D), c2d.npy (2-D), float.npy ('<f4'), bigendian.npy ('>u2'),
                                   scalar.npy (shape ()), truncated.npy (a valid file cut short),
                                   odd.bin (7 bytes of u16), out_of_range.bin (an id of 50257)

The window rules computed here are the ones lnlens documents (Training/DocumentCut.swift and
Analysis/TextPrompts.swift `firstTokens`), written independently: each document + EOS cut into
windows of W from its start, the tail after the last whole window and documents shorter than W
dropped; DLA rows keep their first C tokens, rows shorter than C skipped.
"""
import json
import os
import sys

import numpy as np
from transformers import GPT2TokenizerFast

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
from prose import PRIDE_AND_PREJUDICE  # noqa: E402

OUT = os.path.join(ROOT, "Tests", "Fixtures", "data")
EOT = 50256
WINDOWS = [8, 16, 32]
DLA_CONTEXTS = [8, 16]


def documents():
    paragraphs = [p.replace("\n", " ").strip() for p in PRIDE_AND_PREJUDICE.split("\n\n") if p.strip()]
    return paragraphs[:13] + ["", "Café naïve — 東京 😀, a “quoted” line.\tTabbed."]


def cut(docs, window):
    """Each document + EOS cut into windows from its start; tails and short documents dropped."""
    tokens, windows, short, dropped = [], 0, 0, 0
    for ids in docs:
        ids = ids + [EOT]
        whole = len(ids) // window
        windows += whole
        dropped += len(ids) - whole * window
        short += whole == 0
        tokens += ids[: whole * window]
    return {"tokens": tokens, "windows": windows, "short_documents": short, "dropped": dropped}


def first_tokens(docs, context):
    kept, skipped = [], []
    for line, ids in enumerate(docs, start=1):
        if len(ids) >= context:
            kept.append(ids[:context])
        else:
            skipped.append(line)
    return {"windows": kept, "skipped_lines": skipped}


def write_memmap(path, ids, dtype):
    # As nanoGPT's prepare.py: np.memmap(filename, dtype=dtype, mode='w+', shape=(arr_len,)).
    arr = np.memmap(path, dtype=dtype, mode="w+", shape=(len(ids),))
    arr[:] = np.array(ids, dtype=dtype)
    arr.flush()
    del arr


def write_bad(stream):
    bad = os.path.join(OUT, "bad")
    os.makedirs(bad, exist_ok=True)
    np.save(os.path.join(bad, "fortran.npy"), np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3)))
    np.save(os.path.join(bad, "c2d.npy"), np.arange(6, dtype=np.uint16).reshape(2, 3))
    np.save(os.path.join(bad, "float.npy"), np.array(stream[:10], dtype=np.float32))
    np.save(os.path.join(bad, "bigendian.npy"), np.array(stream[:10], dtype=">u2"))
    np.save(os.path.join(bad, "scalar.npy"), np.uint16(5))
    with open(os.path.join(OUT, "stream.u2.v1.npy"), "rb") as f:
        whole = f.read()
    with open(os.path.join(bad, "truncated.npy"), "wb") as f:
        f.write(whole[:-3])
    with open(os.path.join(bad, "odd.bin"), "wb") as f:
        f.write(np.array([1, 2, 3], dtype="<u2").tobytes() + b"\x04")
    ids = list(stream[:20])
    ids[5] = 50257
    write_memmap(os.path.join(bad, "out_of_range.bin"), ids, np.uint16)
    return {"offset": 5, "value": 50257}


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = GPT2TokenizerFast(vocab_file=os.path.join(ROOT, "models/tokenizer/vocab.json"),
                            merges_file=os.path.join(ROOT, "models/tokenizer/merges.txt"))
    docs = documents()
    ids = [tok.encode(d) for d in docs]
    assert all(t < EOT for d in ids for t in d)
    stream = [t for d in ids for t in d + [EOT]]
    write_memmap(os.path.join(OUT, "stream.u16.bin"), stream, np.uint16)
    write_memmap(os.path.join(OUT, "stream.u32.bin"), stream, np.uint32)
    for descr in ["<u2", "<u4", "<i4", "<i8"]:
        for version in [1, 2, 3]:
            name = f"stream.{descr[1:]}.v{version}.npy"
            with open(os.path.join(OUT, name), "wb") as f:
                np.lib.format.write_array(f, np.array(stream, dtype=descr), version=(version, 0))
            assert np.load(os.path.join(OUT, name)).tolist() == stream
    with open(os.path.join(OUT, "docs.jsonl"), "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"text": d, "id": i}, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "ids.jsonl"), "w", encoding="utf-8") as f:
        for d in ids:
            f.write(json.dumps({"input_ids": d}) + "\n")
    expected = {
        "eot": EOT, "documents": ids, "stream": stream,
        "windows": {str(w): cut(ids, w) for w in WINDOWS},
        "dla": {str(c): first_tokens(ids, c) for c in DLA_CONTEXTS},
        "out_of_range": write_bad(stream),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(docs)} documents, {len(stream)} tokens; windows: "
          + ", ".join(f"{w}: {expected['windows'][str(w)]['windows']}" for w in WINDOWS))


if __name__ == "__main__":
    main()
