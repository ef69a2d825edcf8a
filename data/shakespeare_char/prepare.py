"""Tiny Shakespeare as characters: train.bin, val.bin (uint16 ids) and meta.json.

    python data/shakespeare_char/prepare.py [--input PATH] [--out_dir DIR]

The text is the canonical Tiny Shakespeare. Without --input it is read from input.txt next to this
script, else downloaded there (offline, pass --input PATH to a local copy).
The vocabulary is the sorted set of characters (65 of them); the first 90% of the text is train and the
last 10% val, split on the id stream so the two files add up to the whole text.
Expected: vocab 65, train 1,003,854 tokens, val 111,540 tokens.
"""

import argparse
import sys
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT))  # so `import nanodfm` works when run as a script

from nanodfm.config import UsageError  # noqa: E402
from nanodfm.data import write_meta  # noqa: E402

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def tiny_shakespeare_text(input_path: str | None, cache_dir: Path) -> str:
    """The Tiny Shakespeare text from --input, a cached download or a fresh download."""
    if input_path is not None:
        if not Path(input_path).is_file():
            sys.exit(f"error: --input {input_path} is not a file")
        return Path(input_path).read_text(encoding="utf-8")
    cached = cache_dir / "input.txt"
    if not cached.is_file():
        try:
            with urllib.request.urlopen(URL, timeout=30) as response:
                text = response.read().decode("utf-8")
            cached.write_text(text, encoding="utf-8")
        except OSError as e:  # URLError and timeouts are OSErrors
            sys.exit(f"error: could not download Tiny Shakespeare ({e}); pass --input PATH to a local copy")
    return cached.read_text(encoding="utf-8")


def write_split(ids, path: Path) -> None:
    np.array(ids, dtype=np.uint16).tofile(path)


def save_meta(out_dir, meta):
    """meta.json beside the .bin files; an empty split or an id outside the vocabulary is a one-line error."""
    try:
        write_meta(out_dir, meta)
    except UsageError as e:
        sys.exit(f"error: {e}")


def read_arguments(description, default_out_dir):
    """--input and --out_dir, shared by the Shakespeare prepare scripts; returns (text, out_dir)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", default=None, help="local copy of the text (skips the download)")
    parser.add_argument("--out_dir", default=str(default_out_dir), help="where train.bin, val.bin, meta.json go")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = tiny_shakespeare_text(args.input, default_out_dir)
    if not text:
        sys.exit(f"error: {args.input or default_out_dir / 'input.txt'} is empty: there is no text to prepare")
    return text, out_dir


def main():
    text, out_dir = read_arguments(__doc__.splitlines()[0], HERE)
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    ids = [stoi[ch] for ch in text]
    n_train = int(0.9 * len(ids))
    write_split(ids[:n_train], out_dir / "train.bin")
    write_split(ids[n_train:], out_dir / "val.bin")
    meta = {"tokenizer": "char", "vocab_size": len(chars), "itos": itos, "stoi": stoi}
    save_meta(out_dir, meta)
    print(f"{len(text):,} characters, vocab size {len(chars)}")
    print(f"train {n_train:,} tokens, val {len(ids) - n_train:,} tokens -> {out_dir}")


if __name__ == "__main__":
    main()
