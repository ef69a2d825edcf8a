"""Token data on disk: data/<name>/{train,val}.bin (flat uint16 ids) and meta.json.

Batches are random windows of block_size tokens, as in nanoGPT, from a fresh np.memmap each time: a
long-lived memmap keeps every page it touched resident and grows without bound. meta.json (JSON, not
nanoGPT's pickle: reading a downloaded dataset must never run code) names the tokenizer and records
each split's token count, largest id, size and modification time, so a .bin that does not fit its
vocabulary is caught when the data is opened, not as an index error some steps into training.
"""

import contextlib
import hashlib
import json
import os

import numpy as np
import torch

from nanodfm.config import UsageError, output_file

SPLITS = ("train", "val")
CHUNK = 1 << 22  # the largest id of a file is found in chunks of this many ids
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prepare_hint(data_dir):
    """How to make the dataset: its own prepare script if it has one, else data/text/prepare.py."""
    script = os.path.join(data_dir, "prepare.py")
    if os.path.isfile(script):
        return f"run `python {os.path.relpath(script)}` first"
    return (f"prepare it first: `python {os.path.relpath(os.path.join(REPO_ROOT, 'data', 'text', 'prepare.py'))} "
            f"--input=YOUR_TEXT --name={os.path.basename(os.path.abspath(data_dir))}`")


def make_folder(path):
    """os.makedirs(path), or a UsageError naming it and why it cannot be."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{path} is a file, not a folder: pick another output folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write in folder {path}: Permission denied")
    return path


def write_split(path, chunks):
    """Write the uint16 arrays of chunks, one after another, to path.tmp (write_meta moves it to path):
    a failed write is a UsageError naming path and the cause, and leaves nothing behind."""
    with output_file(f"{path}.tmp", "wb", name=path) as f:
        for chunk in chunks:
            f.write(np.asarray(chunk, dtype=np.uint16).tobytes())


def largest_id(path):
    """The largest token id in a .bin file, read through once in chunks (0 if it is empty)."""
    ids = np.memmap(path, dtype=np.uint16, mode="r") if os.path.getsize(path) else []  # nothing to map in an empty file
    return max((int(ids[i:i + CHUNK].max()) for i in range(0, len(ids), CHUNK)), default=0)


def file_record(path):
    """What meta.json records of a token file: {"bytes", "mtime_ns", "sha256"}."""
    digest, st = hashlib.sha256(), os.stat(path)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}


def meta_problem(meta):
    """What keeps a meta from describing its tokens (None if nothing): one set of rules, applied where
    meta.json is written, where it is read and where a checkpoint's copy is loaded."""
    V = meta.get("vocab_size")
    if meta.get("tokenizer") not in ("char", "gpt2"):
        return f"its tokenizer is {meta.get('tokenizer')!r}, not char or gpt2"
    if not isinstance(V, int) or isinstance(V, bool) or V < (50257 if meta["tokenizer"] == "gpt2" else 1):
        return f"its vocab_size {V!r} is not a whole number of tokens that the {meta['tokenizer']} tokenizer fits"
    itos, stoi = meta.get("itos"), meta.get("stoi")
    if meta["tokenizer"] == "char" and not (isinstance(itos, dict) and isinstance(stoi, dict) and len(stoi) == V
                                            and sorted(itos) == list(range(V))
                                            and all(stoi.get(ch) == i for i, ch in itos.items())):
        return f"its char vocabulary (itos, stoi) is not {V} characters with an id each"
    return None


