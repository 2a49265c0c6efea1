#!/usr/bin/env python3
"""Write the GPT-2 tokenizer fixtures used by Tests/TokenizerTests.

Run by hand (never in CI), from the repository root:

    /tmp/refvenv/bin/pip install tiktoken
    /tmp/refvenv/bin/python scripts/reference/make_tokenizer_fixtures.py [/tmp/whisper/openai_whisper-*.tar.gz]

Reference ids come from transformers' GPT2TokenizerFast built from models/tokenizer/vocab.json +
merges.txt. They are cross-checked against the slow GPT2Tokenizer and against tiktoken's Encoding
built directly from whisper's gpt2.tiktoken ranks (no network); every disagreement is printed and
recorded in Tests/Fixtures/tokenizer/disagreements.json.

Outputs (Tests/Fixtures/tokenizer/):
  cases.json          [{"text": str, "ids": [int], "pieces": [str]}]  encode(text) == ids, decode(ids) == text;
                      pieces = HF's pre-tokenizer split (absent when text holds <|endoftext|>)
  decode_cases.json   [{"ids": [int], "text": str}]            decode(ids) == text (incl. invalid UTF-8)
  tokenizer_info.json vocabulary size and <|endoftext|> id
  tokenizer.json      GPT2TokenizerFast.save_pretrained output (only if under 3.5 MB)
  disagreements.json  where slow / tiktoken differ from fast
"""
import glob
import json
import os
import random
import shutil
import sys
import tempfile

import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str
from transformers import GPT2Tokenizer, GPT2TokenizerFast, PreTrainedTokenizerFast

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "tokenizer"))
from rebuild_gpt2_tokenizer import read_ranks  # noqa: E402  (the same reading of gpt2.tiktoken)
MODEL_DIR = os.path.join(ROOT, "models", "tokenizer")
OUT_DIR = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer")
EOT = "<|endoftext|>"

PROSE = [
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps as "
    "his father had taught him: one hundred and twelve, never more, never fewer. At the top he "
    "trimmed the wick, polished the great lens with a soft cloth, and waited for the first ship "
    "to round the headland. Some nights there were none at all; on others, a whole fleet of "
    "fishing boats came home together, their lanterns bobbing like fireflies over the black water.",
    "In 1887, the town council voted 7-2 to replace the oil lamp with an electric arc light. The "
    "keeper objected. \"A light that needs a wire,\" he wrote to the council, \"is a light that can "
    "be cut.\" His letter was read aloud, filed, and ignored; the new lamp arrived in crates from "
    "Glasgow on 3 March 1888, together with a young engineer named Alistair McCrae, who had never "
    "seen the sea.",
    "McCrae's first winter was hard. Storms tore the telegraph line down twice, and each time the "
    "old keeper lit the reserve lamp without a word, watching the engineer splice copper in the "
    "sleet. By spring they had reached an understanding: the electric light would burn on calm "
    "nights, the oil lamp on wild ones, and neither man would say which he trusted more.",
    "Researchers who study such records today note three things. First, the logbooks are "
    "remarkably precise -- wind speed, barometric pressure (in inches of mercury), and visibility "
    "are recorded hourly. Second, the handwriting changes abruptly in 1893, when the keeper's "
    "eyesight failed. Third, and most curiously, the entries for 14-16 October 1894 are missing "
    "entirely; the pages were cut out with a sharp knife.",
    "What happened on those three days? The parish register records a wedding, a drowning and a "
    "birth. The harbour master's ledger lists a cargo of timber, unloaded at night. A local "
    "newspaper mentions \"lights seen on the north rocks\" but gives no details. Historians have "
    "proposed at least five explanations; none of them is entirely convincing, and the keeper, "
    "who lived until 1911, never spoke of it.",
    "Forty years later the lighthouse was automated. A clockwork timer, then a photocell, then a "
    "small computer in a grey steel box took over the work of the keepers; the last of them, a "
    "retired schoolteacher named Ruth Abernethy, handed over her keys on a Tuesday afternoon and "
    "caught the 4:15 bus to Inverness. She took with her a tin of biscuits, two library books that "
    "were already overdue, and the brass barometer from the watch room, which nobody missed for a "
    "decade.",
    "The barometer resurfaced in 2003 at an auction in Edinburgh, catalogued as \"Lot 212: aneroid "
    "barometer, c. 1880, maker unknown, minor wear.\" The buyer, a collector of scientific "
    "instruments, noticed that the dial had been opened and resealed. Inside, folded into a square "
    "no larger than a postage stamp, was a sheet of thin paper covered on both sides in tiny, "
    "careful handwriting. It began: 'For whoever next takes this apart -- the pages are not lost.'",
    "The note went on for some four hundred words. It described a night of fog so thick that the "
    "beam seemed to stop a yard from the glass; a boat with no lights; men carrying crates up the "
    "north rocks; and a decision, made in a few minutes and regretted for years, to look the other "
    "way. It named no names. It ended with a list of numbers -- 14, 15, 16, 112 -- and the words "
    "\"count the steps.\" Nobody has yet agreed on what they mean.",
    "    def keeper_log(entries):\n        \"\"\"Return the hours with visibility under 2 miles.\"\"\"\n"
    "        return [e.hour for e in entries if e.visibility < 2.0]\n\n\n"
    "The code above is, of course, an anachronism.\nBut the question it asks is an old one:\t"
    "when could the light not be seen?  \n",
]


