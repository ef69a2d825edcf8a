"""Token data on disk: data/<name>/{train,val}.bin (flat uint16 ids) and meta.pkl.

Batches are random windows of block_size tokens, as in nanoGPT. A fresh np.memmap is opened for
every batch: a long-lived memmap keeps every page it ever touched resident and grows without bound.
"""

import os
import pickle

import numpy as np
import torch

from nanodfm.config import UsageError


def _prepare_hint(data_dir):
    return f"run `python {os.path.relpath(os.path.join(data_dir, 'prepare.py'))}` first"


def load_meta(data_dir):
    """The dataset's meta.pkl: tokenizer kind and vocab_size (see data/*/prepare.py)."""
    path = os.path.join(data_dir, "meta.pkl")
    if not os.path.isfile(path):
        raise UsageError(f"{path} not found: {_prepare_hint(data_dir)}")
    with open(path, "rb") as f:
        return pickle.load(f)


def split_path(data_dir, split):
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        raise UsageError(f"{path} not found: {_prepare_hint(data_dir)}")
    return path


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
