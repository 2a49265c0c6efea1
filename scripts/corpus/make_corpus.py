#!/usr/bin/env python3
"""Build lnlens's English training corpus: corpus/train.txt, corpus/heldout.txt, corpus/LICENSE,
corpus/manifest.tsv.

Sources (both Debian packages, bookworm/main; the texts are public-domain novels):

  r-cran-janeaustenr 1.0.0-1   /usr/lib/R/site-library/janeaustenr/data/Rdata.{rdx,rdb}
      R objects sensesensibility, prideprejudice, mansfieldpark, emma, northangerabbey,
      persuasion: the six novels of Jane Austen as character vectors of lines (taken from
      Project Gutenberg, PG header and footer already removed by the package).
  r-cran-tokenizers 0.3.0-1    /usr/lib/R/site-library/tokenizers/data/Rdata.{rdx,rdb}
      R object mobydick: Herman Melville, "Moby Dick; or The Whale", Project Gutenberg EBook
      #2701 as one string, with the PG header and licence footer (removed here).

Run by hand once (needs apt-get and dpkg-deb, i.e. a Debian machine, and Python 3 only):

    python3 scripts/corpus/make_corpus.py            # downloads into /tmp/lnlens-corpus
    python3 scripts/corpus/make_corpus.py --debs DIR # uses r-cran-*.deb already in DIR

R is not needed: the R lazy-load databases are read by the small unserializer below. The
extracted data files are checked against pinned SHA-256 sums, so a changed package stops the
script instead of silently changing the corpus. The output is byte-identical on every run.

Documents are chapters (Moby-Dick's Etymology and Extracts form one more document), in the fixed
order of BOOKS below. Document i (0-based, counted over all books) is held out when
i % 20 == 19, so about 5 % of the documents, spread over all seven books.

--count-tokens also prints GPT-2 token counts (needs `transformers`, e.g. /tmp/venv/bin/python3);
it writes nothing different.
"""
import argparse
import glob
import gzip
import hashlib
import os
import re
import struct
import subprocess
import sys
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EOT = "<|endoftext|>"
HELDOUT_EVERY = 20

PACKAGES = {
    # package: (version, R library dir inside the .deb, {file: sha256})
    "r-cran-janeaustenr": ("1.0.0-1", "usr/lib/R/site-library/janeaustenr/data", {
        "Rdata.rdx": "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f",
        "Rdata.rdb": "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21",
    }),
    "r-cran-tokenizers": ("0.3.0-1", "usr/lib/R/site-library/tokenizers/data", {
        "Rdata.rdx": "597c9d0f30a6fd0f70a87130d5b424e6cf690894efd8ac283e75cd44d58847cd",
        "Rdata.rdb": "2a7581d1d9c2f49fd8c8493e556f984f4a5cdc071eeb6248b0fa719be6b088fe",
    }),
}

# (package, R object, title, author, year of first publication)
BOOKS = [
    ("r-cran-janeaustenr", "sensesensibility", "Sense and Sensibility", "Jane Austen", 1811),
    ("r-cran-janeaustenr", "prideprejudice", "Pride and Prejudice", "Jane Austen", 1813),
    ("r-cran-janeaustenr", "mansfieldpark", "Mansfield Park", "Jane Austen", 1814),
    ("r-cran-janeaustenr", "emma", "Emma", "Jane Austen", 1815),
    ("r-cran-janeaustenr", "northangerabbey", "Northanger Abbey", "Jane Austen", 1817),
    ("r-cran-janeaustenr", "persuasion", "Persuasion", "Jane Austen", 1817),
    ("r-cran-tokenizers", "mobydick", "Moby-Dick; or, The Whale", "Herman Melville", 1851),
]


# ---------------------------------------------------------------------------------------------
# Reading R data: an R lazy-load database (Rdata.rdx index + Rdata.rdb blobs) holds each object
# as a compressed R serialization (XDR format, version 2 or 3). Only what these packages use is
# supported; anything else is an error.