def base_cases():
    c = []
    # empty and basic
    c += ["", "a", "A", "Hello world", "hello", " Hello", "Hello, world!", "Hello world.", "the", " the",
          "The quick brown fox jumps over the lazy dog.",
          "When Mary and John went to the store, John gave a drink to", " Mary", " John"]
    # whitespace runs
    c += [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r", "  a", "a  ", "a  b",
          "a   b", "a \n b", "a\t\tb", "a\r\nb", " \n ", "a \t\n", "end   ", "   start", "a \t b", " \t ",
          "word\n\nword", "x \n\n y", "  \n  \n", "\n a", "\n\ta", "a\n", "a\n\n", " a ", "  a  ",
          "\t a", " \ta", "a \u00a0b", "\u00a0", "a\u00a0b", "\u00a0\u00a0a", "\u3000", "a\u3000b",
          "\u2028", "a\u2029b", "\u0085", "a\u0085b", "\x1c\x1d\x1e\x1f", "a\x1cb", "\x0b\x0c", "a\x0bb",
          "a\u200bb", "\u200b", "\ufeffBOM", "\u2003em space", "a\u2009b", "  \u00a0  x", " " * 40,
          "\n" * 10, "x" + " " * 17 + "y", "\t\n \t\n", "a\u180eb", "\u202f\u205f"]
    # contractions
    c += ["I'm", "don't", "they'll", "we've", "you're", "he'd", "it's", "IT'S", "'S", "'s", "'t", "''s",
          "O'Neil", "rock'n'roll", "can't't", "'ll", "'LL", "ma'am", "it\u2019s", " 's", "x'sy", "!!'s",
          "I'M", "She'S", "'re'", "' s", "''", "'", " '", "'d've", "y'all'd've", "'''", "o'clock", "'m'",
          "Don't you think it's they'll've?"]
    # digits and numbers
    c += ["0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "2024-01-01",
          "-42", "+1", "1e10", " 12 34", "$5.99", "50%", "v1.2.3", "0x1F", "007", "1st 2nd 3rd 4th",
          "\u0663\u0664\u0665", "\u00bd \u2153", "\u216b", "\u00b2\u00b3", "\uff10\uff11\uff12", "\u0968\u0966",
          "12abc", "abc12", "a1b2c3", " 1", "  1", "1 ", "1\n2", "99 bottles"]
    # punctuation runs
    c += ["!!!", "...", "?!?!", "\u2014", "--", "\u00ab\u00bb", "()[]{}", "a...b", " ...", "$$$",
          "@#$%^&*()", "<<>>", "=>", "->", "::", ":-)", "\"quoted\"", "'single'", "\u201ccurly\u201d",
          "a,b", "a, b", "a ,b", "... ...", "!?", " !", "  !", "\u00bf\u00a1", "\u2026", "#", "~~~",
          "\\", "\\\\n", "/", "|", "_", "__init__", "**bold**", "`code`", "- [ ] todo", "\u3002\u3001"]
    # unicode letters, accents, scripts, combining marks
    c += ["caf\u00e9", "cafe\u0301", "na\u00efve", "\u00dcn\u00efc\u00f6d\u00e9", "e\u0301", "\u0301",
          "Z\u0308\u0301a\u0308\u0324l\u0303", "\u65e5\u672c\u8a9e", "\u4e2d\u6587\u6d4b\u8bd5",
          "\ud55c\uad6d\uc5b4", "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
          "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
          "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd",
          "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e44\u0e17\u0e22", "\U0001d518\U0001d52b\U0001d526",
          "\ufb01", "\u01c5", "stra\u00dfe", "\u0130stanbul", "\u24d0", "\u212b", "\u00c5", "A\u030a",
          "\u1e9e", "\u0101\u0102\u0143", "\u0120\u0120", "\u010a", "\u0100", "\u00c4\u0120",
          "Cr\u00e8me br\u00fbl\u00e9e", "se\u00f1or", "\u00e5\u00e4\u00f6", "Dvo\u0159\u00e1k",
          "\u0628\u0650\u0633\u0652\u0645\u0650", "\u0915\u094d\u0937", "\u1100\u1161\u11a8",
          "\u0410\u0301", "a\u0300\u0301\u0302\u0303", " \u0301", "x \u0301y", "\u02b0\u02b1",
          "\u3042\u30a2\uff71", "\U00020000\U0002a6d6", "\u4e00 \u4e01", "English \u65e5\u672c mixed"]
    # emoji (incl. ZWJ sequences, skin tones, flags, keycaps, variation selectors)
    c += ["\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
          "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7", "\u2764\ufe0f",
          "I \u2764\ufe0f Swift", "emoji\U0001f600text", " \U0001f600", "\U0001f916\U0001f916\U0001f916",
          "1\ufe0f\u20e3", "\U0001f469\U0001f3fd\u200d\U0001f4bb", "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
          "\u263a", "\u2603 snow", "Great job! \U0001f389\U0001f389", "\U0001f600 \U0001f600"]
    # long words
    c += ["supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
          "a" * 1000, "ab" * 500, "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
          "antidisestablishmentarianism", "x" * 257, "\u00e9" * 100, "1" * 300, "!" * 200,
          "\u65e5" * 50, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"]
    # URLs and code
    c += ["https://example.com/path?query=1&b=2#frag", "user@example.com", "http://localhost:8080/",
          "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
          "<div class=\"x\">Hi</div>", "{\"key\": [1, 2, 3]}", "SELECT * FROM t WHERE id = 1;",
          "C:\\Users\\name\\file.txt", "snake_case_var", "camelCaseVar", "x+=1", "#!/usr/bin/env python3",
          "let x: [Int] = [1, 2, 3]\nprint(x.map { $0 * 2 })", "if a != b && c >= d || !e {", "// comment",
          "/* block */", "    indented", "\tindent\n\t\tmore", "git commit -m \"msg\"", "~/.cache/huggingface/hub"]
    # the special token inside text
    c += [EOT, "a" + EOT + "b", " " + EOT + " ", EOT + EOT, "<|endoftext|", EOT + "\n",
          "text" + EOT + "\n\nmore", "<|ENDOFTEXT|>", "<" + EOT + ">", "Hello." + EOT + "The end.",
          "<|endoftext", "|endoftext|>", "<|end of text|>", "\n\n" + EOT + "  x"]
    # control characters
    c += ["\x00", "\x07bell", "\x7f", "a\x00b", "\x1b[31mred\x1b[0m"]
    return c


def random_cases(n, seed=1234):
    """Short random strings over an alphabet that hits every branch of the pre-tokenizer regex."""
    alphabet = list("aZé '’sdtlmrev019!?.,-_\t\n\r") + ["  ", "\u00a0", "\u3000", "\u65e5", "\u0301",
                                                       "\U0001f600", "\u200d", "\u0663", "\u00bd", "\x1c",
                                                       "\u0645", "'s", "'ll", "'S", "\u0120", EOT]
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(n)]


