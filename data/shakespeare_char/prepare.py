"""Tiny Shakespeare as characters: train.bin, val.bin (uint16 ids) and meta.json.

    python data/shakespeare_char/prepare.py [--input PATH] [--out_dir DIR]

The text is the canonical Tiny Shakespeare. Without --input it is read from input.txt next to this
script, else downloaded there (offline, pass --input PATH to a local copy). The encoding and split are
data/text/prepare.py's for one file: the vocabulary is the sorted set of characters (65 of them); the
first 90% of the text is train and the last 10% val, split on the id stream so the two files add up
to the whole text. Expected: vocab 65, train 1,003,854 tokens, val 111,540 tokens.
For your own text, use data/text/prepare.py.
"""

import argparse
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT))  # so `import nanodfm` works when run as a script

from data.text.prepare import write_char  # noqa: E402
from nanodfm.config import UsageError  # noqa: E402
from nanodfm.data import make_folder, write_meta  # noqa: E402

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def tiny_shakespeare_text(input_path: str | None, cache_dir: Path) -> str:
    """The Tiny Shakespeare text from --input, a cached download or a fresh download."""
    if input_path is not None:
        if not Path(input_path).is_file():
            sys.exit(f"error: --input {input_path} is not a file")
        try:
            return Path(input_path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            sys.exit(f"error: {input_path} is not UTF-8 text ({e.reason} at byte {e.start})")
    cached = cache_dir / "input.txt"
    if not cached.is_file():
        try:
            with urllib.request.urlopen(URL, timeout=30) as response:
                text = response.read().decode("utf-8")
            cached.write_text(text, encoding="utf-8")
        except OSError as e:  # URLError and timeouts are OSErrors
            sys.exit(f"error: could not download Tiny Shakespeare ({e}); pass --input PATH to a local copy")
    return cached.read_text(encoding="utf-8")


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
    text = tiny_shakespeare_text(args.input, default_out_dir)
    if not text:
        sys.exit(f"error: {args.input or default_out_dir / 'input.txt'} is empty: there is no text to prepare")
    try:
        make_folder(out_dir)
    except UsageError as e:
        sys.exit(f"error: {e}")
    return text, out_dir


def main():
    text, out_dir = read_arguments(__doc__.splitlines()[0], HERE)
    try:
        meta = write_char(text, out_dir, val_fraction=0.1)
    except UsageError as e:  # a write that failed
        sys.exit(f"error: {e}")
    save_meta(out_dir, meta)
    ids = {split: (out_dir / f"{split}.bin").stat().st_size // 2 for split in ("train", "val")}
    print(f"{len(text):,} characters, vocab size {len(set(text))}")
    print(f"train {ids['train']:,} tokens, val {ids['val']:,} tokens -> {out_dir}")


if __name__ == "__main__":
    main()
