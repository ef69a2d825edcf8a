"""Tokenizers: the offline GPT-2 encoding gives tiktoken's exact ids, and both tokenizers round-trip."""

import json
from pathlib import Path

import pytest
import torch

from conftest import needs_gpt2
from nanodfm.config import UsageError
from nanodfm.tokenizer import GPT2_EOT, gpt2_encoding, gpt2_encoding_from_files, load_tokenizer

GPT2_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "gpt2"
SAMPLES = [
    "Hello world",
    "naïve café — 日本語 🙂\n\ttabs",
    "  leading spaces, trailing\n\n\n   ",
    "It's 2024: they'll've re-run x=3.14159 (again)!",
    "ROMEO:\nBut, soft! what light through yonder window breaks?",
]


@pytest.fixture(scope="module")
def offline():
    if not GPT2_DIR.is_dir():
        pytest.skip(f"no local GPT-2 files at {GPT2_DIR}")
    return gpt2_encoding_from_files(GPT2_DIR)


def test_offline_gpt2_known_ids(offline):
    assert offline.encode("Hello world") == [15496, 995]
    assert offline.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [GPT2_EOT]
    assert offline.n_vocab == 50257 and offline.eot_token == GPT2_EOT


@pytest.mark.parametrize("text", SAMPLES)
def test_offline_gpt2_round_trips(offline, text):
    assert offline.decode(offline.encode(text)) == text


def tiktoken_gpt2_from_seeded_cache(cache_dir, monkeypatch):
    """tiktoken's own gpt2 loader, run offline by putting the local files where its cache looks."""
    import hashlib
    import shutil

    import tiktoken
    from tiktoken_ext.openai_public import gpt2

    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    for name in ("vocab.bpe", "encoder.json"):
        shutil.copy(GPT2_DIR / name, cache_dir / hashlib.sha1((base + name).encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))
    return tiktoken.Encoding(**gpt2())


def test_offline_gpt2_equals_tiktoken(offline, monkeypatch, tmp_path):
    import tiktoken

    try:  # tiktoken's own encoding needs its cache or the network
        reference = tiktoken.get_encoding("gpt2")
    except Exception:
        try:
            reference = tiktoken_gpt2_from_seeded_cache(tmp_path, monkeypatch)
        except Exception as e:
            pytest.skip(f"tiktoken cannot load gpt2 here ({type(e).__name__})")
    assert offline._mergeable_ranks == reference._mergeable_ranks
    assert offline._pat_str == reference._pat_str
    assert offline._special_tokens == reference._special_tokens
    assert (offline.name, offline.n_vocab) == (reference.name, reference.n_vocab)
    for text in SAMPLES:
        assert offline.encode_ordinary(text) == reference.encode_ordinary(text)


@needs_gpt2
def test_gpt2_tokenizer_from_meta():
    tok = load_tokenizer({"tokenizer": "gpt2", "vocab_size": 50257, "eot": 50256})
    assert (tok.name, tok.vocab_size, tok.eot) == ("gpt2", 50257, GPT2_EOT)
    assert tok.encode("Hello world<|endoftext|>") == [15496, 995, GPT2_EOT]
    assert tok.decode(tok.encode(SAMPLES[1])) == SAMPLES[1]


def test_missing_gpt2_files_raise_clear_error(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="NANODFM_GPT2_DIR"):
        gpt2_encoding_from_files(tmp_path)
    monkeypatch.setenv("NANODFM_GPT2_DIR", str(tmp_path))
    gpt2_encoding.cache_clear()
    try:
        with pytest.raises(UsageError, match="encoder.json and vocab.bpe"):
            gpt2_encoding()
    finally:
        gpt2_encoding.cache_clear()


def test_corrupt_gpt2_files_raise_clear_error(tmp_path):
    (tmp_path / "encoder.json").write_text("{}")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(UsageError, match="NANODFM_GPT2_DIR"):
        gpt2_encoding_from_files(tmp_path)


def char_meta(text):
    chars = sorted(set(text))
    return {"tokenizer": "char", "vocab_size": len(chars),
            "itos": dict(enumerate(chars)), "stoi": {ch: i for i, ch in enumerate(chars)}}


def test_char_tokenizer_round_trips():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    tok = load_tokenizer(char_meta(text))
    assert (tok.name, tok.eot, tok.vocab_size) == ("char", None, len(set(text)))
    ids = tok.encode(text)
    assert len(ids) == len(text) and max(ids) < tok.vocab_size
    assert tok.decode(ids) == text


def test_char_tokenizer_from_a_meta_that_went_through_json():
    text = "To be, or not to be\n"
    meta = json.loads(json.dumps(char_meta(text)))  # ids become text keys
    assert set(meta["itos"]) == {str(i) for i in range(len(set(text)))}
    tok = load_tokenizer(meta)
    assert tok.decode(tok.encode(text)) == text and tok.decode(torch.tensor(tok.encode(text))) == text


def test_char_tokenizer_rejects_unknown_characters():
    tok = load_tokenizer(char_meta("abc \n"))
    with pytest.raises(ValueError, match=r"'z', 'é'.*training text") as info:
        tok.encode("a zéz")
    assert "\n" not in str(info.value)


def test_unknown_tokenizer_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown tokenizer 'bytes'.*prepare the data again"):
        load_tokenizer({"tokenizer": "bytes"})
