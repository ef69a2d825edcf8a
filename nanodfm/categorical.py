"""The engine's draw: exact categorical draws from logits at about the cost of one pass over them.

For speed only (engine.py; docs/speed.md, "The engine", items 2 and 3): the reference draws from
float64 probabilities (`sampler.draw`), and this module draws the same law (tests/test_categorical.py).
With GPT-2's vocabulary the draw can cost more than a narrow model's forward, so it has two levels:
1. One pass over the logits, in chunks of rows that fit in cache, sums 2^(z scale - shift) over blocks
   of BLOCK tokens (`logit_blocks`, or `output_blocks` fused with the output layer): a row becomes a
   shift and V / BLOCK block masses. scale = log2(e) / T (`scale_for`), exp2 being the faster kernel
   on CPUs; the shift (the row's maximum) is needed only where float32 would overflow or underflow.
2. Inverse CDF with float64 sums: a block from the cumulative block masses, then a token from the
   float64 weights of that block alone, recomputed from the logits (`block_weights`).
The draw is exact: P(token j) = w_j / sum(w), the weights carrying float32's relative precision of the
scaled logits and the sums float64, so a token of probability 1e-12 is drawn 1e-12 of the time. A
token excluded per row (`exclude`, the current token of a uniform-source jump) has its block
recomputed in float64 without it, so nothing cancels against a dominant p(x_t).
"""

import torch
import torch.nn.functional as F

from nanodfm.path import uniform

BLOCK = 256  # tokens per block: 197 blocks for GPT-2's 50257
LOG2E = 1.4426950408889634


def scale_for(temperature):
    """The factor that turns logits z into base-2 log-weights at a temperature: e^(z/T) = 2^(z scale)."""
    return LOG2E / temperature


