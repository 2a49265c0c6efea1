#!/usr/bin/env python3
"""Rebuild GPT-2's vocab.json and merges.txt from the tiktoken rank file.

The ranks ship inside the openai-whisper source distribution on PyPI:

    pip download --no-deps openai-whisper -d /tmp/whisper
    python3 scripts/tokenizer/rebuild_gpt2_tokenizer.py /tmp/whisper/openai_whisper-*.tar.gz models/tokenizer

Each line of whisper/assets/gpt2.tiktoken is `base64(token bytes) rank`; ranks are GPT-2 token ids
0..50255 and `<|endoftext|>` is 50256. Merge order is rank order: the merge that creates the token of
rank r is found by running byte-pair encoding on its bytes with only the ranks below r, which must
leave exactly two parts (this is how tiktoken itself converts GPT-2's files, run backwards).
"""
import base64
import json
import sys
import tarfile


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_split(token: bytes, ranks: dict, max_rank: int):
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return parts
        i = best[1]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]


def read_ranks(sdist):
    """token bytes -> rank, from whisper/assets/gpt2.tiktoken inside the openai-whisper sdist."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken"))
        text = tar.extractfile(member).read().decode()
    ranks = {}
    for line in text.splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def main():
    sdist, out_dir = sys.argv[1], sys.argv[2]
    ranks = read_ranks(sdist)
    assert sorted(ranks.values()) == list(range(len(ranks))), "ranks must be 0..N-1"
    b2u = bytes_to_unicode()
    as_unicode = lambda bs: "".join(b2u[b] for b in bs)
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    vocab = {as_unicode(tok): rank for tok, rank in by_rank}
    vocab["<|endoftext|>"] = len(ranks)
    merges = []
    for tok, rank in by_rank:
        if len(tok) < 2:
            continue
        parts = bpe_split(tok, ranks, rank)
        assert len(parts) == 2, f"token {tok!r} (rank {rank}) does not split into two parts: {parts}"
        merges.append(f"{as_unicode(parts[0])} {as_unicode(parts[1])}")
    import os
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {out_dir}")


if __name__ == "__main__":
    main()
