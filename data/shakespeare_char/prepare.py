"""Tiny Shakespeare as characters: train.bin, val.bin (uint16 ids) and meta.json.

    python data/shakespeare_char/prepare.py [--input PATH] [--out_dir DIR]

The text is the canonical Tiny Shakespeare: --input, else input.txt next to this script, else
downloaded there (offline, pass --input PATH to a local copy). The encoding and split are
data/text/prepare.py's for one file: the vocabulary is the sorted set of characters; the first 90%
of the text is train and the last 10% val, split on the id stream so the two files add up to the
whole text. Expected: vocab 65, train 1,003,854 tokens, val 111,540 tokens.
For your own text, use data/text/prepare.py.
"""

import argparse
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # so `import nanodfm` works when run as a script

from data.text.prepare import write_splits  # noqa: E402
from nanodfm.config import UsageError, run  # noqa: E402
from nanodfm.data import load_meta, write_meta  # noqa: E402

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def tiny_shakespeare_text(input_path, cache_dir):
    """The Tiny Shakespeare text from --input, a cached download or a fresh download."""
    if input_path is not None and not Path(input_path).is_file():
        raise UsageError(f"--input {input_path} is not a file")
    path = Path(input_path) if input_path is not None else cache_dir / "input.txt"
    if not path.is_file():
        try:
            with urllib.request.urlopen(URL, timeout=30) as response:
                path.write_text(response.read().decode("utf-8"), encoding="utf-8")
        except OSError as e:  # URLError and timeouts are OSErrors
            raise UsageError(f"could not download Tiny Shakespeare ({e}); pass --input PATH to a local copy") from None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def prepare(doc, here, tokenizer):
    """The main of the Tiny Shakespeare scripts (this one's and data/shakespeare's): the text, from
    --input or beside the script (here), to --out_dir as characters or GPT-2 tokens, one document."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--input", default=None, help="local copy of the text (skips the download)")
    parser.add_argument("--out_dir", default=str(here), help="where train.bin, val.bin, meta.json go")
    args = parser.parse_args()
    text = tiny_shakespeare_text(args.input, here)
    if not text:
        raise UsageError(f"{args.input or here / 'input.txt'} is empty: there is no text to prepare")
    out_dir = Path(args.out_dir)
    write_meta(out_dir, write_splits([text], tokenizer, out_dir, 0.1))
    meta = load_meta(str(out_dir))
    print(f"{len(text):,} characters, vocab size {meta['vocab_size']:,}: train {meta['tokens']['train']:,} tokens, "
          f"val {meta['tokens']['val']:,} tokens -> {out_dir}")


if __name__ == "__main__":
    run(lambda: prepare(__doc__, HERE,
        "char"), "no partial file is left; a dataset being replaced has no meta.json until it is prepared again")
