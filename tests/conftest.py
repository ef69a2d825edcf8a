"""Shared fixtures: the repository on sys.path, a tiny dataset, and a subprocess runner."""

import os
import subprocess
import sys

# pytest -n 2 runs two workers on CI's two cores: one thread each (their subprocesses inherit it),
# or the two OpenMP pools oversubscribe the cores and spin-wait on each other
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from nanodfm.data import write_meta  # noqa: E402

SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
# GPT-2's BPE files for offline tests, when a copy sits beside the checkout (the library itself looks
# only in $NANODFM_GPT2_DIR and data/gpt2/); subprocesses inherit the variable
GPT2_DIR = os.path.join(ROOT, "..", "shared", "data", "gpt2")
if os.path.isdir(GPT2_DIR):
    os.environ.setdefault("NANODFM_GPT2_DIR", os.path.abspath(GPT2_DIR))


def _gpt2_problem():
    """Why GPT-2's BPE cannot be loaded here (None if it can): no local copy and no network."""
    from nanodfm.config import UsageError
    from nanodfm.tokenizer import GPT2Tokenizer
    try:
        GPT2Tokenizer()
    except (UsageError, RuntimeError, OSError) as e:
        return f"GPT-2's BPE files are not found here ({e})"
    return None


GPT2_PROBLEM = _gpt2_problem()
needs_gpt2 = pytest.mark.skipif(GPT2_PROBLEM is not None, reason=str(GPT2_PROBLEM))
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--n_cond=16", "--block_size=32", "--batch_size=4",
              "--eval_iters=1", "--warmup_iters=2", "--device=cpu"]


def run_script(*args, timeout=300, env=None):
    """Run a top-level script in a fresh interpreter (env: variables to add); returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def char_data(tmp_path_factory):
    """A char dataset in the prepare scripts' format, from the first 60k characters of Shakespeare."""
    if os.path.isfile(SHAKESPEARE):
        text = open(SHAKESPEARE, encoding="utf-8").read()[:60000]
    else:  # still a real text, so tests keep their meaning without the shared copy
        text = open(os.path.join(ROOT, "nanodfm", "path.py"), encoding="utf-8").read() * 4
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    folder = tmp_path_factory.mktemp("char_data")
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    ids[:n].tofile(folder / "train.bin")
    ids[n:].tofile(folder / "val.bin")
    write_meta(folder, {"tokenizer": "char", "vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi})
    return str(folder)
