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
- A compiled model (`engine.compile`) gets the static KV cache (`KVCache`): the one-token step
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
from nanodfm.engine import is_compiled


class KVCache:
    """Keys and values of past positions for causal generation, preallocated per layer.

    Two ways to read it, results equal up to float rounding:
    - dynamic (default): `pos` is a Python int; new keys go into a slice and attention runs over the
      prefix `:pos + T`. Least work in eager, but every call has new shapes, so torch.compile would
      recompile, then trace with dynamic shapes.
    - static=True: `pos` is a long tensor; new keys are written with `index_copy_` at positions
      `pos + arange(T)`, and attention runs over all max_len cached positions under a mask (key
      position <= query position; the unwritten zeros are masked out). Every call with T new tokens
      has the same shapes and no Python int that changes, so a compiled model compiles once per T.
      Bounds are not checked here (that would read the tensor back); `generate` checks them.
    Each layer has its own k and v tensors: under torch.compile an in-place write to a slice of one
    tensor for all layers became a copy of the whole cache at every step.
    """

    def __init__(self, n_layer, batch_size, n_head, max_len, head_dim, device, dtype=torch.float32, static=False):
        shape = (batch_size, n_head, max_len, head_dim)  # one tensor per layer (below)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.static = static
        # number of positions already cached
        self.pos = torch.zeros((), dtype=torch.long, device=device) if static else 0
        self.key_pos = torch.arange(max_len, device=device) if static else None

    def positions(self, T):
        """Positions (T,) of T new tokens: a tensor for the static cache, a slice for the dynamic one."""
        if self.static:
            return self.pos + self.key_pos[:T]
        return slice(self.pos, self.pos + T)

    def update(self, layer, k, v):
        """Store k, v (B, H, T, hd) after the cached ones; return the keys and values to attend to
        and the boolean mask (T, keys) of those each new query sees (None: all of them)."""
        T = k.shape[2]
        if self.static:
            at = self.positions(T)
            self.k[layer].index_copy_(2, at, k)
            self.v[layer].index_copy_(2, at, v)
            return self.k[layer], self.v[layer], self.key_pos <= at[:, None]
        end = self.pos + T
        if end > self.k[layer].shape[2]:
            raise ValueError(f"KV cache holds {self.k[layer].shape[2]} positions; asked for {end}")
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        # new queries see every cached key and the new ones up to themselves; one query sees all
        mask = torch.ones(T, end, dtype=torch.bool, device=k.device).tril(self.pos) if T > 1 else None
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end], mask


def new_cache(model, batch_size, device, dtype=torch.float32, static=False):
    """An empty KVCache for `model`'s block_size positions."""
    c = model.config
    return KVCache(c.n_layer, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head, device, dtype, static)


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
    static_cache: use the static-shape KV cache (`KVCache`); None: if the model's trunk is compiled."""
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
    cache = new_cache(model, B, x.device, cache_dtype(model, x.device), static_cache) if use_cache else None
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
