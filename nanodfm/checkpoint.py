"""Checkpoints: written atomically, read back with a check of what kind of model they hold.

A checkpoint is one torch.save'd dict: the model's kind ("dfm", "ar" or "student") and
ModelConfig, its weights, and, for training to resume exactly, the optimiser, the EMA weights (for a
student), the step, the training config and every RNG state. It is written to a temporary file in
the same folder and renamed over the old one, so a crash mid-write never loses the last good one.
"""

import os
import torch

from nanodfm.config import UsageError
from nanodfm.model import ModelConfig, Transformer

FORMAT = "nanodfm-1"
KINDS = ("dfm", "ar", "student")


def save(path, state):
    """torch.save(state) to path atomically: write beside it, then rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load(path, kinds=KINDS, map_location="cpu"):
    """Read a checkpoint; a clear UsageError if it is missing, foreign or of the wrong kind."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} not found: train one with train.py, or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or non-torch file
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{path} is not a nanodfm checkpoint")
    if ckpt["kind"] not in kinds:
        raise UsageError(f"{path} holds a model of kind {ckpt['kind']!r}; this needs one of {', '.join(kinds)}")
    return ckpt


def model_state(model):
    """State dict without DDP / torch.compile wrappers (their prefixes would not load elsewhere)."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    return model.state_dict()


def build_model(ckpt, weights="model"):
    """The Transformer a checkpoint describes, with its weights ("model" or "ema")."""
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt[weights] if ckpt.get(weights) is not None else ckpt["model"])
    return model
