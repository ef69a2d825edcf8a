"""Checkpoints and the out_dir that holds them: written atomically, read without running code.

A checkpoint is one torch.save'd dict: the model's kind ("dfm", "ar" or "student") and ModelConfig,
its weights, and, for training to resume exactly, the optimiser, the EMA weights (a student's), the
step, the training config and every RNG state: tensors and plain values only, so it loads with
torch.load(weights_only=True) and a file that needs anything else unpickled is refused. Weights that
are not finite are never written. Two training runs never share an out_dir (lock_out_dir).
"""

import dataclasses
import glob
import hashlib
import os
import pickle
import shutil

import torch

from nanodfm.config import UsageError, output_file
from nanodfm.data import meta_problem
from nanodfm.model import ModelConfig, Transformer

FORMAT = "nanodfm-2"  # 2: loads with weights_only=True (1 held numpy RNG state, which needs unpickling)
KINDS = ("dfm", "ar", "student")
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "n_cond", "dropout")  # a resumed or distilled model keeps its own
PATH_KEYS = ("source", "kappa_power")  # and the probability path it was trained on


def non_finite(state):
    """The first weight (of "model" or "ema") that holds NaN or infinity, as "name (key)", or None."""
    for name in ("model", "ema"):
        bad = [k for k, v in (state.get(name) or {}).items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            return f"{name} ({bad[0]})"
    return None


def checksum(state):
    """sha256 of every tensor in a checkpoint (weights, EMA, optimiser and RNG states), in a fixed order,
    written beside them: torch.load does not check the zip's own checksums, so flipped bytes would
    otherwise load as other numbers."""
    digest = hashlib.sha256()
    def walk(value, where):
        if isinstance(value, torch.Tensor):
            digest.update(where.encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, (dict, list, tuple)):
            for key in sorted(value, key=str) if isinstance(value, dict) else range(len(value)):
                walk(value[key], f"{where}.{key}")
    walk({k: v for k, v in state.items() if k not in ("checksum", "format", "loaded_from")}, "")
    return digest.hexdigest()


def save(path, state):
    """torch.save(state) to path atomically, with its checksum; a UsageError, the previous file left as
    it was, if it cannot be written (full disk, read-only folder) or its weights hold NaN or infinity."""
    if bad := non_finite(state):
        raise UsageError(f"not writing {path}: the weights hold NaN or infinity: {bad}")
    with output_file(path, "wb", name=f"checkpoint {path}") as f:
        torch.save({"format": FORMAT, **state, "checksum": checksum(state)}, f)


def copy(src, dst):
    """dst becomes the file src is now, atomically: a hard link where the filesystem has them (src is
    replaced, never rewritten in place, so the link keeps what it holds now), else a copy."""
    tmp = f"{dst}.tmp"
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        with output_file(dst, "wb", name=f"checkpoint {dst}") as fout, open(src, "rb") as fin:
            shutil.copyfileobj(fin, fout, 1 << 24)


def load(path, kinds=KINDS, map_location="cpu"):
    """Read a checkpoint; a clear UsageError if it is missing, unsafe, foreign or of the wrong kind."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} not found: train one with train.py, or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only met something it would have to run to build
        raise UsageError(f"{path} was not loaded: it holds Python objects beyond tensors and plain values, and "
                         f"unpickling them can run code (a checkpoint of nanodfm before {FORMAT} does too: "
                         f"retrain it with this version)") from None
    except Exception as e:  # a truncated or non-torch file
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not str(ckpt.get("format", "")).startswith("nanodfm-"):
        raise UsageError(f"{path} is not a nanodfm checkpoint")
    if ckpt["format"] != FORMAT:
        raise UsageError(f"{path} is a {ckpt['format']} checkpoint; this version reads {FORMAT}: retrain it")
    if problem := _unreadable(ckpt):
        raise UsageError(f"{path} is not a readable checkpoint ({problem})")
    if "checksum" in ckpt and ckpt["checksum"] != checksum(ckpt):  # (written before checksums: not checked)
        raise UsageError(f"{path} is damaged: its tensors do not match the checksum written with them; use another "
                         f"copy (best.pt or ckpt.pt), or retrain")
    if bad := non_finite(ckpt):
        raise UsageError(f"{path} holds NaN or infinity in its weights ({bad}): use another copy, or retrain")
    ckpt["loaded_from"] = path  # for build_model's errors
    if ckpt["kind"] not in kinds:
        raise UsageError(f"{path} holds a model of kind {ckpt['kind']!r}; this needs one of {', '.join(kinds)}")
    return ckpt


def _unreadable(ckpt):
    """What in a nanodfm-2 dict keeps it from being a model (None if nothing): what build_model,
    ProbPath.of and load_tokenizer read is there, of the right type and shape."""
    if not isinstance(ckpt.get("kind"), str) or ckpt["kind"] not in KINDS:
        return f"its kind is {ckpt.get('kind')!r}, not one of {', '.join(KINDS)}"
    missing = [key for key in ("model_config", "model", "config", "meta") if not isinstance(ckpt.get(key), dict)]
    if missing:
        return f"no {missing[0]}"
    types = {f.name: {"int": int, "float": (float, int), "bool": bool}[getattr(f.type, "__name__", f.type)]
             for f in dataclasses.fields(ModelConfig)}
    given = ckpt["model_config"]
    if given.keys() != types.keys():
        extra, missing = sorted(given.keys() - types.keys()), sorted(types.keys() - given.keys())
        return f"model_config {'has unknown keys ' + ', '.join(extra) if extra else 'lacks ' + ', '.join(missing)}"
    wrong = [k for k, t in types.items() if not isinstance(given[k], t)
             or t is int and (isinstance(given[k], bool) or given[k] < 1)]
    if wrong:
        return f"model_config {wrong[0]}={given[wrong[0]]!r}"
    if given["n_embd"] % (2 * given["n_head"]) or not 0 <= given["dropout"] < 1:
        return f"model_config n_head={given['n_head']}, n_embd={given['n_embd']}, dropout={given['dropout']}"
    for name in ("model", "ema"):  # their shapes are checked as they are loaded (build_model)
        weights = {} if name == "ema" and ckpt.get("ema") is None else ckpt[name]
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            return f"its {name} weights are not tensors"
    config, meta = ckpt["config"], ckpt["meta"]
    if config.get("source") not in ("mask", "uniform") or not isinstance(config.get("kappa_power"), (int, float)):
        return "its config has no probability path (source, kappa_power)"
    if meta_problem(meta):
        return f"its meta: {meta_problem(meta)}"
    if meta["vocab_size"] != given["vocab_size"]:
        return f"its meta's vocab_size {meta['vocab_size']} does not fit its model's {given['vocab_size']}"
    return None


def build_model(ckpt, weights="model"):
    """The Transformer a checkpoint describes, with its weights ("model" or "ema")."""
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt[weights] if ckpt.get(weights) is not None else ckpt["model"])
    except RuntimeError as e:  # shapes or names that another model_config would have
        detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise UsageError(f"{ckpt.get('loaded_from', 'the checkpoint')} is not a readable checkpoint (its weights do "
                         f"not fit its model_config: {detail})") from None
    return model


def lock_out_dir(out_dir):
    """Create out_dir if needed and lock it for this run (an flock on out_dir/lock, which the OS drops
    when the process ends, however it ends); returns the function that releases it. A UsageError if
    another run holds it, or if out_dir cannot be used."""
    import fcntl  # POSIX only; sample.py and eval.py, which import this module too, never lock
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"out_dir {out_dir} is a file, not a folder: pick another --out_dir")
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not os.access(out_dir, os.W_OK | os.X_OK):  # an earlier run's lock file may be there already
            raise UsageError(f"cannot use out_dir {out_dir}: Permission denied")
        fd = os.open(os.path.join(out_dir, "lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"{out_dir} is in use by another training run: wait for it to end, or pick another "
                             f"--out_dir") from None
        for stale in glob.glob(os.path.join(glob.escape(out_dir), "*.pt.tmp*")):  # what a killed write left
            os.remove(stale)
    except OSError as e:
        raise UsageError(f"cannot use out_dir {out_dir}: {e.strerror} ({e.filename or out_dir})") from None
    return lambda: os.close(fd)
