"""Prepare scripts: the .bin files decode back to exactly the input text, split as documented."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_gpt2
from nanodfm import data
from nanodfm.tokenizer import GPT2_EOT, load_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
needs_shakespeare = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"no local copy at {SHAKESPEARE}")

DOCUMENTS = [
    "naïve café — 日本語 🙂\n\ttabs",
    "Windows line endings\r\nstay as they are\r\n",
    "a document that says <|endoftext|> in the middle",
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n\nJULIET:\nAy me!",
    "x" * 5000,
] + [f"short document number {i}, ünïcödé {chr(0x4E00 + i)}" for i in range(30)]


def run_prepare(name, *args):
    cmd = [sys.executable, str(REPO_ROOT / "data" / name / "prepare.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def load_split(out_dir, split):
    return np.fromfile(Path(out_dir) / f"{split}.bin", dtype=np.uint16)


def load_meta(out_dir):
    """meta.json as nanodfm reads it; its recorded token counts, largest ids and file records, checked
    against the .bin files, are removed."""
    meta = data.load_meta(str(out_dir))
    tokens, largest, files = meta.pop("tokens"), meta.pop("max_token_id"), meta.pop("files")
    for split in ("train", "val"):
        ids = load_split(out_dir, split)
        assert tokens[split] == len(ids) and largest[split] == ids.max()
        st = os.stat(os.path.join(out_dir, f"{split}.bin"))
        sha256 = hashlib.sha256(open(os.path.join(out_dir, f"{split}.bin"), "rb").read()).hexdigest()
        assert files[split] == {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    return meta


@needs_shakespeare
def test_shakespeare_char(tmp_path):
    result = run_prepare("shakespeare_char", "--input", SHAKESPEARE, "--out_dir", tmp_path)
    assert result.returncode == 0, result.stderr
    meta = load_meta(tmp_path)
    assert meta["tokenizer"] == "char" and meta["vocab_size"] == 65
    assert set(meta) == {"tokenizer", "vocab_size", "itos", "stoi"}
    train, val = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    assert (len(train), len(val)) == (1_003_854, 111_540)
    tok = load_tokenizer(meta)
    assert tok.decode(train) + tok.decode(val) == SHAKESPEARE.read_text(encoding="utf-8")


@needs_gpt2
@needs_shakespeare
def test_shakespeare_gpt2(tmp_path):
    result = run_prepare("shakespeare", "--input", SHAKESPEARE, "--out_dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_meta(tmp_path) == {"tokenizer": "gpt2", "vocab_size": 50257, "eot": 50256}
    train, val = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    assert (len(train), len(val)) == (301_967, 36_060)
    assert train[-1] == val[-1] == GPT2_EOT
    tok = load_tokenizer(load_meta(tmp_path))
    assert tok.decode(train[:-1]) + tok.decode(val[:-1]) == SHAKESPEARE.read_text(encoding="utf-8")


def split_documents(ids, tok):
    """Cut a token stream at every EOT id (on ids, so a literal "<|endoftext|>" in a text survives)."""
    assert len(ids) == 0 or ids[-1] == GPT2_EOT
    pieces = np.split(ids, np.flatnonzero(ids == GPT2_EOT) + 1)[:-1]  # each ends with its EOT
    return [tok.decode(piece[:-1]) for piece in pieces]


def make_corpus(tmp_path, kind):
    if kind == "folder":
        folder = tmp_path / "corpus"
        (folder / "sub").mkdir(parents=True)
        for i, doc in enumerate(DOCUMENTS):  # some in a subfolder: the walk is recursive and sorted
            path = folder / ("sub" if i >= 20 else "") / f"{i:03d}.txt"
            path.write_bytes(doc.encode("utf-8"))
        (folder / "notes.md").write_text("not a .txt file, so not a document")
        return folder
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for doc in DOCUMENTS:
            f.write(json.dumps({"id": len(doc), "body": doc}, ensure_ascii=False) + "\n")
    return path


@needs_gpt2
@pytest.mark.parametrize("kind", ["folder", "jsonl"])
def test_openwebtext_local_corpus_round_trips(tmp_path, kind):
    corpus = make_corpus(tmp_path, kind)
    out_dir = tmp_path / "out"
    result = run_prepare("openwebtext", "--input", corpus, "--out_dir", out_dir, "--text_field", "body",
                         "--val_fraction", "0.3", "--num_proc", "2", "--batch_mb", "0.001")
    assert result.returncode == 0, result.stderr
    meta = load_meta(out_dir)
    assert meta == {"tokenizer": "gpt2", "vocab_size": 50257, "eot": 50256}
    tok = load_tokenizer(meta)
    train = split_documents(load_split(out_dir, "train"), tok)
    val = split_documents(load_split(out_dir, "val"), tok)
    # every document in exactly one split, each split in input order
    assert sorted(train + val) == sorted(DOCUMENTS)
    assert train and val
    assert train == [d for d in DOCUMENTS if d in train]
    assert val == [d for d in DOCUMENTS if d in val]
    assert not list(out_dir.glob("*.tmp"))


@needs_gpt2
def test_openwebtext_text_file_is_one_document_a_line(tmp_path):
    documents = [doc.replace("\n", " ").replace("\r", "") for doc in DOCUMENTS]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(documents[:10]) + "\n\n" + "\n".join(documents[10:]) + "\n", encoding="utf-8")
    result = run_prepare("openwebtext", "--input", corpus, "--out_dir", tmp_path / "out",
                         "--val_fraction", "0.3", "--num_proc", "1")
    assert result.returncode == 0, result.stderr
    tok = load_tokenizer(load_meta(tmp_path / "out"))
    found = [split_documents(load_split(tmp_path / "out", split), tok) for split in ("train", "val")]
    assert sorted(found[0] + found[1]) == sorted(documents)  # the blank line is an empty document: skipped


@needs_gpt2
def test_openwebtext_split_does_not_depend_on_workers(tmp_path):
    corpus = make_corpus(tmp_path, "folder")
    for num_proc in (1, 2):
        result = run_prepare("openwebtext", "--input", corpus, "--out_dir", tmp_path / f"out{num_proc}",
                             "--val_fraction", "0.3", "--num_proc", num_proc)
        assert result.returncode == 0, result.stderr
    for split in ("train", "val"):
        assert np.array_equal(load_split(tmp_path / "out1", split), load_split(tmp_path / "out2", split))


@needs_gpt2
def test_empty_corpus_is_a_one_line_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for name in ("shakespeare_char", "shakespeare"):
        result = run_prepare(name, "--input", empty, "--out_dir", tmp_path / name)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [f"error: {empty} is empty: there is no text to prepare"]
        assert not (tmp_path / name / "meta.json").exists()
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")  # only empty documents
    result = run_prepare("openwebtext", "--input", blank, "--out_dir", tmp_path / "owt", "--num_proc", "1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after tqdm's progress lines
    assert last.startswith("error: ") and "train.bin is empty" in last and "Traceback" not in result.stderr
    assert not (tmp_path / "owt" / "meta.json").exists()


def test_write_meta_refuses_ids_outside_the_vocabulary(tmp_path):
    np.array([0, 1, 2], dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.array([1, 7], dtype=np.uint16).tofile(tmp_path / "val.bin")
    chars = lambda V: {"tokenizer": "char", "vocab_size": V, "itos": dict(enumerate("abcdefgh"[:V])),
                       "stoi": {c: i for i, c in enumerate("abcdefgh"[:V])}}
    with pytest.raises(data.UsageError, match="val.bin holds token id 7, outside the vocabulary of 3"):
        data.write_meta(tmp_path, chars(3))
    assert not (tmp_path / "meta.json").exists()
    data.write_meta(tmp_path, chars(8))
    assert data.load_meta(tmp_path)["max_token_id"] == {"train": 2, "val": 7}


@pytest.mark.parametrize("name", ["shakespeare_char", "shakespeare", "openwebtext"])
def test_missing_input_is_a_one_line_error(tmp_path, name):
    result = run_prepare(name, "--input", tmp_path / "missing.txt", "--out_dir", tmp_path / "out")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "missing.txt" in result.stderr


@needs_gpt2
def test_openwebtext_bad_jsonl_is_a_one_line_error(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "fine"}\n{"title": "no text field"}\n')
    result = run_prepare("openwebtext", "--input", corpus, "--out_dir", tmp_path / "out", "--num_proc", "1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "line 2" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "train.bin").exists() and not list((tmp_path / "out").glob("*.tmp"))


def test_same_vocabulary_reads_ids_as_text_or_numbers():
    from nanodfm.data import same_vocabulary
    loaded = {"tokenizer": "char", "vocab_size": 2, "itos": {0: "a", 1: "b"}}  # as load_meta returns it
    via_json = {"tokenizer": "char", "vocab_size": 2, "itos": {"0": "a", "1": "b"}}  # keys as JSON writes them
    swapped = {"tokenizer": "char", "vocab_size": 2, "itos": {0: "b", 1: "a"}}
    assert same_vocabulary(loaded, via_json) and not same_vocabulary(loaded, swapped)