def write_meta(folder, meta):
    """Write folder/meta.json for its train and val splits (prepare scripts call this): a split is
    `<split>.bin.tmp` where write_split left it, moved into place here, else `<split>.bin`.

    meta: {"tokenizer": "char" | "gpt2", "vocab_size": V, ...}, to which each split's token count,
    largest id, size and modification time are added. An empty split, an id >= vocab_size or a failed
    write is a UsageError; then no meta.json is written and the splits write_split wrote are removed."""
    if meta_problem(meta):
        raise UsageError(f"not writing {folder}/meta.json: {meta_problem(meta)}")
    meta = {**meta, "tokens": {}, "max_token_id": {}, "files": {}}
    final = {split: os.path.join(folder, f"{split}.bin") for split in SPLITS}
    staged = {split: f"{path}.tmp" for split, path in final.items() if os.path.exists(f"{path}.tmp")}
    try:
        for split in SPLITS:
            path = staged.get(split, final[split])
            if os.path.getsize(path) == 0:
                raise UsageError(f"{final[split]} is empty: the corpus holds no text for the {split} split")
            largest = largest_id(path)
            if largest >= meta["vocab_size"]:
                raise UsageError(f"{final[split]} holds token id {largest}, outside the vocabulary of "
                                 f"{meta['vocab_size']}")
            meta["tokens"][split], meta["max_token_id"][split] = os.path.getsize(path) // 2, largest
        with contextlib.suppress(FileNotFoundError):  # no dataset until every file is in place: a kill
            os.remove(os.path.join(folder, "meta.json"))  # from here on leaves none, never a half-new one
        for split, tmp in staged.items():
            os.replace(tmp, final[split])
        for split in SPLITS:  # as the files are now: a later change to one is seen when it is opened
            meta["files"][split] = file_record(final[split])
        with output_file(os.path.join(folder, "meta.json")) as f:
            json.dump(meta, f, ensure_ascii=False, indent=1)
    except OSError as e:
        raise UsageError(f"cannot write in {folder}: {e.strerror}") from None
    finally:
        for tmp in staged.values():
            with contextlib.suppress(OSError):
                os.remove(tmp)


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
    if meta_problem(meta):
        raise UsageError(f"{path}: {meta_problem(meta)}: {_prepare_hint(data_dir)}")
    for split, largest in recorded.items():
        if largest >= vocab_size:
            raise UsageError(f"{path}: {split}.bin holds id {largest}, outside vocab_size {vocab_size}: "
                             f"{_prepare_hint(data_dir)}")
    return meta


def split_path(data_dir, split, vocab_size=None):
    """data_dir/<split>.bin, checked: present, a whole number of uint16 ids, not empty and, when
    vocab_size is given, every id inside the vocabulary (meta.json's record if the file is still the
    one recorded, else read through once)."""
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        raise UsageError(f"{path} not found: {_prepare_hint(data_dir)}")
    size = os.path.getsize(path)
    if size == 0 or size % 2:
        what = "empty" if size == 0 else f"{size} bytes, not a whole number of uint16 token ids"
        raise UsageError(f"{path} is {what}: {_prepare_hint(data_dir)}")
    if vocab_size is not None:
        meta, st = load_meta(data_dir), os.stat(path)
        record = (meta.get("files") or {}).get(split)  # as prepared: a later change to a file is seen here
        same = isinstance(record, dict) and [record.get(k) for k in ("bytes", "mtime_ns")] == [st.st_size,
                                                                                              st.st_mtime_ns]
        if isinstance(record, dict) and "sha256" in record and not same and (
                st.st_size != record["bytes"] or file_record(path)["sha256"] != record["sha256"]):
            raise UsageError(f"{path} is not the file {data_dir}/meta.json describes (another preparation, or changed "
                             f"since; a killed --overwrite leaves one): {_prepare_hint(data_dir)}")
        largest = int(meta["max_token_id"][split]) if same or "sha256" in (record or {}) else largest_id(path)
        if largest >= vocab_size:
            raise UsageError(f"{path} holds token id {largest}, outside the vocabulary of {vocab_size}: "
                             f"{_prepare_hint(data_dir)}")
    return path


def same_vocabulary(a, b):
    """Whether two metas (a dataset's, a checkpoint's) map ids to the same tokens, not only as many."""
    def tokens(meta):  # ids as text: a meta that went through JSON has string keys, one from load_meta ints
        itos = meta.get("itos", {})
        return meta.get("tokenizer"), meta.get("vocab_size"), sorted((str(i), c) for i, c in itos.items())
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
    """The folder a run reads (or a checkpoint was trained on), absolute: config's data_dir if set,
    else data/<dataset> in the repository."""
    return os.path.abspath(config.get("data_dir") or os.path.join(REPO_ROOT, "data", config["dataset"]))
