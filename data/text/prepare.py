"""Any text as a dataset: a file, or a folder of files, to data/<name>/{train,val}.bin and meta.json.

    python data/text/prepare.py --input=notes.txt                                  # characters -> data/notes
    python data/text/prepare.py --input=src/ --glob='*.py' --name=mycode           # every .py file under src/
    python data/text/prepare.py --input=book.txt --tokenizer=gpt2 --documents=paragraphs

A folder is read recursively in sorted order of the paths, each file exactly: those whose name matches
--glob, but not hidden ones, nor those that are not UTF-8 (counted). The last --val_fraction of the text is
val; for gpt2 the document at the cut is cut there, and every document ends with the end-of-text id 50256.
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


def read_files(path: Path, glob: str):
    """The text of a file, or of each file under a folder whose name matches glob (see the module's docstring)."""
    if path.is_file():
        try:
            yield path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        return
    skipped = 0
    for parts in sorted(p.relative_to(path).parts for p in path.rglob("*") if p.is_file()):
        if fnmatch.fnmatch(parts[-1], glob) and not any(part.startswith(".") for part in parts):
            try:
                yield path.joinpath(*parts).read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                skipped += 1
    if skipped:
        print(f"skipped {skipped} files that are not UTF-8 text")


def write_splits(documents, tokenizer: str, out_dir: Path, val_fraction: float):
    """The first (1 - val_fraction) of the documents' characters to train.bin, the rest to val.bin; returns the meta."""
    make_folder(out_dir)
    cut, seen, splits = int((1 - val_fraction) * sum(map(len, documents))), 0, {"train": [], "val": []}
    for doc in documents:
        splits["train"].append(doc[:max(0, cut - seen)])
        splits["val"].append(doc[max(0, cut - seen):])
        seen += len(doc)
    if tokenizer == "char":
        chars = sorted(set("".join(documents)))
        if len(chars) > 2**16:
            raise UsageError(f"the text has {len(chars):,} distinct characters, more than uint16 ids can hold")
        for split, docs in splits.items():  # each character's id is its rank in chars
            codes = np.frombuffer("".join(docs).encode("utf-32-le"), dtype=np.uint32)  # one code point per character
            write_split(out_dir / f"{split}.bin", [np.searchsorted(np.array([ord(c) for c in chars]), codes)])
        return {"tokenizer": "char", "vocab_size": len(chars), "itos": dict(enumerate(chars)),
                "stoi": {c: i for i, c in enumerate(chars)}}
    enc = gpt2_encoding()
    for split, docs in splits.items():  # 1,024 documents at a time on tiktoken's threads, never all the ids at once
        batches = (enc.encode_ordinary_batch([d for d in docs[i:i + 1024] if d]) for i in range(0, len(docs), 1024))
        write_split(out_dir / f"{split}.bin", (ids + [enc.eot_token] for batch in batches for ids in batch))
    return {"tokenizer": "gpt2", "vocab_size": enc.n_vocab, "eot": enc.eot_token}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="a text file, or a folder of them")
    parser.add_argument("--name", default=None, help="data/<name>, train.py --dataset=<name> (default: the input's)")
    parser.add_argument("--tokenizer", choices=("char", "gpt2"), default="char", help="default: char")
    parser.add_argument("--documents", choices=("files", "paragraphs", "lines"), default="files",
                        help="gpt2: one document per file (default), paragraph between blank lines or non-empty line")
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
    if not args.overwrite and (out_dir / "prepare.py").exists():
        raise UsageError(f"{out_dir} belongs to the dataset its prepare.py writes: choose another --name")
    if not args.overwrite and (out_dir / "meta.json").exists():  # the same input again (a re-run) may replace it
        try:
            prepared_from = load_meta(str(out_dir)).get("prepared_from")
        except UsageError:
            prepared_from = None
        if prepared_from != str(source):
            raise UsageError(f"{out_dir} holds a dataset prepared from {prepared_from or 'another input'}: "
                             f"choose another --name, or pass --overwrite to replace it")
    texts = list(read_files(source, args.glob))
    if not any(texts):
        where = f" in files matching {args.glob!r}" if source.is_dir() else ""
        raise UsageError(f"{args.input} holds no text{where}")
    documents, what = texts, f"{len(texts):,} files" if source.is_dir() else "1 file"
    if args.tokenizer == "gpt2":
        if args.documents == "paragraphs":  # cut at one or more blank lines
            documents = [p.strip("\r\n") for text in texts for p in re.split(r"\r?\n(?:[ \t]*\r?\n)+", text)]
        elif args.documents == "lines":
            documents = [line for text in texts for line in text.splitlines()]
        documents = [doc for doc in documents if doc.strip()]
        what = f"{len(documents):,} documents ({args.documents})"
    meta = write_splits(documents, args.tokenizer, out_dir, args.val_fraction)
    write_meta(out_dir, {**meta, "prepared_from": str(source)})
    tokens = load_meta(str(out_dir))["tokens"]
    print(f"{what}, {sum(map(len, texts)):,} characters, vocab size {meta['vocab_size']:,}: "
          f"train {tokens['train']:,} tokens, val {tokens['val']:,} tokens -> {out_dir}")
    dataset = f"--data_dir={out_dir}" if args.out_dir else f"--dataset={name}"
    smaller = " --batch_size=8" if args.tokenizer == "gpt2" else ""  # GPT-2's 50,257-way output is most of the work
    print(f"next (docs/training.md, 'Your own text'): python train.py config/shakespeare_char_cpu.py {dataset} "
          f"--out_dir=out-{name.replace('_', '-')}{smaller}")


if __name__ == "__main__":
    run(main, "no partial file is left; a dataset being replaced has no meta.json until it is prepared again")
