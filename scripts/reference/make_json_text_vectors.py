#!/usr/bin/env python3
"""Reference JSON string literals for lnlens's one escaper (Sources/Support/JSONText.swift).

Writes Tests/Fixtures/reference/jsontext/literals.json: for each string, `json.dumps(s)` with
Python's defaults (ensure_ascii=True), which is what lnlens's generated prompt files and
safetensors headers must match. Run by hand from the repository root with the system python3:

    python3 scripts/reference/make_json_text_vectors.py

The strings cover every C0 control character, DEL, quote and backslash, printable ASCII, Latin-1,
BMP characters, characters outside the BMP (written as surrogate pairs) and GPT-2's byte-level
token forms (Ġ, Ċ).
"""
import json
import os

STRINGS = (
    ["", "plain", " leading space", 'say "hi"', "back\\slash", "tab\tnew\nline\rret", "\b\f", "\x7f"]
    + ["".join(chr(c) for c in range(0, 32))]
    + ["".join(chr(c) for c in range(32, 127))]
    + ["café", "naïve – “quotes”", "ĠThe", "Ċ", "日本語", "\u2028\u2029", "\ufeffbom", "😀", "a😀b\U0010ffff"]
)


def main():
    folder = os.path.join("Tests", "Fixtures", "reference", "jsontext")
    os.makedirs(folder, exist_ok=True)
    rows = [{"text": s, "literal": json.dumps(s)} for s in STRINGS]
    with open(os.path.join(folder, "literals.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=True, indent=1)
        f.write("\n")
    print(f"wrote {len(rows)} literals")


if __name__ == "__main__":
    main()
