"""Sample from a trained model.

    python sample.py --ckpt=out-shakespeare-char/ckpt.pt --steps=64
    python sample.py --ckpt=out-student/ckpt.pt --steps=8 --start="ROMEO:"
    python sample.py --ckpt=out-shakespeare-char/ckpt.pt --sampler=euler --start=FILE:prompt.txt

A DFM model or a few-step student writes all `length` tokens in parallel over `steps` model calls;
a prompt (--start) is clamped as a prefix and never resampled. An autoregressive checkpoint (kind=ar)
writes them one at a time with its KV cache (--temperature, --top_k); --steps does not apply.
"""

import sys

import torch

from nanodfm import checkpoint
from nanodfm.autoregressive import generate, start_token
from nanodfm.config import UsageError, parse
from nanodfm.sampler import METHODS, sample
from nanodfm.tokenizer import load_tokenizer

# ----------------------------------------------------------------------------- defaults
ckpt = "out/ckpt.pt"
steps = 64  # model calls per sample (NFE)
sampler = "cumulative"  # "cumulative" (FS-DFM) or "euler" (DFM)
num_samples = 2
length = 0  # tokens per sample; 0: the model's block_size
start = ""  # prompt text, or FILE:path to read it from a file
temperature = 1.0
top_k = 0  # AR checkpoints: draw from the k most likely tokens only; 0: off
seed = 1337
device = "auto"
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}
FEW_STEPS = 64  # below this, a model that was not distilled is sampled far from its accuracy


def read_prompt(text):
    if not text.startswith("FILE:"):
        return text
    path = text[len("FILE:"):]
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read prompt file {path!r}: {e.strerror}") from None


def prompt_tensors(prompt_ids, seq_len):
    """A prefix prompt as (prompt (L,), fixed (L,)) for the sampler; (None, None) without one."""
    if not prompt_ids:
        return None, None
    if len(prompt_ids) >= seq_len:
        raise UsageError(f"the prompt is {len(prompt_ids)} tokens but samples are {seq_len} long: "
                         f"shorten it or raise --length (at most the model's block_size)")
    prompt = torch.zeros(seq_len, dtype=torch.long)
    prompt[:len(prompt_ids)] = torch.tensor(prompt_ids)
    fixed = torch.arange(seq_len) < len(prompt_ids)
    return prompt, fixed


def sample_ar(model, tokenizer, prompt_ids, seq_len, cfg, dev):
    """An AR checkpoint writes token by token with its KV cache (nanodfm/autoregressive.py). It has no
    BOS token: without --start it starts from one end-of-text token (GPT-2) or a newline (char)."""
    prompt_ids = prompt_ids or [start_token(tokenizer)]
    if cfg["top_k"] < 0:
        raise UsageError(f"--top_k must be 0 (off) or positive, got {cfg['top_k']}")
    prompt = torch.tensor(prompt_ids, device=dev).expand(cfg["num_samples"], -1)  # (B, T0)
    generator = torch.Generator(dev).manual_seed(cfg["seed"])
    x = generate(model, prompt, seq_len - len(prompt_ids), cfg["temperature"], cfg["top_k"] or None, generator=generator)
    for i, ids in enumerate(x.tolist()):
        print(f"---------- sample {i + 1}/{len(x)}, autoregressive")
        print(tokenizer.decode(ids))


def main(argv):
    cfg = parse(DEFAULTS, argv)
    if cfg["steps"] <= 0:
        raise UsageError(f"--steps must be a positive integer, got {cfg['steps']}")
    if cfg["sampler"] not in METHODS:
        raise UsageError(f"--sampler must be one of {', '.join(METHODS)}, got {cfg['sampler']!r}")
    if cfg["temperature"] <= 0:
        raise UsageError(f"--temperature must be positive, got {cfg['temperature']}")
    dev = cfg["device"]
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    ck = checkpoint.load(cfg["ckpt"], kinds=("dfm", "student", "ar"))
    student = ck["kind"] == "student"
    model = checkpoint.build_model(ck, weights="ema" if student else "model").to(dev).eval()
    tokenizer = load_tokenizer(ck["meta"])
    seq_len = cfg["length"] or model.config.block_size
    if not 0 < seq_len <= model.config.block_size:
        raise UsageError(f"--length must be in [1, {model.config.block_size}] (the model's block_size), got {seq_len}")
    if ck["kind"] == "dfm" and cfg["steps"] < FEW_STEPS:
        print(f"warning: this DFM model was not distilled for few steps; with {cfg['steps']} steps expect poor "
              f"samples (distil it: python train.py --kind=student --init_from={cfg['ckpt']})", file=sys.stderr)
    try:
        prompt_ids = tokenizer.encode(read_prompt(cfg["start"]))
    except ValueError as e:  # characters outside a char vocabulary
        raise UsageError(str(e)) from None
    prompt, fixed = prompt_tensors(prompt_ids, seq_len)  # also rejects a prompt as long as the samples
    if ck["kind"] == "ar":
        return sample_ar(model, tokenizer, prompt_ids, seq_len, cfg, dev)
    generator = torch.Generator(dev).manual_seed(cfg["seed"])
    x, _ = sample(model, cfg["num_samples"], seq_len, cfg["steps"], ck["config"]["source"], cfg["sampler"],
                  ck["config"]["kappa_power"], cfg["temperature"], prompt, fixed, step_size_input=student,
                  generator=generator, device=dev, progress=True)
    for i, ids in enumerate(x.tolist()):
        print(f"---------- sample {i + 1}/{len(x)}, {cfg['steps']} steps, {cfg['sampler']}")
        print(tokenizer.decode(ids))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        sys.exit(f"error: {e}")
