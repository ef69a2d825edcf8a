"""OpenWebText, or any local corpus, as GPT-2 tokens: train.bin, val.bin (uint16 ids) and meta.json.

    python data/openwebtext/prepare.py                      # OpenWebText via Hugging Face `datasets`
    python data/openwebtext/prepare.py --input corpus/      # a folder of .txt files, one document each
    python data/openwebtext/prepare.py --input docs.jsonl   # one JSON object a line, text in --text_field
    python data/openwebtext/prepare.py --input docs.txt     # any other file: one document a line

For web-scale corpora of many documents (streamed, in parallel, a small hashed val split); for a book,
notes or source code, data/text/prepare.py --tokenizer=gpt2 holds out the last tenth of the text.

Folders are walked recursively in sorted order and each .txt file is one document, read as UTF-8
exactly (line endings kept). Empty documents are skipped. Each document is encoded as ordinary text
(a literal "<|endoftext|>" inside it stays text) and followed by the end-of-text id 50256, so cutting a
.bin at 50256 gives back the documents, in input order within each split.

A document goes to val when a keyed hash of its text (key: --seed) falls below --val_fraction: the
split does not depend on --num_proc or document order, and duplicates share one, so val never holds a
copy of a train document. Memory stays flat: documents are streamed to --num_proc workers in batches of
about --batch_mb of text (Pool.imap alone would read ahead the whole corpus), and each batch's tokens
are appended to the .bin files before the next batch is read. The .bin files appear when complete.
"""

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # so `import nanodfm` works when run as a script

from nanodfm.config import UsageError, run  # noqa: E402
from nanodfm.data import make_folder, write_meta  # noqa: E402
from nanodfm.tokenizer import GPT2_EOT, gpt2_encoding  # noqa: E402


def documents_from_path(path: Path, text_field: str):
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()  # os.walk visits dirs in this list's order
            for name in sorted(f for f in files if f.endswith(".txt")):
                yield from read_utf8(Path(root) / name, whole=True)
    elif path.suffix == ".jsonl":
        for line_number, line in enumerate(read_utf8(path, whole=False), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[text_field]
            except (ValueError, KeyError, TypeError):
                text = None
            if not isinstance(text, str):
                raise UsageError(f"{path} line {line_number} is not a JSON object with a string {text_field!r}")
            yield text
    else:
        for line in read_utf8(path, whole=False):
            yield line.rstrip("\n")


def read_utf8(path: Path, whole: bool):
    """The file's text at once (exactly, line endings kept) or line by line; one-line error if not UTF-8."""
    try:
        with open(path, encoding="utf-8", newline="" if whole else None) as f:
            if whole:
                yield f.read()
            else:
                yield from f
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def documents_from_hub(num_proc: int):
    try:
        from datasets import load_dataset
    except ImportError:
        raise UsageError("the `datasets` package is not installed: pip install datasets, or pass --input PATH to "
                         "use a local corpus") from None
    try:
        dataset = load_dataset("openwebtext", split="train", num_proc=num_proc)
    except Exception as e:
        first_line = (str(e).splitlines() or [""])[0]
        raise UsageError(f"cannot load openwebtext from the Hugging Face hub ({type(e).__name__}: {first_line}); "
                         f"pass --input PATH to use a local corpus") from None
    return (text for rows in dataset.iter(batch_size=1000) for text in rows["text"])


def batches(documents, max_chars: int):
    batch, size = [], 0
    for doc in filter(None, documents):  # an empty document is skipped
        batch.append(doc)
        size += len(doc)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def tokenize(doc: str, key: bytes, val_fraction: float):
    """(goes to val?, uint16 ids ending in EOT, UTF-8 bytes read) for one document; runs in a worker."""
    data = doc.encode("utf-8")
    digest = hashlib.blake2b(data, digest_size=8, key=key).digest()
    is_val = int.from_bytes(digest, "little") / 2**64 < val_fraction
    ids = gpt2_encoding().encode_ordinary(doc)
    ids.append(GPT2_EOT)
    return is_val, np.array(ids, dtype=np.uint16), len(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=None, help="local corpus: folder of .txt, .jsonl, or .txt file")
    parser.add_argument("--text_field", default="text", help="the text's key in each .jsonl object")
    parser.add_argument("--out_dir", default=str(HERE), help="where train.bin, val.bin, meta.json go")
    parser.add_argument("--val_fraction", type=float, default=0.0005)
    parser.add_argument("--seed", type=int, default=2357, help="keys the hash that picks the split")
    parser.add_argument("--num_proc", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--batch_mb", type=float, default=16, help="text handed to the workers at once")
    args = parser.parse_args()

    if args.input is not None and not Path(args.input).exists():
        raise UsageError(f"--input {args.input} does not exist")
    if args.num_proc < 1 or not args.batch_mb > 0 or not 0 <= args.val_fraction < 1:
        raise UsageError(f"--num_proc must be a positive integer (got {args.num_proc}), --batch_mb above 0 (got "
                         f"{args.batch_mb}) and --val_fraction in [0, 1) (got {args.val_fraction})")
    out_dir = Path(make_folder(args.out_dir))
    try:
        gpt2_encoding()  # fail here, with the one-line reason, rather than in every worker
    except RuntimeError as e:
        raise UsageError(str(e)) from None
    if args.input is not None:
        documents = documents_from_path(Path(args.input), args.text_field)
    else:
        documents = documents_from_hub(args.num_proc)

    tmp_paths = {split: out_dir / f"{split}.bin.tmp" for split in ("train", "val")}
    counts = {split: {"documents": 0, "tokens": 0} for split in ("train", "val")}
    work = functools.partial(tokenize, key=str(args.seed).encode(), val_fraction=args.val_fraction)
    start, bytes_read = time.time(), 0
    try:
        with (open(tmp_paths["train"], "wb") as train_file, open(tmp_paths["val"], "wb") as val_file,
              Pool(args.num_proc) as pool, tqdm(unit="B", unit_scale=True, desc="tokenizing") as bar):
            for batch in batches(documents, int(args.batch_mb * 2**20)):
                chunksize = max(1, len(batch) // (16 * args.num_proc))
                for is_val, ids, n_bytes in pool.imap(work, batch, chunksize):
                    (val_file if is_val else train_file).write(ids.tobytes())
                    split = counts["val" if is_val else "train"]
                    split["documents"] += 1
                    split["tokens"] += len(ids)
                    bytes_read += n_bytes
                    bar.update(n_bytes)
    except BaseException as e:  # a half-written .bin must not look like a finished one
        for path in tmp_paths.values():
            path.unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full disk, a folder made read-only
            raise UsageError(f"cannot write {e.filename or out_dir}: {e.strerror}; nothing was kept") from None
        raise
    try:  # moves the .bin.tmp files into place, or removes them
        write_meta(out_dir, {"tokenizer": "gpt2", "vocab_size": GPT2_EOT + 1, "eot": GPT2_EOT})
    except UsageError as e:  # an empty split
        only_val_empty = counts["train"]["documents"] and not counts["val"]["documents"]
        raise UsageError(f"{e}{'; raise --val_fraction' if only_val_empty else ''}") from None

    seconds = time.time() - start
    for split, c in counts.items():
        print(f"{split}: {c['documents']:,} documents, {c['tokens']:,} tokens")
    print(f"{bytes_read / 1e6:.1f} MB of text in {seconds:.1f} s ({bytes_read / 1e6 / seconds:.2f} MB/s) -> {out_dir}")


if __name__ == "__main__":
    run(main, "no partial file is left; a dataset being replaced has no meta.json until it is prepared again")
