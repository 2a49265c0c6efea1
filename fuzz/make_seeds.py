#!/usr/bin/env python3
"""Writes the fuzz seed corpora under fuzz/corpus/ from the test fixtures (standard library only).

    python3 fuzz/make_seeds.py        # from the repository root; reruns are byte-identical

Seeds are kept small so that executions stay fast: the checkpoints' headers with every tensor
shrunk to a few elements, the first merges of GPT-2's tokenizer with just the vocabulary they
need, a few lines of each prompt set. Inputs that crashed a target are added by hand, named
crash-<what>, and are never regenerated.
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
BYTE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
              "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape)]; data bytes are a counting pattern."""
    header, offset, data = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = BYTE_SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        data += bytes((offset + i) % 251 for i in range(n))
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def fixture_header(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def safetensors_seeds():
    # The fixtures' tensor names and dtypes, each shape cut to at most 2 × 2.
    for model, file in [("tiny-ln", "model.safetensors"), ("tiny-lnfree", "model-00002-of-00002.safetensors")]:
        header = fixture_header(os.path.join(ROOT, "Tests/Fixtures/models", model, file))
        metadata = header.pop("__metadata__", None)
        entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])[:12]
        tensors = [(name, e["dtype"], [min(d, 2) for d in e["shape"]]) for name, e in entries]
        write("safetensors", f"{model}-shrunk.safetensors", safetensors(tensors, metadata))
    write("safetensors", "f32-bf16-f16.safetensors", safetensors(
        [("a", "F32", [2, 3]), ("b", "BF16", [3]), ("c", "F16", [1, 2])], {"format": "pt"}))
    write("safetensors", "empty-and-scalar.safetensors", safetensors(
        [("empty", "F32", [0, 4]), ("scalar", "F32", []), ("ints", "I64", [2])]))
    write("safetensors", "no-tensors.safetensors", safetensors([], pad=False))
    write("safetensors", "unpadded.safetensors", safetensors([("x", "F16", [3])], pad=False))


def config_seeds():
    for name in ["Tests/Fixtures/models/tiny-ln/config.json", "Tests/Fixtures/models/tiny-lnfree/config.json"]:
        with open(os.path.join(ROOT, name), "rb") as f:
            write("config", name.split("/")[-2] + ".json", f.read())
    write("config", "minimal.json",
          '{"n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 4, "vocab_size": 300}')
    write("config", "n_ctx-untied.json",
          '{"n_embd": 16, "n_layer": 2, "n_head": 4, "n_ctx": 8, "vocab_size": 300, "n_inner": 32, '
          '"layer_norm_epsilon": 1e12, "tie_word_embeddings": false, "activation_function": "gelu_fast", '
          '"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": true}')


def tiny_tokenizer(n_merges):
    """GPT-2's byte tokens, its first n_merges merges and their results, <|endoftext|>: real ids."""
    with open(os.path.join(ROOT, "models/tokenizer/vocab.json"), encoding="utf-8") as f:
        full = json.load(f)
    with open(os.path.join(ROOT, "models/tokenizer/merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [line for line in lines[1:] if line][:n_merges]
    vocab = {token: i for token, i in full.items() if i < 256}
    for line in merges:
        left, right = line.split(" ")
        vocab[left + right] = full[left + right]
    vocab["<|endoftext|>"] = full["<|endoftext|>"]
    vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    return vocab, lines[0], merges


def tokenizer_seeds():
    # The tokenizer target reads vocab.json, a NUL byte, then merges.txt.
    for n in [0, 1, 24]:
        vocab, version, merges = tiny_tokenizer(n)
        vocab_json = json.dumps(vocab, ensure_ascii=False).encode()
        write("tokenizer", f"merges-{n}", vocab_json + b"\0" + "\n".join([version] + merges + [""]).encode())
    vocab, version, merges = tiny_tokenizer(8)
    crlf = "\r\n".join(merges).encode()
    write("tokenizer", "crlf-no-version", json.dumps(vocab, indent=1).encode() + b"\0" + crlf)

    with open(os.path.join(ROOT, "Tests/Fixtures/tokenizer/tokenizer.json"), encoding="utf-8") as f:
        full = json.load(f)
    vocab, _, merges = tiny_tokenizer(24)
    full["model"]["vocab"] = vocab
    full["model"]["merges"] = [m.split(" ") for m in merges]
    write("tokenizer-json", "pair-merges.json", json.dumps(full, ensure_ascii=False))
    full["model"]["merges"] = merges[:8]
    full["added_tokens"].append({"id": 7, "content": "(", "special": False})
    write("tokenizer-json", "string-merges.json", json.dumps(full, ensure_ascii=False))


def prompt_seeds():
    files = ["Tests/Fixtures/reference/dla/prompts.jsonl", "Tests/Fixtures/store/ioi6.jsonl",
             "prompts/greater-than.jsonl", "prompts/paper_ioi.jsonl"]
    for name in files:
        with open(os.path.join(ROOT, name), "rb") as f:
            lines = f.read().split(b"\n")[:3]
        write("prompts", os.path.basename(name), b"\n".join(lines) + b"\n")
    write("prompts", "bom-crlf-blank-unknown.jsonl",
          b"\xef\xbb\xbf" + "\r\n".join([
              '{"prompt": "The cat sat on the", "answer": " mat"}',
              "   ",
              '{"prompt": "<|endoftext|>Hello", "answer": " world", "wrnog": " x", "_note": 1, "meta": {}}',
              '{"prompt": "caf\\u00e9 \\ud83d\\ude00", "answer": "!", "wrong": null, "corrupt": "cafe \\ud83d\\ude01"}',
              "",
          ]).encode())
    write("prompts", "invalid-lines.jsonl", "\n".join([
        '{"prompt": "a b", "answer": " c d"}', "[1, 2]", '{"prompt": "", "answer": "x"}',
        '{"prompt": 3, "answer": "x"}', '{"prompt": "x y", "answer": "z", "corrupt": "x"}', "{not json",
        '{"prompt": "Fine", "answer": "."}',
    ]))


def data_seeds():
    # The data-reader fixtures of scripts/reference/make_data_fixtures.py, as they are.
    data = os.path.join(ROOT, "Tests/Fixtures/data")

    def copy(target, name, out=None):
        with open(os.path.join(data, name), "rb") as f:
            write(target, out or os.path.basename(name), f.read())

    for name in ["stream.u2.v1.npy", "stream.u4.v2.npy", "stream.i8.v3.npy", "bad/fortran.npy", "bad/c2d.npy",
                 "bad/float.npy", "bad/bigendian.npy", "bad/scalar.npy", "bad/truncated.npy"]:
        copy("npy", name)
    for name in ["stream.u16.bin", "bad/odd.bin", "bad/out_of_range.bin"]:
        copy("token-bin", name)
    copy("dataset", "docs.jsonl")
    with open(os.path.join(data, "ids.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    write("dataset", "ids-as-text.jsonl", "".join(json.dumps({"text": r["input_ids"]}) + "\n" for r in rows))
    write("dataset", "bom-crlf-blank-bad.jsonl", "\ufeff" + "\r\n".join([
        json.dumps({"text": "A short row."}), "", "  ", json.dumps({"text": [1, 2, 3, 50256]}),
        json.dumps({"body": "no text"}), "[1, 2]", json.dumps({"text": 7}), json.dumps({"text": [1, -2]}), ""]))


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    tokenizer_seeds()
    prompt_seeds()
    data_seeds()