def block_shape(V):
    """(block size, number of blocks) for a vocabulary of V."""
    size = min(BLOCK, V)
    return size, -(-V // size)


# exp2 of float32 overflows at 2^128 and leaves the normal range below 2^-126. A row whose largest
# log-weight m = max z scale lies in [LOW, HIGH] can be exponentiated as it is: its block sums
# stay below V 2^HIGH < 2^(HIGH + 16), and every token within 2^-(LOW + 126) of the top keeps float32's
# precision. Its total S bounds m without a separate pass: 2^m <= S <= V 2^m.
LOW, HIGH = -30.0, 100.0


def _shift_where_needed(z, rows, masses, scale, chunk_elements):
    """(shifts (N,), masses (N, blocks) float64): rows whose unshifted masses leave [LOW, HIGH]
    are summed again, shifted by their largest log-weight."""
    masses = masses.double()
    shifts = torch.zeros(masses.shape[0], device=z.device)
    total = masses.sum(-1)
    redo = ~((total > z.shape[1] * 2.0 ** LOW) & (total < 2.0 ** HIGH))  # also NaN: a row of -inf or +inf logits
    if redo.any():  # rare: logits beyond a few tens, or a low temperature
        again = redo.nonzero().squeeze(1)
        shifts[again], masses[again] = logit_blocks(z, again if rows is None else rows[again], scale=scale,
                                                    chunk_elements=chunk_elements, shift_all=True)
    return shifts, masses


def host_shortcuts(device):
    """Whether to take shortcuts that read a tensor's value on the host (skip rows that need no work, shift
    only the rows that ask for it): free on a CPU; on a GPU a sync that stalls the kernels, so not there."""
    return torch.device(device).type == "cpu"


@torch.no_grad()
def logit_blocks(z, rows=None, *, scale=LOG2E, chunk_elements=None, shift_all=None):
    """(shifts (N,) float32, masses (N, blocks) float64) of the rows `rows` (N,) of z (R, V), or of all:
    masses[i, b] = sum over the tokens j of block b of 2^(z[i, j] scale - shifts[i]). The shift is the
    row's maximum where shift_all is true (None: on a GPU, `host_shortcuts`), else 0 where the row's
    total allows it. chunk_elements: rows x V per chunk (None: 2 MB, in cache, on a CPU; 64 MB on a GPU)."""
    N = z.shape[0] if rows is None else rows.shape[0]
    size, blocks = block_shape(z.shape[1])
    chunk_elements = chunk_elements or (2**19 if z.device.type == "cpu" else 2**24)
    per_chunk = max(1, chunk_elements // (size * blocks))
    buf = torch.zeros(min(per_chunk, max(N, 1)), size * blocks, device=z.device)  # the padding weighs 0
    masses, shifts = torch.empty(N, blocks, device=z.device), torch.zeros(N, device=z.device)
    shift_all = not host_shortcuts(z.device) if shift_all is None else shift_all
    for start in range(0, N, per_chunk):
        part = slice(start, start + per_chunk)
        chunk = z[part] if rows is None else z[rows[part]]
        r, c = chunk.shape
        if shift_all:  # 2^(z scale - the row's largest z scale)
            shifts[part] = chunk.amax(dim=-1).float() * scale
            torch.add(shifts[part, None] * -1.0, chunk, alpha=scale, out=buf[:r, :c])
        else:  # in float32 even for bfloat16 logits, as block_weights
            torch.mul(chunk.float(), scale, out=buf[:r, :c])
        buf[:r, :c].exp2_()  # the columns past c stay 0
        masses[part] = buf[:r].view(r, -1, size).sum(-1)
    return (shifts, masses.double()) if shift_all else _shift_where_needed(z, rows, masses, scale, chunk_elements)


@torch.no_grad()
def output_blocks(features, weight, temperature=1.0, chunk_elements=None, out=None):
    """(a (N, V), shifts, masses): the output layer z = features weight^T (features (N, D), weight (V, D))
    fused with `logit_blocks(z, scale=scale_for(temperature))`, a = z scale (the matmul applies the scale
    for free: pass scale=1 with a). On a CPU z is computed in bands of vocabulary columns (chunk_elements:
    rows x columns), each exponentiated and summed while still in cache; a GPU runs the two steps. out: a
    float32 tensor of >= N x V elements to write a into (kept across steps: a fresh one costs page faults)."""
    scale = scale_for(temperature)
    if not host_shortcuts(features.device):
        a = F.linear(features * scale, weight)  # in autocast's dtype, if on; chunks are read as float32
        return (a, *logit_blocks(a, None, scale=1.0))
    features = features.to(weight.dtype)  # bfloat16 under autocast: the bands are computed in float32
    N, V = features.shape[0], weight.shape[0]
    size, blocks = block_shape(V)
    chunk_elements = chunk_elements or 2**19  # 2 MB
    rows_per_group = max(1, min(N, chunk_elements // size))  # at least one block of columns per band
    cols = max(1, chunk_elements // rows_per_group // size) * size  # whole blocks
    z = out.reshape(-1)[:N * V].view(N, V) if out is not None else torch.empty(N, V, device=features.device)
    masses = torch.empty(N, blocks, device=features.device)
    buf = torch.empty(rows_per_group, min(cols, size * blocks), device=features.device)
    for r0 in range(0, N, rows_per_group):
        f = features[r0:r0 + rows_per_group]
        r = f.shape[0]
        for c0 in range(0, V, cols):
            c1 = min(V, c0 + cols)
            band = buf[:r, :c1 - c0]
            torch.addmm(band, f, weight.t()[:, c0:c1], beta=0, alpha=scale, out=band)  # z scale
            z[r0:r0 + r, c0:c1] = band
            padded = -(-(c1 - c0) // size) * size  # whole blocks: the last one's padding must weigh 0
            buf[:r, c1 - c0:padded] = 0
            band.exp2_()
            sums = buf[:r, :padded].view(r, -1, size).sum(-1)
            masses[r0:r0 + r, c0 // size:c0 // size + sums.shape[1]] = sums
    shifts, masses = _shift_where_needed(z, None, masses, 1.0, chunk_elements)
    return z, shifts, masses


def block_weights(z, rows, block, shifts, *, scale=LOG2E):
    """(weights (N, size) float64, token ids (N, size)): 2^(z scale - shift) of block `block` (N,) of
    the rows `rows` (N,) of z (R, V), 0 past the vocabulary."""
    V = z.shape[1]
    size, _ = block_shape(V)
    ids = block[:, None] * size + torch.arange(size, device=z.device)  # (N, size)
    logits = z.reshape(-1)[rows[:, None] * V + ids.clamp(max=V - 1)].double()
    weights = torch.exp2(logits * scale - shifts.double()[:, None])
    return weights.masked_fill(ids >= V, 0.0), ids


def without_token(z, rows, token, shifts, masses, *, scale=LOG2E):
    """(masses without `token`, its weight (N,)): the block masses of rows `rows` with the block
    holding `token` (N,) recomputed in float64 without it, and 2^(z[token] scale - shift)."""
    size, _ = block_shape(z.shape[1])
    weights, ids = block_weights(z, rows, token // size, shifts, scale=scale)
    own = ids == token[:, None]
    others = masses.scatter(1, (token // size)[:, None], (weights * ~own).sum(-1, keepdim=True))
    return others, (weights * own).sum(-1)


def draw(z, rows, shifts, masses, *, scale=LOG2E, exclude=None, generator=None):
    """One token id per row `rows` (N,) of z (R, V), drawn with weights 2^(z scale), i.e. from
    softmax(z / T) for scale = scale_for(T), by inverse CDF. shifts (N,) and masses (N, blocks) are
    from `logit_blocks` (or `without_token`, where the token `exclude` (N,) is left out; -1: none)."""
    size, blocks = block_shape(z.shape[1])
    u = uniform((rows.shape[0], 2), generator, z.device, torch.float64)
    cdf = masses.cumsum(-1)  # (N, blocks)
    block = torch.searchsorted(cdf, u[:, :1] * cdf[:, -1:], right=True).clamp(max=blocks - 1).squeeze(1)
    weights, ids = block_weights(z, rows, block, shifts, scale=scale)
    if exclude is not None:
        weights = weights.masked_fill(ids == exclude[:, None], 0.0)
    cdf = weights.cumsum(-1)  # (N, size)
    token = torch.searchsorted(cdf, u[:, 1:] * cdf[:, -1:], right=True).clamp(max=size - 1).squeeze(1)
    return block * size + token


def sample_logits(z, temperature=1.0, generator=None):
    """One token id per row of logits z (N, V) from softmax(z / temperature); -inf entries never."""
    scale = scale_for(temperature)
    shifts, masses = logit_blocks(z, None, scale=scale)
    return draw(z, torch.arange(z.shape[0], device=z.device), shifts, masses, scale=scale, generator=generator)
