"""Tiny Shakespeare as GPT-2 BPE tokens: train.bin, val.bin (uint16 ids) and meta.json.

    python data/shakespeare/prepare.py [--input PATH] [--out_dir DIR]

Same text and source handling as data/shakespeare_char (--input, cached input.txt, download). The
first 90% of the characters is train and the last 10% val; each split is encoded on its own (the literal
text "<|endoftext|>" would stay plain text) and ends with one end-of-text token (50256).
Expected: train 301,967 tokens, val 36,060 tokens.
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT))  # so `import nanodfm` works when run as a script

from data.shakespeare_char.prepare import read_arguments, save_meta  # noqa: E402
from nanodfm.tokenizer import gpt2_encoding  # noqa: E402


def main():
    text, out_dir = read_arguments(__doc__.splitlines()[0], HERE)
    try:
        enc = gpt2_encoding()
    except RuntimeError as e:
        sys.exit(f"error: {e}")
    n_train_chars = int(0.9 * len(text))
    for split, part in (("train", text[:n_train_chars]), ("val", text[n_train_chars:])):
        ids = enc.encode_ordinary(part) + [enc.eot_token]
        np.array(ids, dtype=np.uint16).tofile(out_dir / f"{split}.bin")
        print(f"{split} {len(ids):,} tokens")
    meta = {"tokenizer": "gpt2", "vocab_size": enc.n_vocab, "eot": enc.eot_token}
    save_meta(out_dir, meta)
    print(f"{len(text):,} characters, vocab size {enc.n_vocab} -> {out_dir}")


if __name__ == "__main__":
    main()
