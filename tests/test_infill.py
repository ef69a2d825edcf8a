"""Infilling through sample.py: given tokens never change, every hole is filled, bad input is one line."""

import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, run_script
from nanodfm import checkpoint
from nanodfm.config import UsageError
from nanodfm.display import MASK_CHAR
from nanodfm.model import ModelConfig, Transformer
from nanodfm.engine import sample
from nanodfm.path import ProbPath
from nanodfm.tokenizer import CharTokenizer, GPT2Tokenizer
from sample import encode_prompt, prompt_tensor

REPO_ROOT = Path(__file__).resolve().parent.parent
CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # Tiny Shakespeare's
META = {"tokenizer": "char", "vocab_size": len(CHARS),
        "itos": dict(enumerate(CHARS)), "stoi": {c: i for i, c in enumerate(CHARS)}}
BLOCK = 48


def random_model(vocab_size, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=32, n_cond=16,
                         step_conditioned=True)
    return Transformer(config).eval()


def test_holes_become_none_runs_between_separately_encoded_pieces():
    tok = CharTokenizer(META["stoi"], META["itos"])
    ids = encode_prompt("AB____C________D", tok, hole_len=3)
    assert ids == tok.encode("AB") + [None] * 3 + tok.encode("C") + [None] * 3 + tok.encode("D")
    assert encode_prompt("no holes, ___ is text", CharTokenizer({**META["stoi"], "_": 99}, META["itos"]), 3) \
        .count(None) == 0
    prompt = prompt_tensor(ids, 20)
    assert (prompt >= 0).tolist() == [i < len(ids) and ids[i] is not None for i in range(20)]
    assert prompt[:len(ids)].tolist() == [-1 if i is None else i for i in ids]
    with pytest.raises(UsageError):
        prompt_tensor(ids, len(ids) - 1)


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_infilling_keeps_given_tokens_and_fills_every_hole(kind):
    if kind == "char":
        tok = CharTokenizer(META["stoi"], META["itos"])
    else:
        try:
            tok = GPT2Tokenizer()
        except UsageError as e:
            pytest.skip(str(e))
    text = "ROMEO:\n____ the ____, and ____ night.\nJULIET:"
    ids = encode_prompt(text, tok, hole_len=4)
    if kind == "gpt2":  # pieces are encoded apart: the same tokens as encoding each alone
        assert ids[:len(tok.encode("ROMEO:\n"))] == tok.encode("ROMEO:\n")
    prompt = prompt_tensor(ids, len(ids))
    fixed = prompt >= 0
    model = random_model(tok.vocab_size)
    for source in ("mask", "uniform"):
        x, last_change = sample(model, ProbPath(tok.vocab_size, source), 3, len(ids), 4, prompt=prompt,
                                generator=torch.Generator().manual_seed(0))
        assert (x[:, fixed] == prompt[fixed]).all()
        assert (x < tok.vocab_size).all()  # no MASK left in any hole
        assert (last_change[:, fixed] == -1).all() and (last_change[:, ~fixed] >= 0).all()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = random_model(len(CHARS))
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    checkpoint.save(str(path), {"kind": "student", "model_config": asdict(model.config), "model": model.state_dict(),
                                "ema": None, "config": {"source": "mask", "kappa_power": 1.0}, "meta": META})
    return str(path)


def run_sample(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, str(REPO_ROOT / "sample.py"), *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=120)


def test_sample_infill_and_html(ckpt, tmp_path):
    page = tmp_path / "order.html"
    r = run_sample(f"--ckpt={ckpt}", "--steps=4", "--num_samples=2", "--start=ROMEO:\n____\nJULIET: ____!",
                   "--hole_len=5", f"--html={page}")
    assert r.returncode == 0, r.stderr
    samples = r.stdout.split("---------- sample ")[1:]
    assert len(samples) == 2
    for s in samples:  # the sample ends where the prompt ends; each hole is 5 characters
        assert re.fullmatch(r"\d/2, 4 steps, cumulative\nROMEO:\n[\s\S]{5}\nJULIET: [\s\S]{5}!\n", s), s
    assert page.is_file() and page.read_text(encoding="utf-8").count("<pre>") == 2


def test_sample_frames_fill_in(ckpt):
    r = run_sample(f"--ckpt={ckpt}", "--steps=40", "--num_samples=1", "--show=frames", "--color=never",
                   "--start=A____B", "--hole_len=8")
    assert r.returncode == 0, r.stderr
    headers = [line for line in r.stdout.splitlines() if line.startswith("---------- after step")]
    assert len(headers) == 16 and headers[-1].startswith("---------- after step 40/40")
    frames = [line for line in r.stdout.splitlines() if not line.startswith("----------")]
    assert all(len(f) == 10 and f[0] == "A" and f[-1] == "B" for f in frames)
    masked = [f.count(MASK_CHAR) for f in frames]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0


