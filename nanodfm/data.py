"""Token data on disk: data/<name>/{train,val}.bin (flat uint16 ids) and meta.json.

Batches are random windows of block_size tokens, as in nanoGPT. A fresh np.memmap is opened for
every batch: a long-lived memmap keeps every page it ever touched resident and grows without bound.

meta.json says which tokenizer the ids belong to and records, per split, the number of tokens and
the largest id, so a .bin that does not fit its vocabulary is caught when the data is opened, not
as an index error some steps into training. It is JSON, not pickle: reading a downloaded dataset
must never run code (nanoGPT's meta.pkl would).
"""

import json
import os

import numpy as np
import torch

from nanodfm.config import UsageError

SPLITS = ("train", "val")
CHUNK = 1 << 20  # write_meta reads the ids in chunks of this many
SAMPLE = (64, 4096)  # split_path checks this many runs of so many ids, evenly spaced: cheap on a 10 GB file


def _prepare_hint(data_dir):
    """How to make the dataset: its own prepare script if it has one, else data/text/prepare.py."""
    script = os.path.join(data_dir, "prepare.py")
    if os.path.isfile(script):
        return f"run `python {os.path.relpath(script)}` first"
    text_script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "text", "prepare.py")
    return (f"prepare it first: `python {os.path.relpath(text_script)} --input=YOUR_TEXT "
            f"--name={os.path.basename(os.path.abspath(data_dir))}`")


def write_meta(folder, meta):
    """Write folder/meta.json for the train.bin and val.bin already in folder (prepare scripts call this).

    meta: {"tokenizer": "char" | "gpt2", "vocab_size": V, ...}. Adds each split's token count and
    largest id; an empty split or an id >= vocab_size is a UsageError and no meta.json is written."""
    meta = dict(meta)
    meta["tokens"], meta["max_token_id"] = {}, {}
    for split in SPLITS:
        path = os.path.join(folder, f"{split}.bin")
        ids = np.memmap(path, dtype=np.uint16, mode="r") if os.path.getsize(path) else np.zeros(0, np.uint16)
        if len(ids) == 0:
            raise UsageError(f"{path} is empty: the corpus holds no text for the {split} split")
        largest = max(int(ids[i:i + CHUNK].max()) for i in range(0, len(ids), CHUNK))
        if largest >= meta["vocab_size"]:
            raise UsageError(f"{path} holds token id {largest}, outside the vocabulary of {meta['vocab_size']}")
        meta["tokens"][split], meta["max_token_id"][split] = len(ids), largest
    tmp = os.path.join(folder, "meta.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    os.replace(tmp, os.path.join(folder, "meta.json"))


def load_meta(data_dir):
    """The dataset's meta.json: tokenizer kind, vocab_size and, per split, token count and largest id."""
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(data_dir, "meta.pkl")):
            raise UsageError(f"{data_dir} has an old meta.pkl, which is not read (unpickling can run code): "
                             f"{_prepare_hint(data_dir)} to write meta.json")
        raise UsageError(f"{path} not found: {_prepare_hint(data_dir)}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta["tokenizer"] == "char":  # JSON keys are strings: the ids come back as ints
            meta["itos"] = {int(i): ch for i, ch in meta["itos"].items()}
        vocab_size = int(meta["vocab_size"])
        recorded = {split: int(meta["max_token_id"][split]) for split in SPLITS}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{path} is not a dataset's meta.json: {_prepare_hint(data_dir)}") from None
    for split, largest in recorded.items():
        if largest >= vocab_size:
            raise UsageError(f"{path}: {split}.bin holds id {largest}, outside vocab_size {vocab_size}: "
                             f"{_prepare_hint(data_dir)}")
    return meta


def split_path(data_dir, split, vocab_size=None):
    """data_dir/<split>.bin, checked: present, a whole number of uint16 ids, not empty and, when
    vocab_size is given, the ids of an evenly spaced sample inside the vocabulary (meta.json's
    recorded largest id covers the rest, unless the file was replaced)."""
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        raise UsageError(f"{path} not found: {_prepare_hint(data_dir)}")
    size = os.path.getsize(path)
    if size == 0 or size % 2:
        what = "empty" if size == 0 else f"{size} bytes, not a whole number of uint16 token ids"
        raise UsageError(f"{path} is {what}: {_prepare_hint(data_dir)}")
    if vocab_size is not None:
        ids = np.memmap(path, dtype=np.uint16, mode="r")
        runs, run = SAMPLE
        largest = max(int(ids[i:i + run].max()) for i in np.linspace(0, max(0, len(ids) - run), runs, dtype=np.int64))
        if largest >= vocab_size:
            raise UsageError(f"{path} holds token id {largest}, outside the vocabulary of {vocab_size}: "
                             f"{_prepare_hint(data_dir)}")
    return path


def same_vocabulary(a, b):
    """Whether two metas (a dataset's, a checkpoint's) map ids to the same tokens, not only as many."""
    def tokens(meta):
        # ids as text: a meta that went through JSON has string keys, one loaded by load_meta ints
        return meta.get("tokenizer"), meta.get("vocab_size"), sorted((str(i), t) for i, t in meta.get("itos", {}).items())
    return tokens(a) == tokens(b)


def get_batch(path, batch_size, block_size, generator=None, device="cpu"):
    """Random windows (batch_size, block_size) of token ids from a .bin file, as int64."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    if len(data) < block_size:
        raise UsageError(f"{path} holds {len(data)} tokens, fewer than block_size={block_size}")
    starts = torch.randint(len(data) - block_size + 1, (batch_size,), generator=generator)
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in starts.tolist()])
    if torch.device(device).type == "cuda":  # pinned memory lets the copy overlap compute
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def dataset_folder(config):
    """The folder a run reads (or a checkpoint was trained on): config's data_dir if set, else
    data/<dataset> in the repository, as an absolute path."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.abspath(config.get("data_dir") or os.path.join(repo_root, "data", config["dataset"]))