class RUnserializer:
    def __init__(self, data):
        self.b = data
        self.p = 0
        self.refs = []

    def int(self):
        v = struct.unpack(">i", self.b[self.p:self.p + 4])[0]
        self.p += 4
        return v

    def length(self):
        n = self.int()
        if n == -1:
            n = (self.int() << 32) + self.int()
        return n

    def read(self):
        if self.b[:2] != b"X\n":
            raise ValueError("not an XDR R serialization")
        self.p = 2
        version = self.int()
        self.int()
        self.int()
        if version == 3:
            n = self.int()  # then the native encoding's name
            self.p += n
        return self.item()

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr = flags & (1 << 9)
        has_tag = flags & (1 << 10)
        if t == 254:  # NILVALUE_SXP
            return None
        if t == 255:  # REFSXP
            k = flags >> 8
            return self.refs[(k or self.int()) - 1]
        if t == 1:  # SYMSXP
            sym = ("sym", self.item())
            self.refs.append(sym)
            return sym
        if t in (2, 239):  # LISTSXP (pairlist), ATTRLISTSXP
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            items = [(tag, car)] + (cdr["pairlist"] if isinstance(cdr, dict) else [])
            return {"pairlist": items, "attr": attr}
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            raw = self.b[self.p:self.p + n]
            self.p += n
            return raw.decode("latin-1" if flags & (1 << 2) else "utf-8")
        if t in (16, 19):  # STRSXP, VECSXP
            value = [self.item() for _ in range(self.length())]
        elif t in (10, 13):  # LGLSXP, INTSXP
            n = self.length()
            value = list(struct.unpack(">%di" % n, self.b[self.p:self.p + 4 * n]))
            self.p += 4 * n
        elif t == 14:  # REALSXP
            n = self.length()
            value = list(struct.unpack(">%dd" % n, self.b[self.p:self.p + 8 * n]))
            self.p += 8 * n
        else:
            raise ValueError("unsupported R SEXP type %d" % t)
        if has_attr:
            return {"value": value, "attr": self.item()}
        return value


def r_names(obj):
    for tag, value in obj["attr"]["pairlist"]:
        if tag == ("sym", "names"):
            return value
    raise ValueError("R object has no names")


def r_lazyload(datadir):
    """{name: unserialized object} for every object in datadir/Rdata.rdx + Rdata.rdb."""
    with open(os.path.join(datadir, "Rdata.rdx"), "rb") as f:
        index = RUnserializer(gzip.decompress(f.read())).read()
    top = dict(zip(r_names(index), index["value"]))
    if top["compressed"] not in ([1], [True]):
        raise ValueError("expected a zlib-compressed lazy-load database")
    with open(os.path.join(datadir, "Rdata.rdb"), "rb") as f:
        rdb = f.read()
    out = {}
    for name, (offset, size) in zip(r_names(top["variables"]), top["variables"]["value"]):
        blob = rdb[offset:offset + size]
        data = zlib.decompress(blob[4:])
        if len(data) != struct.unpack(">I", blob[:4])[0]:
            raise ValueError("bad blob length for " + name)
        out[name] = RUnserializer(data).read()
    return out


# ---------------------------------------------------------------------------------------------
# Fetching

def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fetch(workdir, debdir):
    """Extract each package; return {package: (deb, data dir, copyright file)}. Downloads the
    .debs unless debdir is given."""
    if debdir is None:
        debdir = os.path.join(workdir, "debs")
        os.makedirs(debdir, exist_ok=True)
        os.chmod(debdir, 0o777)  # lets apt's unprivileged _apt user write there
        specs = ["%s=%s" % (pkg, ver) for pkg, (ver, _, _) in PACKAGES.items()]
        subprocess.run(["apt-get", "download", "-q"] + specs, cwd=debdir, check=True)
    dirs = {}
    for pkg, (ver, libdir, sums) in PACKAGES.items():
        debs = sorted(glob.glob(os.path.join(debdir, "%s_%s_*.deb" % (pkg, ver.replace(":", "%3a")))))
        if not debs:
            sys.exit("no %s_%s_*.deb in %s" % (pkg, ver, debdir))
        root = os.path.join(workdir, pkg)
        subprocess.run(["dpkg-deb", "-x", debs[0], root], check=True)
        datadir = os.path.join(root, libdir)
        for name, want in sums.items():
            got = sha256(os.path.join(datadir, name))
            if got != want:
                sys.exit("%s: %s has sha256 %s, expected %s" % (pkg, name, got, want))
        dirs[pkg] = (debs[0], datadir, os.path.join(root, "usr/share/doc", pkg, "copyright"))
    return dirs


# ---------------------------------------------------------------------------------------------
# Cleaning

PG_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG EBOOK.*$", re.M)
PG_END = re.compile(r"^(End of (the )?Project Gutenberg.*\n+)?\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG EBOOK.*$",
                    re.M)
