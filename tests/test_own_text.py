"""Your own text, start to finish (docs/training.md, "Your own text"): data/text/prepare.py on a small generated
corpus, at the character level and with GPT-2 BPE, then a few training steps, a student, sampling
and evaluation, each found from the checkpoint before it."""

import importlib
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINY_MODEL, needs_gpt2, run_script
from nanodfm import checkpoint
from nanodfm.config import UsageError
from nanodfm.data import load_meta
from nanodfm.tokenizer import GPT2_EOT, load_tokenizer

text_prepare = importlib.import_module("data.text.prepare")
SHORT = ["--max_iters=2", "--eval_interval=2", "--log_interval=1"]  # ends on an evaluation, which saves


def make_corpus(folder):
    """A folder of three text files of made-up prose (paragraphs split by blank lines), one more in a
    subfolder, a binary file, a hidden file and a file another --glob would leave out."""
    rng = random.Random(0)
    words = ["".join(rng.choice(["ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "é"]) for _ in range(rng.randint(1, 3)))
             for _ in range(200)]

    def paragraph():
        return " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))).capitalize() + "."
    (folder / "sub").mkdir(parents=True)
    texts = {}
    for name in ("a.txt", "b.txt", "sub/c.txt", "z.txt"):
        texts[name] = "\n\n".join(paragraph() for _ in range(rng.randint(15, 25))) + "\n"
        (folder / name).write_text(texts[name], encoding="utf-8")
    (folder / "image.txt").write_bytes(bytes(range(256)))  # not UTF-8: skipped and counted
    (folder / ".hidden.txt").write_text("never read")
    (folder / "notes.md").write_text("left out by --glob='*.txt'")
    return [texts[name] for name in ("a.txt", "b.txt", "sub/c.txt", "z.txt")]  # sorted walk order


def prepare(*args):
    result = subprocess.run([sys.executable, "data/text/prepare.py", *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    return result


def split_documents(ids, tok):
    pieces = np.split(ids, np.flatnonzero(ids == GPT2_EOT) + 1)[:-1]  # each ends with its EOT
    return [tok.decode(piece[:-1]) for piece in pieces]


def read_ids(folder, split):
    return np.fromfile(folder / f"{split}.bin", dtype=np.uint16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_corpus(folder)


def test_char_round_trip_and_split(corpus, tmp_path):
    folder, texts = corpus
    result = prepare("--input", folder, "--glob", "*.txt", "--out_dir", tmp_path / "d", "--val_fraction", "0.2")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 files that are not UTF-8 text" in result.stdout
    meta = load_meta(str(tmp_path / "d"))
    tok = load_tokenizer(meta)
    train, val = read_ids(tmp_path / "d", "train"), read_ids(tmp_path / "d", "val")
    whole = "".join(texts)
    assert tok.decode(train) + tok.decode(val) == whole  # the files joined in sorted order, exactly
    assert len(val) == len(whole) - int(0.8 * len(whole))
    assert meta["vocab_size"] == len(set(whole)) and meta["prepared_from"] == str(folder)


@needs_gpt2
@pytest.mark.parametrize("documents", ["files", "paragraphs", "lines"])
def test_gpt2_documents_and_a_fair_val_share(corpus, tmp_path, documents):
    folder, texts = corpus
    result = prepare("--input", folder, "--glob", "*.txt", "--tokenizer", "gpt2", "--documents", documents,
                     "--out_dir", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    tok = load_tokenizer(load_meta(str(tmp_path / "d")))
    train, val = (split_documents(read_ids(tmp_path / "d", split), tok) for split in ("train", "val"))
    expected = {"files": texts,
                "paragraphs": [p.strip("\n") for t in texts for p in t.split("\n\n")],
                "lines": [line for t in texts for line in t.splitlines() if line]}[documents]
    # in order, one document cut in two at the split, and val holds the last tenth of the text
    assert "".join(train + val) == "".join(expected)
    assert len(train) + len(val) in (len(expected), len(expected) + 1)
    assert abs(sum(map(len, val)) - 0.1 * sum(map(len, expected))) < 1
    assert len(val) >= (1 if documents == "files" else 5)


@needs_gpt2
def test_a_text_file_is_one_document_by_default(tmp_path):
    text = "First line.\nSecond line.\n\nA new paragraph.\n"
    (tmp_path / "one.txt").write_text(text)
    assert prepare("--input", tmp_path / "one.txt", "--tokenizer", "gpt2", "--out_dir", tmp_path / "d").returncode == 0
    ids = np.concatenate([read_ids(tmp_path / "d", "train"), read_ids(tmp_path / "d", "val")])
    assert (ids == GPT2_EOT).sum() == 2  # one document, cut once: the end of train and the end of val


def test_never_overwrites_another_dataset(corpus, tmp_path, capsys):
    folder, _ = corpus
    out = str(tmp_path / "d")
    text_prepare.main(["--input", str(folder), "--out_dir", out])
    text_prepare.main(["--input", str(folder), "--out_dir", out])  # the same input again: a re-run
    (tmp_path / "other.txt").write_text("some other text, long enough to split")
    other = ["--input", str(tmp_path / "other.txt")]
    with pytest.raises(UsageError, match="--overwrite"):
        text_prepare.main([*other, "--out_dir", out])
    assert load_meta(out)["prepared_from"] == str(folder)
    text_prepare.main([*other, "--out_dir", out, "--overwrite"])
    assert load_meta(out)["prepared_from"] == str(tmp_path / "other.txt")
    with pytest.raises(UsageError, match="prepare.py"):  # a dataset with a prepare script of its own
        text_prepare.main([*other, "--name", "shakespeare_char"])


def test_bad_input_is_one_clear_line(tmp_path):
    for args, fragment in ((["--input", tmp_path, "--glob", "*.nothing"], "holds no text"),
                           (["--input", tmp_path, "--name", "a/b"], "--name"),
                           (["--input", tmp_path, "--val_fraction", "1.5"], "--val_fraction")):
        with pytest.raises(UsageError, match=re.escape(fragment)):
            text_prepare.main([*map(str, args), "--out_dir", str(tmp_path / "d")])
    result = prepare("--input", tmp_path / "missing", "--out_dir", tmp_path / "d")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: --input {tmp_path / 'missing'} does not exist"]


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_char_corpus_to_trained_distilled_sampled_and_evaluated_model(corpus, tmp_path):
    folder, texts = corpus
    data = tmp_path / "mytext"
    ok(prepare("--input", folder, "--glob", "*.txt", "--out_dir", data))
    dfm, student, ar = tmp_path / "out-mytext", tmp_path / "out-mytext-student", tmp_path / "out-mytext-ar"
    ok(run_script("train.py", "config/shakespeare_char_cpu.py", f"--data_dir={data}", f"--out_dir={dfm}",
                  "--source=mask", *TINY_MODEL, *SHORT))  # the mask source, which has an ELBO
    # the Shakespeare student preset distils a model of any dataset: the data comes from the checkpoint
    ok(run_script("train.py", "config/shakespeare_char_cpu_student.py", f"--init_from={dfm}/ckpt.pt",
                  f"--out_dir={student}", "--block_size=32", "--batch_size=4", "--eval_iters=1", *SHORT))
    assert checkpoint.load(f"{student}/ckpt.pt")["config"]["data_dir"] == str(data)
    ok(run_script("train.py", "config/shakespeare_char_cpu_ar.py", f"--data_dir={data}", f"--out_dir={ar}",
                  *TINY_MODEL, *SHORT))
    samples = ok(run_script("sample.py", f"--ckpt={student}/ckpt.pt", "--steps=4", "--device=cpu")).stdout
    text = "".join(line for line in samples.splitlines() if not line.startswith("----------"))
    assert text and set(text) <= set("".join(texts))
    elbo = ok(run_script("eval.py", "--mode=elbo", f"--dfm={dfm}/ckpt.pt", "--num_batches=2", "--batch_size=2",
                         "--device=cpu")).stdout
    assert "perplexity <=" in elbo
    out_json = tmp_path / "quality.json"
    ok(run_script("eval.py", "--mode=quality", f"--dfm={dfm}/ckpt.pt", f"--student={student}/ckpt.pt",
                  f"--judge={ar}/ckpt.pt", "--steps_list=1,2", "--num_samples=2", "--batch_size=2",
                  f"--data_dir={data}", f"--out_json={out_json}", "--device=cpu"))
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["name"] for r in rows][:2] == ["held-out text", "AR samples"] and len(rows) == 2 + 3 * 2


@needs_gpt2
def test_gpt2_corpus_to_trained_sampled_and_evaluated_model(corpus, tmp_path):
    folder, _ = corpus
    data = tmp_path / "mytext_gpt2"
    ok(prepare("--input", folder, "--glob", "*.txt", "--tokenizer", "gpt2", "--documents", "paragraphs",
               "--out_dir", data))
    dfm = tmp_path / "out-mytext-gpt2"
    ok(run_script("train.py", f"--data_dir={data}", f"--out_dir={dfm}", *TINY_MODEL, *SHORT))
    samples = ok(run_script("sample.py", f"--ckpt={dfm}/ckpt.pt", "--steps=4", "--num_samples=1", "--device=cpu"))
    assert "sample 1/1" in samples.stdout and "Distil it" in samples.stderr
    (tmp_path / "no_gpt2_files").mkdir()  # without GPT-2's BPE files: one line that says what to do
    env = {**os.environ, "NANODFM_GPT2_DIR": str(tmp_path / "no_gpt2_files"), "OMP_NUM_THREADS": "1"}
    missing = subprocess.run([sys.executable, "sample.py", f"--ckpt={dfm}/ckpt.pt", "--device=cpu"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode != 0 and missing.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in missing.stderr and "NANODFM_GPT2_DIR" in missing.stderr
    elbo = ok(run_script("eval.py", "--mode=elbo", f"--dfm={dfm}/ckpt.pt", "--num_batches=2", "--batch_size=2",
                         "--device=cpu")).stdout
    assert "perplexity <=" in elbo