@pytest.mark.parametrize("args, message", [
    (["--hole_len=8", "--start=ROMEO:"], "--start has no hole"),
    (["--start=" + "A____" * 3, "--hole_len=20"], "holes included"),
    (["--start=A____", "--html=/nonexistent-folder/x.html"], "does not exist"),
    (["--start=A____", "--hole_len=0"], "--hole_len must be"),
    (["--show=colours"], "--show must be"),
])
def test_bad_input_is_one_line(ckpt, args, message):
    r = run_sample(f"--ckpt={ckpt}", "--steps=2", *args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], r.stderr


def test_sample_with_a_schedule_takes_its_steps_and_shows_their_times(ckpt, tmp_path):
    r = run_sample(f"--ckpt={ckpt}", "--schedule=1/2,1/4,1/8,1/8", "--num_samples=1", "--length=12", "--show=frames",
                   "--color=never")
    assert r.returncode == 0, r.stderr
    assert re.findall(r"after step (\d)/(\d) \(t = ([\d.]+)\)", r.stdout) == [
        ("1", "4", "0.500"), ("2", "4", "0.750"), ("3", "4", "0.875"), ("4", "4", "1.000")]
    assert "warning" not in r.stderr
    named = run_sample(f"--ckpt={ckpt}", "--steps=4", "--schedule=coarse-to-fine", "--num_samples=1", "--length=12",
                       "--show=frames", "--color=never")
    assert named.returncode == 0 and named.stdout == r.stdout  # coarse-to-fine at 4 steps is these sizes
    text = run_sample(f"--ckpt={ckpt}", "--steps=4", "--schedule=coarse-to-fine", "--num_samples=1", "--length=12")
    assert text.returncode == 0 and "1/1, 4 steps (schedule coarse-to-fine), cumulative" in text.stdout


def test_a_schedule_step_the_student_was_not_distilled_for_is_named(tmp_path):
    model = random_model(len(CHARS))
    path = tmp_path / "ckpt.pt"
    checkpoint.save(str(path), {"kind": "student", "model_config": asdict(model.config), "model": model.state_dict(),
                                "ema": None, "config": {"source": "mask", "kappa_power": 1.0, "max_step_exponent": 3},
                                "meta": META})
    r = run_sample(f"--ckpt={path}", "--schedule=3/4,1/8,1/8", "--num_samples=1", "--length=12")
    assert r.returncode == 0, r.stderr
    assert "step sizes 1, 1/2, ..., 1/8; 0.75 it meets only by interpolation" in r.stderr
    r = run_sample(f"--ckpt={path}", "--schedule=1/2,1/4,1/8,1/8", "--num_samples=1", "--length=12")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("kind, flags, fragment", [
    ("ar", ["--schedule=coarse-to-fine", "--steps=4"], "--schedule, --steps do not apply"),
    ("ar", ["--first_temperature=3"], "--first_temperature does not apply"),
    ("ar", ["--spread=True"], "--spread does not apply"),
    ("dfm", ["--top_k=5"], "--top_k does not apply"),
])
def test_a_key_for_another_kind_of_model_is_refused_not_ignored(char_data, tmp_path, kind, flags, fragment):
    """--top_k on a flow model, or a flow model's step keys on an AR one, would change nothing."""
    out = tmp_path / kind
    result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={out}", f"--kind={kind}", *TINY_MODEL,
                        "--max_iters=2")
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_sample(f"--ckpt={out / 'ckpt.pt'}", "--num_samples=1", "--length=12", *flags)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert "of these keys it takes" in lines[0]


def test_ctrl_c_while_sampling_is_one_line(char_data, tmp_path):
    import signal
    import time
    out = tmp_path / "dfm"
    assert run_script("train.py", f"--data_dir={char_data}", f"--out_dir={out}", *TINY_MODEL,
                      "--max_iters=2").returncode == 0
    html = tmp_path / "page.html"
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "sample.py"), f"--ckpt={out / 'ckpt.pt'}",
                                "--steps=1000000", "--reference=True", f"--html={html}"], cwd=REPO_ROOT,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(6)  # loaded and sampling
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "sampling" not in line]
    assert process.returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("interrupted: nothing was written") and not html.exists()


def test_an_output_replaces_another_kind_of_file_only_when_asked(char_data, tmp_path):
    out = tmp_path / "dfm"
    assert run_script("train.py", f"--data_dir={char_data}", f"--out_dir={out}", *TINY_MODEL,
                      "--max_iters=2").returncode == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    args = (f"--ckpt={out / 'ckpt.pt'}", "--num_samples=1", "--length=12", "--steps=2", f"--html={notes}")
    refused = run_sample(*args)
    assert refused.returncode != 0 and "--overwrite=True" in refused.stderr and notes.read_text() == "my notes"
    assert run_sample(*args).returncode != 0  # the same again: still refused
    assert run_sample(*args, "--overwrite=True").returncode == 0 and notes.read_text().startswith("<!DOCTYPE html>")
    assert run_sample(*args).returncode == 0  # now a page: replaced freely