CHAPTER = re.compile(r"^(CHAPTER|Chapter) +([IVXLC]+|[0-9]+)\b.*$|^Epilogue$")
VOLUME = re.compile(r"^VOLUME +[IVX]+$")
# Editors' notes about the printed edition, not part of the novels.
EDITORIAL = re.compile(r"^\[(End volume one of this edition|At this point in the first and second editions)")


def normalise(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def strip_gutenberg(text, title):
    """The text between PG's START and END lines, less the producer's and transcriber's notes."""
    start, end = PG_START.search(text), PG_END.search(text)
    if not start or not end:
        sys.exit("%s: Project Gutenberg START/END lines not found" % title)
    body = text[start.end():end.start()]
    body = re.sub(r"^Produced by .*$", "", body, count=1, flags=re.M)
    # Moby-Dick's transcriber's note (which names Project Gutenberg) runs up to the Etymology.
    body, n = re.subn(r"^Original Transcriber's Notes:\n.*?(?=^ETYMOLOGY\.$)", "", body,
                      count=1, flags=re.M | re.S)
    if n != 1:
        sys.exit("%s: transcriber's note not found" % title)
    return body


def paragraphs(text):
    return [p.strip("\n") for p in re.split(r"\n(?:[ \t]*\n)+", text) if p.strip()]


def reflow(par):
    """One paragraph of hard-wrapped text as it should read.

    Prose is unwrapped onto one line with single spaces. Indented blocks are prose too (letters)
    when at least a third of their continuation lines start in lower case; otherwise they are
    verse, tables or signatures and keep their lines, less the common indentation."""
    lines = par.split("\n")
    indented = any(l[:1].isspace() for l in lines)
    if len(lines) > 1 and indented:
        lower = sum(1 for l in lines[1:] if re.match(r"\s*[a-z]", l))
        if 3 * lower < len(lines) - 1:
            cut = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
            return "\n".join(l[cut:] for l in lines)
    return re.sub(r"\s+", " ", " ".join(l.strip() for l in lines)).strip()


def clean_paragraph(par):
    par = reflow(par)
    return re.sub(r"_([^_\n]+)_", r"\1", par)  # _italics_ markup


def book_text(obj, title):
    if isinstance(obj, dict):  # Moby-Dick: a named character vector of one string
        obj = obj["value"]
    text = normalise("\n".join(obj))
    if PG_START.search(text):
        text = strip_gutenberg(text, title)
    if title == "Northanger Abbey":
        # A modern editor's "A NOTE ON THE TEXT" (about the Signet Classic edition) ends the file.
        i = text.find("\nA NOTE ON THE TEXT\n")
        if i < 0:
            sys.exit("Northanger Abbey: editor's note not found")
        text = text[:i]
    return text


def chapters(text, title):
    """Split a book into documents: front matter goes with the first chapter, a VOLUME heading
    with the chapter after it. Moby-Dick's Etymology and Extracts are a document of their own."""
    lines = text.split("\n")
    starts = [i for i, l in enumerate(lines) if CHAPTER.match(l)]
    if not starts:
        sys.exit("%s: no chapter headings" % title)
    bounds = []
    for i in starts:
        j = i
        k = i - 1
        while k >= 0 and (not lines[k].strip() or VOLUME.match(lines[k])):
            if VOLUME.match(lines[k]):
                j = k
            k -= 1
        bounds.append(j)
    if title.startswith("Moby"):
        bounds[0:0] = [0]  # title page, Etymology, Extracts
    else:
        bounds[0] = 0
    bounds.append(len(lines))
    docs = []
    volume = ""
    for a, b in zip(bounds, bounds[1:]):
        pars = [clean_paragraph(p) for p in paragraphs("\n".join(lines[a:b]))
                if not EDITORIAL.match(p.strip())]
        volume = next((l + ", " for l in lines[a:b] if VOLUME.match(l)), volume)
        heading = next((l for l in lines[a:b] if CHAPTER.match(l)), "front matter")
        docs.append((volume + heading, "\n\n".join(pars)))
    return docs


# ---------------------------------------------------------------------------------------------

def licence_text(dirs, moby_raw):
    out = [
        "Licence of the lnlens training corpus (corpus/train.txt, corpus/heldout.txt)",
        "=" * 77,
        "",
        "The texts are seven novels first published between 1811 and 1851 whose authors died in",
        "1817 (Jane Austen) and 1891 (Herman Melville). They are in the public domain in the United",
        "States and in every country whose copyright term is life plus 100 years or less. The",
        "transcriptions come from Project Gutenberg. The Project Gutenberg header, footer, licence",
        "and every other reference to Project Gutenberg have been removed from the documents",
        "(make_corpus.py refuses to write a document that mentions it). That is the condition",
        "under which paragraph 1.C of Project Gutenberg's licence (kept below for reference) lets",
        "anyone copy, distribute and make derivative works of a work that is in the public domain",
        "in the United States; the corpus is not distributed under the Project Gutenberg(TM)",
        "trademark and carries no further terms.",
        "",
        "The texts were taken from two Debian packages whose packaging is under the MIT licence;",
        "their copyright files follow verbatim. Nothing of the packages' code is included.",
        "",
    ]
    for pkg, (deb, _, copyright_path) in dirs.items():
        out += ["-" * 77, "%s (%s): %s" % (pkg, PACKAGES[pkg][0], "/usr/share/doc/%s/copyright" % pkg),
                "-" * 77, ""]
        with open(copyright_path, encoding="utf-8") as f:
            out += [f.read().rstrip("\n"), ""]
    start, end = PG_START.search(moby_raw), PG_END.search(moby_raw)
    out += ["-" * 77,
            "Project Gutenberg header and licence of EBook #2701 (Moby Dick), as found in",
            "r-cran-tokenizers (R object `mobydick`); removed from the corpus documents.",
            "-" * 77, "",
            moby_raw[:start.end()].strip("\n"), "", "[... text of the novel ...]", "",
            moby_raw[end.start():].strip("\n"), ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/lnlens-corpus", help="scratch directory")
    ap.add_argument("--debs", help="directory that already holds the two .deb files")
    ap.add_argument("--out", default=os.path.join(REPO, "corpus"), help="output directory")
    ap.add_argument("--count-tokens", action="store_true",
                    help="also print GPT-2 token counts (needs transformers)")
    args = ap.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    dirs = fetch(args.workdir, os.path.abspath(args.debs) if args.debs else None)
    data = {pkg: r_lazyload(datadir) for pkg, (_, datadir, _) in dirs.items()}

    docs = []  # (book title, heading, text)
    moby_raw = None
    for pkg, obj, title, author, year in BOOKS:
        if obj == "mobydick":
            moby_raw = normalise(data[pkg][obj]["value"][0])
        for heading, text in chapters(book_text(data[pkg][obj], title), title):
            docs.append((title, heading, text))

    for title, heading, text in docs:
        if EOT in text or not text.strip():
            sys.exit("bad document: %s, %s" % (title, heading))
        if re.search(r"gutenberg", text, re.I):
            sys.exit("Project Gutenberg text left in %s, %s" % (title, heading))
        if "\r" in text or "_" in text or "\t" in text:
            sys.exit("unexpected character left in %s, %s" % (title, heading))

    splits = {"train": [], "heldout": []}
    manifest = ["index\tsplit\tbook\tchapter\tbytes"]
    for i, (title, heading, text) in enumerate(docs):
        split = "heldout" if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 else "train"
        splits[split].append(text)
        manifest.append("%d\t%s\t%s\t%s\t%d" % (i, split, title, heading, len(text.encode("utf-8"))))

    os.makedirs(args.out, exist_ok=True)

    def write(name, content):
        with open(os.path.join(args.out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(content)

    for split, texts in splits.items():
        write(split + ".txt", ("\n" + EOT + "\n").join(texts) + "\n")
    write("manifest.tsv", "\n".join(manifest) + "\n")
    write("LICENSE", licence_text(dirs, moby_raw))

    for pkg, (deb, datadir, _) in dirs.items():
        print("%s  %s" % (sha256(deb), os.path.basename(deb)))
        for name in sorted(PACKAGES[pkg][2]):
            print("%s  %s/%s" % (sha256(os.path.join(datadir, name)), PACKAGES[pkg][1], name))
    for split, texts in splits.items():
        path = os.path.join(args.out, split + ".txt")
        line = "%-8s %9d bytes  %4d documents" % (split, os.path.getsize(path), len(texts))
        if args.count_tokens:
            from transformers import GPT2TokenizerFast
            tok = GPT2TokenizerFast(vocab_file=os.path.join(REPO, "models/tokenizer/vocab.json"),
                                    merges_file=os.path.join(REPO, "models/tokenizer/merges.txt"))
            n = sum(len(tok(t)["input_ids"]) for t in texts)
            line += "  %8d GPT-2 tokens (+ %d separators = %d)" % (n, len(texts) - 1, n + len(texts) - 1)
        print(line)


if __name__ == "__main__":
    main()