def load_tiktoken(sdist):
    ranks = read_ranks(sdist)
    return tiktoken.Encoding(name="gpt2_whisper_assets", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256}, explicit_n_vocab=50257)


def main():
    sdists = sys.argv[1:] or sorted(glob.glob("/tmp/whisper/openai_whisper-*.tar.gz"))
    if not sdists:
        sys.exit("need the openai-whisper sdist (pip download --no-deps openai-whisper -d /tmp/whisper)")
    vocab, merges = os.path.join(MODEL_DIR, "vocab.json"), os.path.join(MODEL_DIR, "merges.txt")
    fast = GPT2TokenizerFast(vocab_file=vocab, merges_file=merges, clean_up_tokenization_spaces=False)
    slow = GPT2Tokenizer(vocab_file=vocab, merges_file=merges, clean_up_tokenization_spaces=False)
    tik = load_tiktoken(sdists[0])

    texts = base_cases() + PROSE + ["\n\n".join(PROSE)] + random_cases(80)
    seen, unique = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    texts = unique

    pre_tokenizer = fast.backend_tokenizer.pre_tokenizer
    byte_decoder = slow.byte_decoder
    cases, disagreements = [], []
    for t in texts:
        ids = fast.encode(t)
        assert fast.decode(ids) == t, f"fast round trip failed for {t!r}"
        ids_slow = slow.encode(t)
        ids_tik = tik.encode(t, allowed_special="all")
        for name, other in (("GPT2Tokenizer (slow)", ids_slow), ("tiktoken", ids_tik)):
            if other != ids:
                disagreements.append({"text": t, "reference": name, "fast": ids, "other": other})
        case = {"text": t, "ids": ids}
        if EOT not in t:  # HF's pre-tokenizer alone, for pinpointing a failure (added tokens come first)
            case["pieces"] = [bytes(byte_decoder[ch] for ch in p).decode("utf-8")
                              for p, _ in pre_tokenizer.pre_tokenize_str(t)]
            assert "".join(case["pieces"]) == t
        cases.append(case)

    # Decoding: random id sequences (no special token: the slow tokenizer puts spaces around it, see
    # below) and tokens that are incomplete UTF-8, decoded with errors="replace".
    rng = random.Random(99)
    partial = [i for i in range(50256) if "\ufffd" in fast.decode([i])]
    decode_inputs = [[i] for i in partial[:40]] + [partial[i:i + 3] for i in range(0, 60, 3)]
    decode_inputs += [[rng.randrange(50256) for _ in range(rng.randint(1, 30))] for _ in range(60)]
    decode_inputs += [[50256], [40, 50256, 40], [447, 247], [447], [447, 447, 247], [171, 120, 253]]
    decode_cases = []
    for ids in decode_inputs:
        text = fast.decode(ids)
        text_tik = tik.decode(ids)  # errors="replace" as well
        if text_tik != text:
            disagreements.append({"ids": ids, "reference": "tiktoken decode", "fast": text, "other": text_tik})
        if 50256 not in ids:
            text_slow = slow.decode(ids)
            if text_slow != text:
                disagreements.append({"ids": ids, "reference": "GPT2Tokenizer (slow) decode", "fast": text,
                                      "other": text_slow})
        decode_cases.append({"ids": ids, "text": text})
    # Special tokens are left out of the random decode inputs because the slow tokenizer's decode
    # treats added tokens separately (spaces_between_special_tokens); record what it gives here.
    slow_special = slow.decode([40, 50256, 40])
    fast_special = fast.decode([40, 50256, 40])

    # tokenizer.json: save the fast tokenizer, reload it from that file alone, check it agrees.
    tmp = tempfile.mkdtemp()
    try:
        fast.save_pretrained(tmp)
        tj = os.path.join(tmp, "tokenizer.json")
        reloaded = PreTrainedTokenizerFast(tokenizer_file=tj)
        for c in cases:
            assert reloaded.encode(c["text"]) == c["ids"], f"tokenizer.json reload differs on {c['text']!r}"
        # save_pretrained pretty-prints (3.6 MB); the same JSON without indentation is well under the
        # 3.5 MB limit for committed fixtures. Reload the compact file too, to be sure nothing changed.
        with open(tj, encoding="utf-8") as f:
            content = json.load(f)
        compact = os.path.join(tmp, "compact", "tokenizer.json")
        os.makedirs(os.path.dirname(compact))
        with open(compact, "w", encoding="utf-8") as f:
            json.dump(content, f, ensure_ascii=False, separators=(",", ":"))
        reloaded = PreTrainedTokenizerFast(tokenizer_file=compact)
        for c in cases:
            assert reloaded.encode(c["text"]) == c["ids"], f"compact tokenizer.json differs on {c['text']!r}"
        size = os.path.getsize(compact)
        os.makedirs(OUT_DIR, exist_ok=True)
        if size < 3.5e6:
            shutil.copy(compact, os.path.join(OUT_DIR, "tokenizer.json"))
        else:
            print(f"tokenizer.json is {size / 1e6:.1f} MB even without indentation, not committed")
    finally:
        shutil.rmtree(tmp)

    def dump(name, obj):
        with open(os.path.join(OUT_DIR, name), "w", encoding="utf-8") as f:
            if isinstance(obj, list):  # one case per line keeps diffs readable
                f.write("[\n" + ",\n".join(json.dumps(o, ensure_ascii=True) for o in obj) + "\n]\n")
            else:
                json.dump(obj, f, ensure_ascii=True, indent=1)
                f.write("\n")

    dump("cases.json", cases)
    dump("decode_cases.json", decode_cases)
    dump("tokenizer_info.json", {"vocab_size": len(fast), "end_of_text_id": fast.eos_token_id,
                                 "end_of_text": fast.eos_token})
    dump("disagreements.json", {"encode_and_decode": disagreements,
                                "slow_decode_special": {"ids": [40, 50256, 40], "slow": slow_special,
                                                        "fast": fast_special}})
    print(f"{len(cases)} encode cases, {len(decode_cases)} decode cases, {len(disagreements)} disagreements")
    for d in disagreements:
        print("DISAGREE", json.dumps(d, ensure_ascii=True)[:300])
    print(f"slow vs fast around <|endoftext|>: {slow_special!r} vs {fast_special!r}")


if __name__ == "__main__":
    main()
