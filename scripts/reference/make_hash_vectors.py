#!/usr/bin/env python3
"""Reference vectors for lnlens's two hashes (Sources/Support/Hashing.swift).

Writes Tests/Fixtures/reference/hashing/vectors.json. Run by hand from the repository root:

    python3 -m venv /tmp/hashvenv && /tmp/hashvenv/bin/pip install xxhash
    /tmp/hashvenv/bin/python scripts/reference/make_hash_vectors.py

XXH64 comes from the `xxhash` package (python-xxhash 4.1.0 wrapping the reference C library,
xxHash 0.8.4); SHA-256 from Python's hashlib (OpenSSL). The inputs are the first n bytes of a
fixed pseudo-random stream (bytes i*31+7 mod 251, no zero bias) for every n from 0 to 300 --
which covers each tail branch of XXH64 (8-, 4- and 1-byte steps after 0..n 32-byte stripes) and
SHA-256's padding around the 55/56/64-byte block boundary -- plus a few long lengths, each with
seed 0 and with a 64-bit seed whose top bit is set. The NIST FIPS 180-4 example vectors for
SHA-256 are checked in the Swift test as published, not taken from here.
"""
import hashlib
import json
import os

import xxhash

SEEDS = [0, 0x9E3779B97F4A7C15]
LENGTHS = list(range(0, 301)) + [511, 512, 513, 1000, 4096 + 17, 100_003]


def stream(n):
    return bytes((i * 31 + 7) % 251 for i in range(n))


def main():
    out = {
        "generator": "bytes((i * 31 + 7) % 251 for i in range(n))",
        "xxhash_version": xxhash.XXHASH_VERSION,
        "python_xxhash_version": xxhash.VERSION,
        "xxh64": [],
        "sha256": [],
    }
    for n in LENGTHS:
        data = stream(n)
        for seed in SEEDS:
            out["xxh64"].append([n, str(seed), xxhash.xxh64(data, seed=seed).hexdigest()])
        out["sha256"].append([n, hashlib.sha256(data).hexdigest()])
    folder = os.path.join("Tests", "Fixtures", "reference", "hashing")
    os.makedirs(folder, exist_ok=True)
    # One vector a line: [length, seed (decimal string: above 2^53), hex] and [length, hex].
    lines = ["{"]
    for key in ["generator", "xxhash_version", "python_xxhash_version"]:
        lines.append(f" {json.dumps(key)}: {json.dumps(out[key])},")
    for key, last in [("xxh64", False), ("sha256", True)]:
        lines.append(f" {json.dumps(key)}: [")
        lines += [" " + json.dumps(v) + ("," if i + 1 < len(out[key]) else "") for i, v in enumerate(out[key])]
        lines.append(" ]" + ("" if last else ","))
    lines.append("}")
    with open(os.path.join(folder, "vectors.json"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(out['xxh64'])} XXH64 and {len(out['sha256'])} SHA-256 vectors")


if __name__ == "__main__":
    main()
