"""Generation with the autoregressive baseline: one token per model call, with a KV cache.

docs/method.md section 2 (the causal model) and section 6 (the speed reference and the judge).
Choices:

- With the cache (the default) the prompt is run once (prefill) and every later call feeds only the
  newest token, whose queries attend to the cached keys and values. Without it the whole prefix is
  recomputed at every step: slow, but the plain definition, so it is the reference a test holds the
  cache to.
- An AR model without a BOS token cannot start from nothing, so a prompt of at least one token is
  required. sample.py starts from the end-of-text token (GPT-2) or a newline (char vocabularies).
- The whole sequence (prompt + new tokens) must fit in block_size: rotary positions past it were
  never trained, and the cache is allocated for block_size positions.
- Logits are scaled by 1 / temperature in float32, top-k keeps the k largest, and the draw is the
  DFM samplers' exact one (`categorical.sample_logits`).
- The tokens go into a buffer allocated once for the whole sequence; each call feeds a view of it.
- A compiled model (`model.compile`) gets the static KV cache (`model.KVCache`): the one-token step
  then has the same shapes at every position and compiles once. Eager keeps the dynamic cache,
  which attends to the cached prefix only: attending to all block_size positions under a mask makes
  eager decoding slower.
- A prompt of more than one token is prefilled eagerly (one call): compiling it
  would compile once per prompt length and, through dynamo's automatic dynamic shapes, turn the
  one-token step's graph dynamic.
"""

import contextlib

import torch

from nanodfm.categorical import sample_logits
from nanodfm.config import UsageError
from nanodfm.model import is_compiled


def next_token(logits, temperature=1.0, top_k=None, greedy=False, generator=None):
    """One token id per row of logits (B, V): argmax, or a draw from the tempered top-k softmax."""
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return sample_logits(logits, generator=generator)


def start_token(tokenizer):
    """The id to start from when there is no prompt: end-of-text (GPT-2), else a newline, else 0."""
    if tokenizer.eot is not None:
        return tokenizer.eot
    try:
        return tokenizer.encode("\n")[0]
    except ValueError:  # a char vocabulary without a newline
        return 0


def cache_dtype(model, device):
    """Keys and values are stored in the dtype attention computes them in (autocast's, if on)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


@torch.no_grad()
def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, greedy=False, use_cache=True,
             generator=None, static_cache=None):
    """Continue prompt_ids (B, T0) by max_new_tokens tokens; returns (B, T0 + max_new_tokens).
    static_cache: use the static-shape KV cache (`model.KVCache`); None: if the model's trunk is compiled."""
    if not model.config.causal:
        raise ValueError("generate needs a causal (kind=ar) model")
    B, T0 = prompt_ids.shape
    if T0 < 1:
        raise UsageError("an autoregressive model needs at least one prompt token (it has no BOS token)")
    total, block_size = T0 + max_new_tokens, model.config.block_size
    if total > block_size:
        raise UsageError(f"prompt ({T0} tokens) + {max_new_tokens} new tokens = {total} exceeds the model's "
                         f"block_size {block_size}: shorten the prompt or generate fewer tokens")
    x = torch.empty(B, total, dtype=prompt_ids.dtype, device=prompt_ids.device)
    x[:, :T0] = prompt_ids
    if static_cache is None:
        static_cache = is_compiled(model)
    cache = model.new_cache(B, x.device, cache_dtype(model, x.device), static_cache) if use_cache else None
    for i in range(max_new_tokens):
        end = T0 + i  # tokens written so far
        if cache is None:
            logits = model(x[:, :end])  # (B, end, V): the whole prefix again
        elif i == 0:  # prefill the prompt once (eagerly: see the module's docstring)
            with torch.compiler.set_stance("force_eager") if T0 > 1 else contextlib.nullcontext():
                logits = model(x[:, :end], cache=cache)
        else:  # then feed only the newest token
            logits = model(x[:, end - 1:end], cache=cache)  # (B, 1, V)
        x[:, end] = next_token(logits[:, -1], temperature, top_k, greedy, generator)
    return x
