"""Any text as a dataset: a file, or a folder of files, to data/<name>/{train,val}.bin and meta.json.

    python data/text/prepare.py --input=notes.txt                                  # characters -> data/notes
    python data/text/prepare.py --input=src/ --glob='*.py' --name=mycode           # every .py file under src/
    python data/text/prepare.py --input=book.txt --tokenizer=gpt2 --documents=paragraphs

--tokenizer=char (the default): one id per distinct character, the vocabulary the text's sorted characters.
--tokenizer=gpt2: GPT-2's BPE, every document (--documents: each file, each paragraph between blank lines,
or each non-empty line) followed by the end-of-text id 50256, so a model learns where documents end.

A folder is read recursively in sorted order of the paths, taking the files whose name matches --glob
(hidden ones skipped, and those that are not UTF-8 text skipped and counted), each exactly, line endings
kept. The last --val_fraction of the characters, in reading order, is val (with a folder, the last
files); for gpt2 the document at the cut is cut there, so each split ends with an end-of-text token. A
folder that holds another dataset (a prepare script of its own, or data prepared from another input) is
never overwritten unless --overwrite is given.
"""

import argparse
import fnmatch
import re
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO_ROOT))  # so `import nanodfm` works when run as a script

from nanodfm.config import UsageError, run  # noqa: E402
from nanodfm.data import load_meta, make_folder, write_meta, write_split  # noqa: E402
from nanodfm.tokenizer import gpt2_encoding  # noqa: E402

BLANK_LINES = re.compile(r"\r?\n(?:[ \t]*\r?\n)+")  # a paragraph break: one or more blank lines


