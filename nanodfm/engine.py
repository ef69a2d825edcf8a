"""The engine: `sampler.step`'s law, drawn fast. It exists for speed only; the method is sampler.py.

Every function here draws from the same law as its counterpart in sampler.py (tests/test_engine.py:
chi-square of one-step transitions for both sources and both rules, and whole samples), and the
scripts that sample many sequences use it. What makes it faster (docs/speed.md):

- Candidates. The jump probability is largest at p(x_t) = 0 (it falls as p(x_t) grows), so a position
  whose jump test fails there cannot move whatever the model says. The tests are drawn first and the
  model is asked only at the candidates, on the rows that have any: under the uniform source at 8
  steps two thirds of the positions need no logits, at 1024 steps all but a few. Under the mask
  source every candidate moves (its test passed at p(MASK) = 0), so there is no second test.
- The output layer fused with the softmax pass (`categorical.output_blocks`): the model's `trunk`
  gives what enters its `head`, and the logits are computed in bands of vocabulary columns, each
  exponentiated and summed into block masses while in cache.
- The block-mass inverse-CDF draw (`categorical.draw`): two uniforms per moving position and one
  block of float64 weights, instead of float64 probabilities over the whole vocabulary.
- One workspace for the logits of every step (`Workspace`).
"""

import torch
from tqdm import tqdm

from nanodfm import categorical
from nanodfm.config import UsageError
from nanodfm.path import uniform
from nanodfm.sampler import SAMPLERS, jump_probability


def candidates(x, t, h, path, sampler, u, fixed=None):
    """(B, L) bool: the positions that may move in this step whatever the model says: those that may
    change (masked, under the mask source; not `fixed`) whose jump test u passes at p(x_t) = 0, or
    all of them in a row taking the final step. t, h (B,)."""
    can_change = x == path.mask_id if path.source == "mask" else torch.ones_like(x, dtype=torch.bool)
    if fixed is not None:
        can_change &= ~fixed
    p_zero = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    return can_change & (final(t, h) | (u < jump_probability(p_zero, t, h, path, sampler)))


def final(t, h):
    """(B, 1) bool: rows whose step ends at t = 1 (float32 t: (S-1)/S + 1/S may fall just short of 1)."""
    return (t + h >= 1 - 1e-6)[:, None]


