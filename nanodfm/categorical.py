"""Exact categorical draws from logits at about the cost of one pass over them.

docs/method.md section 4. Every sampler step draws, for each moving position, one token from
softmax(z / temperature) over V entries, and under the uniform source it first needs p(x_t) of
every position. With GPT-2's vocabulary that work can exceed the model's forward (a narrow model's
output layer costs 2 n_embd FLOPs per logit), so it is done in two levels:

1. One pass over the logits, in chunks of rows that fit in cache: shift by the row's maximum,
   exponentiate, and sum blocks of BLOCK consecutive tokens (`logit_blocks`). Nothing of size V is
   kept: a row becomes its maximum and V / BLOCK block masses.
2. Inverse CDF with float64 sums: a block is drawn from the cumulative block masses, then a token
   from the float64 cumulative weights of that block alone, recomputed from the logits
   (`block_weights`). Two uniforms per row; no per-entry noise.

The draw is exact: P(token j) = w_j / sum(w) with w = exp(z / T - max), the weights carrying
float32's relative precision of the shifted logits (as a float32 softmax would: a few 1e-6 where
p ~ 1e-26) and the cumulative sums float64, so a token of probability 1e-12 is drawn 1e-12 of the
time (tests/test_categorical.py: chi-square, and the u-interval of every token). A token
can be excluded per row (`exclude`, the current token of a uniform-source jump): its block is
recomputed in float64 without it, so no cancellation against a dominant p(x_t) occurs, and the rest
of that block keeps its precision.
"""

import torch

from nanodfm.path import uniform

BLOCK = 256  # tokens per block: 197 blocks for GPT-2's 50257
LOG2E = 1.4426950408889634


def block_shape(V):
    """(block size, number of blocks) for a vocabulary of V."""
    size = min(BLOCK, V)
    return size, -(-V // size)


@torch.no_grad()
def logit_blocks(z, rows=None, temperature=1.0, chunk_elements=2**19):
    """(max (N,) float32, masses (N, blocks) float64) of the rows `rows` (N,) of z (R, V), or of all.

    masses[i, b] = sum over the tokens j of block b of exp(z[i, j] / temperature - max[i]).
    """
    R, V = z.shape
    N = R if rows is None else rows.shape[0]
    size, blocks = block_shape(V)
    per_chunk = max(1, chunk_elements // (size * blocks))
    buf = torch.zeros(min(per_chunk, max(N, 1)), size * blocks, device=z.device)  # the padding weighs 0
    maxima = torch.empty(N, device=z.device)
    masses = torch.empty(N, blocks, device=z.device)
    scale = LOG2E / temperature  # exp(a) = 2^(a log2 e): exp2 is the faster kernel on CPUs
    for start in range(0, N, per_chunk):
        chunk = z[start:start + per_chunk] if rows is None else z[rows[start:start + per_chunk]]
        r = chunk.shape[0]
        top = chunk.amax(dim=-1, keepdim=True).float()
        maxima[start:start + r] = top.squeeze(1) / temperature
        w = buf[:r, :V]
        torch.add(top * -scale, chunk, alpha=scale, out=w)  # (z - max) log2(e) / T in one pass
        w.exp2_()
        masses[start:start + r] = buf[:r].view(r, blocks, size).sum(-1)
    return maxima, masses.double()


def block_weights(z, rows, block, maxima, temperature=1.0):
    """(weights (N, size) float64, token ids (N, size)): exp(z / T - max) of block `block` (N,) of
    the rows `rows` (N,) of z (R, V), 0 past the vocabulary."""
    V = z.shape[1]
    size, _ = block_shape(V)
    ids = block[:, None] * size + torch.arange(size, device=z.device)  # (N, size)
    logits = z.reshape(-1)[rows[:, None] * V + ids.clamp(max=V - 1)].double()
    weights = torch.exp(logits / temperature - maxima.double()[:, None])
    return weights.masked_fill(ids >= V, 0.0), ids


def without_token(z, rows, token, maxima, masses, temperature=1.0):
    """(masses without `token`, its weight (N,)): the block masses of rows `rows` with the block
    holding `token` (N,) recomputed in float64 without it, and exp(z[token] / T - max)."""
    size, _ = block_shape(z.shape[1])
    weights, ids = block_weights(z, rows, token // size, maxima, temperature)
    own = ids == token[:, None]
    weight = (weights * own).sum(-1)
    return masses.scatter(1, (token // size)[:, None], (weights * ~own).sum(-1, keepdim=True)), weight


def draw(z, rows, maxima, masses, temperature=1.0, exclude=None, generator=None):
    """One token id per row `rows` (N,) of z (R, V), drawn from softmax(z / T), by inverse CDF.

    maxima (N,) and masses (N, blocks) are from `logit_blocks` (or `without_token`, where the token
    `exclude` (N,) is left out; -1: none)."""
    N = rows.shape[0]
    size, blocks = block_shape(z.shape[1])
    u = uniform((N, 2), generator, z.device, torch.float64)
    cdf = masses.cumsum(-1)  # (N, blocks)
    block = torch.searchsorted(cdf, u[:, :1] * cdf[:, -1:], right=True).clamp(max=blocks - 1).squeeze(1)
    weights, ids = block_weights(z, rows, block, maxima, temperature)
    if exclude is not None:
        weights = weights.masked_fill(ids == exclude[:, None], 0.0)
    cdf = weights.cumsum(-1)  # (N, size)
    token = torch.searchsorted(cdf, u[:, 1:] * cdf[:, -1:], right=True).clamp(max=size - 1).squeeze(1)
    return block * size + token


def sample_logits(z, temperature=1.0, generator=None):
    """One token id per row of logits z (N, V) from softmax(z / temperature); -inf entries never."""
    rows = torch.arange(z.shape[0], device=z.device)
    maxima, masses = logit_blocks(z, None, temperature)
    return draw(z, rows, maxima, masses, temperature, generator=generator)
