"""Generation with the autoregressive baseline: one token per model call, with a KV cache.

docs/method.md section 2 (the causal model) and section 6 (the speed reference and the judge). Choices:

- With the cache (the default) the prompt is run once (prefill) and every later call feeds only the
  newest token, whose queries attend to the cached keys and values. Without it the whole prefix is
  recomputed at every step: slow, but the plain definition, the reference a test holds the cache to.
- An AR model has no BOS token, so a prompt of at least one token is required (sample.py starts from
  end-of-text or a newline), and prompt + new tokens must fit in block_size: rotary positions past it
  were never trained, and the cache holds block_size positions.
- The draw is the DFM samplers' exact one (`categorical.sample_logits`) from the tempered top-k logits.
- A compiled model (`engine.compile`) gets the static cache (`KVCache`): the one-token step has the
  same shapes at every position and compiles once. A longer prompt is prefilled eagerly: compiling it
  would compile once per prompt length and turn the step's graph dynamic (dynamo's automatic dynamic
  shapes). Eager keeps the dynamic cache: attending to all block_size positions under a mask is slower.
"""

import contextlib

import torch

from nanodfm.categorical import sample_logits
from nanodfm.config import UsageError
from nanodfm.engine import is_compiled


class KVCache:
    """Keys and values of past positions for causal generation, preallocated for the block_size positions
    of a model of this ModelConfig, one tensor per layer (under torch.compile an in-place write to a slice
    of one tensor for all layers became a copy of the whole cache at every step). Two ways to read it,
    results equal up to float rounding:
    - dynamic (default): `pos` is a Python int; new keys go into a slice and attention runs over the
      prefix `:pos + T`. Every call has new shapes, so torch.compile would recompile.
    - static=True: `pos` is a long tensor; new keys are written with `index_copy_` at `pos + arange(T)`,
      and attention runs over all block_size positions under a mask (key position <= query position), so
      every call with T new tokens has the same shapes. Bounds are not checked here (that would read the
      tensor back); `generate` checks them."""

    def __init__(self, config, batch_size, device, dtype=torch.float32, static=False):
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.static = static
        self.pos = torch.zeros((), dtype=torch.long, device=device) if static else 0  # positions cached so far
        self.key_pos = torch.arange(config.block_size, device=device) if static else None

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


def next_token(logits, temperature=1.0, top_k=None, generator=None):
    """One token id per row of logits (B, V), drawn from the tempered top-k softmax."""
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


@torch.no_grad()
def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, use_cache=True, generator=None,
             static_cache=None):
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
    # keys and values in the dtype attention computes them in (autocast's, if on)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else next(model.parameters()).dtype
    static = is_compiled(model) if static_cache is None else static_cache
    cache = KVCache(model.config, B, x.device, dtype, static) if use_cache else None
    for i in range(max_new_tokens):
        end = T0 + i  # tokens written so far
        if cache is None:
            logits = model(x[:, :end])  # (B, end, V): the whole prefix again
        elif i == 0:  # prefill the prompt once (eagerly: see the module's docstring)
            with torch.compiler.set_stance("force_eager") if T0 > 1 else contextlib.nullcontext():
                logits = model(x[:, :end], cache=cache)
        else:  # then feed only the newest token
            logits = model(x[:, end - 1:end], cache=cache)  # (B, 1, V)
        x[:, end] = next_token(logits[:, -1], temperature, top_k, generator)
    return x