def _move(x, z, rows, blocks, t, h, path, sampler, u, maybe, generator):
    """x after the step (B, L), given the logits z of the candidates `maybe` at rows `rows` of z
    (in the candidates' order), their block pass `blocks` = (scale, shifts, masses) and the jump
    tests u (B, L) they were chosen with."""
    B, L = x.shape
    V = z.shape[-1]
    flat = maybe.reshape(-1).nonzero().squeeze(1)  # (C,) positions in x
    current = x.reshape(-1)[flat]
    scale, shifts, masses = blocks
    exclude = None
    if path.source == "mask":  # a candidate's test passed at p(x_t) = 0, which is p(MASK): all of them move
        moving_at = flat
    else:
        others, own = categorical.without_token(z, rows, current, shifts, masses, scale=scale)
        p_xt = torch.ones(B * L, dtype=torch.float64, device=x.device)  # 1: no jump; only candidates need p
        p_xt[flat] = own / (own + others.sum(-1))  # the others' mass is a float64 sum of blocks
        ends = final(t, h)
        moves = maybe & (ends | (u < jump_probability(p_xt.reshape(B, L), t, h, path, sampler)))
        go = moves.reshape(-1)[flat]  # (C,) the candidates that move
        rows, shifts, current, others, own = rows[go], shifts[go], current[go], others[go], own[go]
        # a jump goes to a token other than the current one; the final draw is free
        jump = ~ends.expand(B, L).reshape(-1)[flat[go]]
        own_block = (current // categorical.block_shape(V)[0])[:, None]
        masses = torch.where(jump[:, None], others, others.scatter_add(1, own_block, own[:, None]))
        exclude = torch.where(jump, current, -1)
        moving_at = flat[go]
    x = x.clone()
    x.view(-1)[moving_at] = categorical.draw(z, rows, shifts, masses, scale=scale, exclude=exclude, generator=generator)
    return x


def step(x, logits, t, h, path, sampler="cumulative", temperature=1.0, fixed=None, generator=None):
    """`sampler.step`, same arguments and law: reads only the candidates' rows of logits (B, L, V),
    with one block pass and a block draw each (the distillation teacher's half steps use it)."""
    B, L = x.shape
    h = torch.as_tensor(h, dtype=torch.float64, device=x.device).expand(B)
    u = uniform(x.shape, generator, x.device, torch.float64)
    maybe = candidates(x, t, h, path, sampler, u, fixed)
    rows = maybe.reshape(-1).nonzero().squeeze(1)
    z = logits.reshape(B * L, -1)
    scale = categorical.scale_for(temperature)
    blocks = (scale, *categorical.logit_blocks(z, rows, scale=scale))
    return _move(x, z, rows, blocks, t, h, path, sampler, u, maybe, generator)


class Workspace:
    """One float32 buffer for the logits of the steps to come, grown by doubling up to `limit`
    elements: a fresh tensor of tens of MB at every step costs a page fault per 4 kB on a CPU."""

    def __init__(self, limit):
        self.buffer, self.limit = None, limit

    def get(self, n, device):
        if torch.device(device).type != "cpu":
            return None
        if self.buffer is None or self.buffer.numel() < n:
            self.buffer = torch.empty(min(2 * n, self.limit))
        return self.buffer


def model_step(model, x, t, h, path, sampler, temperature, fixed, generator, workspace):
    """One step of `sample`: the jump tests first, then the model's trunk only at the candidates of
    the rows that have any, its head fused with the block pass. h: the step size as (B,) float64."""
    u = uniform(x.shape, generator, x.device, torch.float64)
    maybe = candidates(x, t, h, path, sampler, u, fixed)
    rows = maybe.any(-1)  # (B,)
    if rows.all():  # the common case: no row to leave out (indexing would copy every tensor)
        rows = slice(None)
    elif rows.any():
        rows = rows.nonzero().squeeze(1)
    else:
        return x
    step_size = h[rows].float() if model.config.step_conditioned else None
    features = model.trunk(x[rows], t[rows], step_size, positions=maybe[rows])  # (C, D)
    out = workspace.get(features.shape[0] * path.vocab_size, x.device)
    logits, shifts, masses = categorical.output_blocks(features, model.head.weight, temperature, out=out)
    at = torch.arange(logits.shape[0], device=x.device)  # the logits' rows are the candidates, in order
    moved = _move(x[rows], logits, at, (1.0, shifts, masses), t[rows], h[rows], path, sampler, u[rows], maybe[rows],
                  generator)  # scale 1: output_blocks' logits are already base-2 log-weights
    if isinstance(rows, slice):
        return moved
    x = x.clone()
    x[rows] = moved
    return x


@torch.no_grad()
def sample(model, path, num_samples, seq_len, steps, sampler="cumulative", temperature=1.0, prompt=None,
           generator=None, device="cpu", on_step=None, progress=False):
    """`sampler.sample`, same arguments and law, for a model with a `trunk` and a bias-free `head`
    (model.Transformer)."""
    if steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps}")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    shape = (num_samples, seq_len)
    x = path.source_tokens(shape, generator, device)
    last_change = torch.zeros(shape, dtype=torch.long, device=device)
    fixed = None
    if prompt is not None:
        prompt = prompt.to(device).expand(shape)
        fixed = prompt >= 0
        x = torch.where(fixed, prompt, x)
        last_change[fixed] = -1
    h = torch.full((num_samples,), 1.0 / steps, dtype=torch.float64, device=device)
    workspace = Workspace(num_samples * seq_len * path.vocab_size)
    for s in tqdm(range(steps), disable=not progress, desc="sampling", leave=False):
        t = torch.full((num_samples,), s * (1.0 / steps), device=device)
        x_next = model_step(model, x, t, h, path, sampler, temperature, fixed, generator, workspace)
        last_change[x_next != x] = s
        x = x_next
        if on_step is not None:
            on_step(s, x, last_change)
    return x, last_change