def read_text(path: Path) -> str:
    """The file's text exactly, line endings kept; a one-line error if it is not UTF-8."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_files(path: Path, glob: str):
    """The text of a file, or of each file under a folder whose name matches glob (see the module's docstring)."""
    if path.is_file():
        yield read_text(path)
        return
    skipped = 0
    for parts in sorted(p.relative_to(path).parts for p in path.rglob("*") if p.is_file()):
        if fnmatch.fnmatch(parts[-1], glob) and not any(part.startswith(".") for part in parts):
            try:
                yield read_text(path.joinpath(*parts))
            except UsageError:
                skipped += 1
    if skipped:
        print(f"skipped {skipped} files that are not UTF-8 text")


def documents_of(texts, mode):
    """The documents of --documents=mode, empty ones dropped."""
    if mode == "files":
        docs = texts
    elif mode == "paragraphs":
        docs = [p.strip("\r\n") for text in texts for p in BLANK_LINES.split(text)]
    else:
        docs = [line for text in texts for line in text.splitlines()]
    return [d for d in docs if d.strip()]


def write_char(text: str, out_dir: Path, val_fraction: float):
    """Character ids of text to out_dir: the first (1 - val_fraction) of them train, the rest val.
    Returns the meta for write_meta."""
    chars = sorted(set(text))
    if len(chars) > 2**16:
        raise UsageError(f"the text has {len(chars):,} distinct characters, more than uint16 ids can hold")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per character
    ids = np.searchsorted(np.array([ord(c) for c in chars], dtype=np.uint32), codes)  # its rank in chars
    n_train = int((1 - val_fraction) * len(ids))
    write_split(out_dir / "train.bin", [ids[:n_train]])  # beside the final files: write_meta puts them in place
    write_split(out_dir / "val.bin", [ids[n_train:]])
    return {"tokenizer": "char", "vocab_size": len(chars), "itos": dict(enumerate(chars)),
            "stoi": {c: i for i, c in enumerate(chars)}}


def write_gpt2(documents, out_dir: Path, val_fraction: float):
    """GPT-2 ids of the documents to out_dir, each followed by end-of-text; the document at the cut
    (1 - val_fraction of the characters) is cut there. Returns the meta for write_meta."""
    enc = gpt2_encoding()
    cut = int((1 - val_fraction) * sum(map(len, documents)))
    splits, seen = {"train": [], "val": []}, 0
    for doc in documents:
        head = doc[:max(0, cut - seen)]
        tail = doc[len(head):]
        splits["train"] += [head] if head else []
        splits["val"] += [tail] if tail else []
        seen += len(doc)
    for split, docs in splits.items():  # in batches: a Python list of every id would not fit
        write_split(out_dir / f"{split}.bin", (ids + [enc.eot_token] for start in range(0, len(docs), 1024)
                                               for ids in enc.encode_ordinary_batch(docs[start:start + 1024])))
    return {"tokenizer": "gpt2", "vocab_size": enc.n_vocab, "eot": enc.eot_token}


def check_out_dir(out_dir: Path, source: str, overwrite: bool):
    """Refuse to write over another dataset: one with its own prepare script, or one prepared from
    another input. The same input again (a re-run) may replace its own files."""
    if not overwrite and (out_dir / "prepare.py").exists():
        raise UsageError(f"{out_dir} belongs to the dataset its prepare.py writes: choose another --name")
    if not overwrite and (out_dir / "meta.json").exists():
        try:
            prepared_from = load_meta(str(out_dir)).get("prepared_from")
        except UsageError:
            prepared_from = None
        if prepared_from != source:
            raise UsageError(f"{out_dir} holds a dataset prepared from {prepared_from or 'another input'}: "
                             f"choose another --name, or pass --overwrite to replace it")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="a text file, or a folder of them")
    parser.add_argument("--name", default=None, help="data/<name>, train.py --dataset=<name> (default: the input's)")
    parser.add_argument("--tokenizer", choices=("char", "gpt2"), default="char", help="default: char")
    parser.add_argument("--documents", choices=("files", "paragraphs", "lines"), default="files",
                        help="gpt2: one document, ended by end-of-text, per file (default), paragraph or line")
    parser.add_argument("--glob", default="*", help="in a folder, read the files whose name matches (default: all)")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="the share of the text held out (default 0.1)")
    parser.add_argument("--out_dir", default=None, help="write here instead of data/<name>")
    parser.add_argument("--overwrite", action="store_true", help="replace another dataset in the output folder")
    args = parser.parse_args(argv)

    source = Path(args.input).resolve()
    if not source.exists():
        raise UsageError(f"--input {args.input} does not exist")
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val_fraction must be between 0 and 1, got {args.val_fraction}")
    name = args.name or source.name.split(".")[0]
    if not re.fullmatch(r"[\w-][\w.-]*", name):  # a plain folder name: not . or .., nothing hidden
        raise UsageError(f"--name {name!r} is not a plain folder name (letters, digits, '_', '-', '.' not first)")
    out_dir = Path(args.out_dir) if args.out_dir else REPO_ROOT / "data" / name
    check_out_dir(out_dir, str(source), args.overwrite)

    texts = list(read_files(source, args.glob))
    if not any(texts):
        where = f" in files matching {args.glob!r}" if source.is_dir() else ""
        raise UsageError(f"{args.input} holds no text{where}")
    make_folder(out_dir)
    if args.tokenizer == "char":
        meta = write_char("".join(texts), out_dir, args.val_fraction)
        what = f"{len(texts):,} files" if source.is_dir() else "1 file"
    else:
        documents = documents_of(texts, args.documents)
        meta = write_gpt2(documents, out_dir, args.val_fraction)
        what = f"{len(documents):,} documents ({args.documents})"
    write_meta(out_dir, {**meta, "prepared_from": str(source)})
    meta = load_meta(str(out_dir))
    print(f"{what}, {sum(map(len, texts)):,} characters, vocab size {meta['vocab_size']:,}: "
          f"train {meta['tokens']['train']:,} tokens, val {meta['tokens']['val']:,} tokens -> {out_dir}")
    dataset = f"--data_dir={out_dir}" if args.out_dir else f"--dataset={name}"
    smaller = " --batch_size=8" if args.tokenizer == "gpt2" else ""  # GPT-2's 50,257-way output is most of the work
    print(f"next (docs/training.md, 'Your own text'): python train.py config/shakespeare_char_cpu.py {dataset} "
          f"--out_dir=out-{name.replace('_', '-')}{smaller}")


if __name__ == "__main__":
    run(main, "no partial file is left; a dataset being replaced has no meta.json until it is prepared again")
