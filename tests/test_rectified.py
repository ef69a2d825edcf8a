"""The rectified coupling: pair datasets (data/rectified/prepare.py), their batches, and the DFM
fine-tune and student that train on them."""

import importlib.util
import os

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_MODEL, run_script
from nanodfm import checkpoint, engine
from nanodfm.data import get_batch, load_meta, split_path, write_meta, write_split
from nanodfm.path import ProbPath
from test_autoregressive import CHAR_META, save_checkpoint, tiny_model


def load_prepare():
    spec = importlib.util.spec_from_file_location("rectified_prepare", os.path.join(ROOT, "data/rectified/prepare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pair_batches_are_windows_of_one_sample_and_the_same_windows_of_its_source(tmp_path):
    """Row r of the samples is all r % V; its source holds each position's index in the row: a window
    that crossed rows, or a source window not aligned with its sample's, would show."""
    V, rows, row = len(CHAR_META["itos"]), 40, 16
    x1 = (np.arange(rows)[:, None] % V).repeat(row, 1)
    x0 = np.tile(np.arange(row) % V, (rows, 1))
    for split in ("train", "val"):
        write_split(tmp_path / f"{split}.bin", [x1])
        write_split(tmp_path / f"{split}.source.bin", [x0])
    write_meta(tmp_path, {**CHAR_META, "pairs": {"model": "m.pt", "steps": 4, "row": row, "seed": 0}})
    meta = load_meta(str(tmp_path))
    assert meta["tokens"]["train.source"] == rows * row and "sha256" in meta["files"]["val.source"]
    batch, source = get_batch(split_path(str(tmp_path), "train", V), 64, 5, torch.Generator().manual_seed(0), row=row)
    assert batch.shape == source.shape == (64, 5)
    assert (batch == batch[:, :1]).all()  # inside one sample
    assert ((source[:, 1:] - source[:, :-1]) % V == 1).all()  # consecutive positions of a row, none across two
    assert len(set(source[:, 0].tolist())) > 5 and len(set(batch[:, 0].tolist())) > 5  # windows start anywhere
    whole, whole_source = get_batch(split_path(str(tmp_path), "train", V), 8, row, row=row)
    assert (whole_source == torch.arange(row) % V).all()  # block_size = row: whole samples with whole sources


def test_draw_pairs_keeps_each_sample_with_the_source_it_started_from(monkeypatch):
    """draw_pairs hands the sampler each source and returns it beside that sample: a sampler that
    writes (x0 + 1) % V makes the pairing visible, over several batches."""
    prepare = load_prepare()
    V, seen = 7, []

    def fake_sample(model, path, n, length, steps, sampler, generator=None, device="cpu", source=None):
        seen.append(source.clone())
        return (source + 1) % V, None
    monkeypatch.setattr(engine, "sample", fake_sample)
    path = ProbPath(V, "uniform")
    x0, x1 = prepare.draw_pairs(None, path, 10, 6, 4, 4, torch.Generator().manual_seed(0), "cpu")
    assert x0.shape == x1.shape == (10, 6) and len(seen) == 3  # batches of 4, 4 and 2
    assert torch.equal(x1, (x0 + 1) % V) and torch.equal(torch.cat(seen), x0)
    assert x0.min() >= 0 and x0.max() < V and len(x0.unique()) == V  # uniform tokens, never MASK


@pytest.fixture(scope="module")
def parent(tmp_path_factory, char_data):
    """A tiny uniform-source DFM model trained 2 steps on the char data, and 12 pairs drawn from it."""
    folder = tmp_path_factory.mktemp("rectified")
    dfm = str(folder / "dfm")
    result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={dfm}", *TINY_MODEL, "--source=uniform",
                        "--max_iters=2", "--eval_interval=2")
    assert result.returncode == 0, result.stderr[-2000:]
    pairs = str(folder / "pairs")
    result = run_script("data/rectified/prepare.py", f"--ckpt={dfm}/ckpt.pt", "--pairs=16", "--steps=2",
                        "--batch_size=8", f"--out_dir={pairs}", "--device=cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    return f"{dfm}/ckpt.pt", pairs


def test_prepare_writes_a_dataset_of_pairs_that_reproduces_from_its_seed(parent, tmp_path):
    ckpt, pairs = parent
    meta = load_meta(pairs)
    assert meta["pairs"]["row"] == 32 and meta["pairs"]["steps"] == 2  # TINY_MODEL's block_size
    assert meta["tokens"]["train"] == meta["tokens"]["train.source"] == 16 * 32 and meta["tokens"]["val"] == 32
    again = str(tmp_path / "again")
    result = run_script("data/rectified/prepare.py", f"--ckpt={ckpt}", "--pairs=16", "--steps=2", "--batch_size=8",
                        f"--out_dir={again}", "--device=cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("train.bin", "train.source.bin", "val.bin"):
        assert open(os.path.join(pairs, name), "rb").read() == open(os.path.join(again, name), "rb").read()


def test_fine_tune_starts_from_the_parent_and_a_student_distils_on_its_pairs(parent, tmp_path):
    ckpt, pairs = parent
    tuned = str(tmp_path / "tuned")
    result = run_script("train.py", f"--init_from={ckpt}", f"--data_dir={pairs}", f"--out_dir={tuned}", *TINY_MODEL,
                        "--max_iters=0")
    assert result.returncode == 0, result.stderr[-2000:]
    start, parent_ck = checkpoint.load(f"{tuned}/ckpt.pt"), checkpoint.load(ckpt)
    assert start["kind"] == "dfm" and start["config"]["source"] == "uniform"
    assert all(torch.equal(start["model"][k], v) for k, v in parent_ck["model"].items())  # the parent's weights
    result = run_script("train.py", f"--init_from={ckpt}", f"--data_dir={pairs}", f"--out_dir={tuned}", *TINY_MODEL,
                        "--max_iters=2", "--overwrite=True")
    assert result.returncode == 0, result.stderr[-2000:]
    trained = checkpoint.load(f"{tuned}/ckpt.pt")["model"]
    assert not all(torch.equal(trained[k], v) for k, v in parent_ck["model"].items())
    student = str(tmp_path / "student")
    result = run_script("train.py", "--kind=student", f"--init_from={tuned}/ckpt.pt", f"--out_dir={student}",
                        *TINY_MODEL, "--max_iters=2", "--eval_interval=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoint.load(f"{student}/ckpt.pt")["config"]["data_dir"] == pairs  # the parent's pairs


@pytest.mark.parametrize("args, fragment", [
    (["--pairs=0"], "--pairs must be a positive integer"),
    (["--length=999"], "--length must be in [1, 32]"),
])
def test_prepare_bad_input_is_one_line(parent, tmp_path, args, fragment):
    result = run_script("data/rectified/prepare.py", f"--ckpt={parent[0]}", f"--out_dir={tmp_path}", *args)
    assert result.returncode != 0 and fragment in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_mask_source_model_or_an_ar_fine_tune_is_refused_in_one_line(tmp_path, char_data):
    mask = save_checkpoint(tmp_path / "mask.pt", tiny_model("dfm", dtype=torch.float32), "dfm", source="mask")
    result = run_script("data/rectified/prepare.py", f"--ckpt={mask}", f"--out_dir={tmp_path / 'pairs'}")
    assert result.returncode != 0 and "needs the uniform source" in result.stderr and "Traceback" not in result.stderr
    result = run_script("train.py", "--kind=ar", f"--init_from={mask}", f"--data_dir={char_data}",
                        f"--out_dir={tmp_path / 'ar'}", *TINY_MODEL)
    assert result.returncode != 0 and "use kind=student to distil it, kind=dfm to fine-tune it" in result.stderr
