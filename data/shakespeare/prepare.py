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
sys.path.insert(0, str(HERE.parent.parent))  # so `import nanodfm` works when run as a script

from data.shakespeare_char.prepare import prepare  # noqa: E402
from nanodfm.config import run  # noqa: E402

if __name__ == "__main__":
    run(lambda: prepare(__doc__, HERE,
        "gpt2"), "no partial file is left; a dataset being replaced has no meta.json until it is prepared again")
