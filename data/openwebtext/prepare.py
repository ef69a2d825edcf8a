"""OpenWebText, or any local corpus, as GPT-2 tokens: train.bin, val.bin (uint16 ids) and meta.json.

    python data/openwebtext/prepare.py                      # OpenWebText via Hugging Face `datasets`
    python data/openwebtext/prepare.py --input corpus/      # each .txt file under a folder: one document
    python data/openwebtext/prepare.py --input docs.jsonl   # one JSON object a line, text in --text_field
    python data/openwebtext/prepare.py --input docs.txt     # any other file: one document a line

Each non-empty document is encoded as ordinary text (a literal "<|endoftext|>" stays text) and ended by
the id 50256. It goes to val when a keyed hash of its text (key: --seed) falls below --val_fraction, so the
split depends on neither --num_proc nor the order, and val never holds a copy of a train document.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # so `import nanodfm` works when run as a script

from data.text.prepare import read_files  # noqa: E402
from nanodfm.config import UsageError, output_file, run  # noqa: E402
from nanodfm.data import load_meta, make_folder, write_meta  # noqa: E402
from nanodfm.tokenizer import GPT2_EOT, gpt2_encoding  # noqa: E402


def documents_from_file(path: Path, text_field: str):
    """Each object's text_field in a .jsonl, each line of another file: streamed, as one file may not fit in memory."""
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if path.suffix != ".jsonl":
                    yield line.rstrip("\n")
                elif line.strip():
                    try:
                        text = json.loads(line)[text_field]
                    except (ValueError, KeyError, TypeError):
                        text = None
                    if not isinstance(text, str):
                        raise UsageError(f"{path} line {line_number} is not a JSON object with a string {text_field!r}")
                    yield text
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def batches(documents, max_chars: int):
    """The non-empty documents in lists of about max_chars characters."""
    batch, size = [], 0
    for doc in filter(None, documents):
        batch.append(doc)
        size += len(doc)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=None, help="local corpus: folder of .txt, .jsonl, or .txt file")
    parser.add_argument("--text_field", default="text", help="the text's key in each .jsonl object")
    parser.add_argument("--out_dir", default=str(HERE), help="where train.bin, val.bin, meta.json go")
    parser.add_argument("--val_fraction", type=float, default=0.0005)
    parser.add_argument("--seed", type=int, default=2357, help="keys the hash that picks the split")
    parser.add_argument("--num_proc", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="encoding threads")
    parser.add_argument("--batch_mb", type=float, default=4, help="text encoded at once: memory stays flat")
    args = parser.parse_args()
    if args.input is not None and not Path(args.input).exists():
        raise UsageError(f"--input {args.input} does not exist")
    if args.num_proc < 1 or not args.batch_mb > 0 or not 0 <= args.val_fraction < 1:
        raise UsageError(f"--num_proc must be a positive integer (got {args.num_proc}), --batch_mb above 0 (got "
                         f"{args.batch_mb}) and --val_fraction in [0, 1) (got {args.val_fraction})")
    out_dir = Path(make_folder(args.out_dir))
    enc = gpt2_encoding()
    if args.input is not None:
        path = Path(args.input)
        documents = read_files(path, "*.txt") if path.is_dir() else documents_from_file(path, args.text_field)
    else:
        try:
            from datasets import load_dataset
            dataset = load_dataset("openwebtext", split="train", num_proc=args.num_proc)
        except Exception as e:  # no `datasets` package, no network, an error of the hub
            why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            raise UsageError(f"cannot load openwebtext from the Hugging Face hub ({why}); pass --input PATH to use "
                             f"a local corpus (the hub needs `pip install datasets`)") from None
        documents = (text for rows in dataset.iter(batch_size=1000) for text in rows["text"])
    key, documents_in = str(args.seed).encode(), {"train": 0, "val": 0}
    with (output_file(out_dir / "train.bin.tmp", "wb", name=out_dir / "train.bin") as train_file,
          output_file(out_dir / "val.bin.tmp", "wb", name=out_dir / "val.bin") as val_file,
          tqdm(unit="B", unit_scale=True, desc="tokenizing") as bar):
        for batch in batches(documents, int(args.batch_mb * 2**20)):
            for doc, ids in zip(batch, enc.encode_ordinary_batch(batch, num_threads=args.num_proc)):
                text = doc.encode("utf-8")
                digest = hashlib.blake2b(text, digest_size=8, key=key).digest()
                split = "val" if int.from_bytes(digest, "little") / 2**64 < args.val_fraction else "train"
                (val_file if split == "val" else train_file).write(np.array(ids + [GPT2_EOT], np.uint16).tobytes())
                documents_in[split] += 1
                bar.update(len(text))
    try:  # moves the .bin.tmp files (staged as write_split stages them) into place, or removes them
        write_meta(out_dir, {"tokenizer": "gpt2", "vocab_size": GPT2_EOT + 1, "eot": GPT2_EOT})
    except UsageError as e:  # an empty split: val's, when the corpus is small for --val_fraction
        hint = "; raise --val_fraction" if documents_in["train"] and not documents_in["val"] else ""
        raise UsageError(f"{e}{hint}") from None
    tokens = load_meta(str(out_dir))["tokens"]
    print(", ".join(f"{s}: {n:,} documents, {tokens[s]:,} tokens" for s, n in documents_in.items()), f"-> {out_dir}")


if __name__ == "__main__":
    run(main, "no partial file is left; a dataset being replaced has no meta.json until it is prepared again")
