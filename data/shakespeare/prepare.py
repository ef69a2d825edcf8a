"""Tiny Shakespeare as GPT-2 BPE tokens: train.bin, val.bin (uint16 ids) and meta.json.

    python data/shakespeare/prepare.py [--input PATH] [--out_dir DIR]

Same text and source handling as data/shakespeare_char (--input, cached input.txt, download); the
encoding and split are data/text/prepare.py's for one file, one document: the first 90% of the
characters is train and the last 10% val; each split is encoded on its own (the literal text
"<|endoftext|>" would stay plain text) and ends with one end-of-text token (50256).
Expected: train 301,967 tokens, val 36,060 tokens.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT))  # so `import nanodfm` works when run as a script

from data.shakespeare_char.prepare import read_arguments, save_meta  # noqa: E402
from data.text.prepare import write_gpt2  # noqa: E402
from nanodfm.config import UsageError  # noqa: E402


def main():
    text, out_dir = read_arguments(__doc__.splitlines()[0], HERE)
    try:
        meta = write_gpt2([text], out_dir, val_fraction=0.1)
    except (RuntimeError, UsageError) as e:  # GPT-2's BPE files cannot be had, or a write failed
        sys.exit(f"error: {e}")
    save_meta(out_dir, meta)
    for split in ("train", "val"):
        print(f"{split} {(out_dir / f'{split}.bin').stat().st_size // 2:,} tokens")
    print(f"{len(text):,} characters, vocab size {meta['vocab_size']} -> {out_dir}")


if __name__ == "__main__":
    main()
