"""Tokenizers: GPT-2 BPE (tiktoken's ids, so nanoGPT's) and a character-level vocabulary.

`load_tokenizer(meta)` turns a dataset's meta.json into an object with `encode`, `decode`, `vocab_size`, `eot`, `name`:
    char: {'tokenizer': 'char', 'vocab_size': V, 'itos': {i: ch}, 'stoi': {ch: i}}
    gpt2: {'tokenizer': 'gpt2', 'vocab_size': 50257, 'eot': 50256}
"""

import functools
import os
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

from nanodfm.config import UsageError

GPT2_EOT = 50256
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_HELP = ("connect to the network once (tiktoken caches the files), or put GPT-2's encoder.json and "
             "vocab.bpe in data/gpt2/ or in a folder named by NANODFM_GPT2_DIR")


def gpt2_encoding_from_files(folder) -> tiktoken.Encoding:
    """tiktoken's gpt2 encoding from a folder's encoder.json and vocab.bpe, held to the hashes tiktoken pins."""
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(str(Path(folder) / "vocab.bpe"), str(Path(folder) / "encoder.json"),
                                                GPT2_VOCAB_BPE_SHA256, GPT2_ENCODER_JSON_SHA256)
    except (OSError, ValueError, AssertionError) as e:  # missing, or not the files the hashes pin
        raise UsageError(f"{folder} does not hold GPT-2's BPE files ({e}): {GPT2_HELP}") from None
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: GPT2_EOT}, explicit_n_vocab=GPT2_EOT + 1)


@functools.lru_cache(maxsize=None)
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 BPE encoding, identical to tiktoken.get_encoding("gpt2"), from local copies first ($NANODFM_GPT2_DIR,
    else data/gpt2/): tiktoken fetches its files over the network with no timeout. None to be had: a UsageError."""
    local = os.environ.get("NANODFM_GPT2_DIR")
    folder = Path(local or Path(__file__).resolve().parent.parent / "data" / "gpt2")
    if local or (folder / "encoder.json").is_file() and (folder / "vocab.bpe").is_file():
        return gpt2_encoding_from_files(folder)
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests, OSError, hash mismatch: all mean "no usable files"
        raise UsageError(f"cannot load GPT-2's BPE files ({type(e).__name__}): {GPT2_HELP}") from None


class CharTokenizer:
    """One id per character; the vocabulary is the sorted set of the training text's characters (ids may arrive
    as text keys, from JSON), and text with others is a ValueError naming them, not a silent substitution."""

    def __init__(self, stoi: dict, itos: dict):
        self.stoi, self.itos = {ch: int(i) for ch, i in stoi.items()}, {int(i): ch for i, ch in itos.items()}
        self.name, self.eot, self.vocab_size = "char", None, len(itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            unknown = ", ".join(map(repr, sorted(set(text) - self.stoi.keys())))
            raise ValueError(f"text has characters outside the char vocabulary: {unknown} (the vocabulary is "
                             f"the {self.vocab_size} characters of the training text)") from None

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)


class GPT2Tokenizer:
    """GPT-2 BPE; the literal text "<|endoftext|>" encodes to the end-of-text id 50256."""

    def __init__(self):
        self.encoding = gpt2_encoding()
        self.name, self.vocab_size, self.eot = "gpt2", self.encoding.n_vocab, self.encoding.eot_token

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, allowed_special={ENDOFTEXT})

    def decode(self, ids) -> str:
        return self.encoding.decode([int(i) for i in ids])


def load_tokenizer(meta: dict):
    """The tokenizer a dataset's meta.json describes."""
    if meta.get("tokenizer") == "char":
        return CharTokenizer(meta["stoi"], meta["itos"])
    if meta.get("tokenizer") == "gpt2":
        return GPT2Tokenizer()
    raise UsageError(f"unknown tokenizer {meta.get('tokenizer')!r} in the dataset's meta.json (expected 'char' or "
                     f"'gpt2'): prepare the data again with data/*/prepare.py")
