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

from nanodfm import categorical, sampler as reference
from nanodfm.sampler import Schedule, jump_probability, jump_tests, start

# The step rules (sampler.STEP_RULES) drawn here: their jump probability is largest at p(x_t) = 0,
# which the candidates rely on. `step` and `sample` run any other rule through the reference.
ACCELERATED = ("cumulative", "euler")


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


def _move(x, z, rows, blocks, t, h, path, sampler, u, flat, generator):
    """x after the step (B, L), given the candidates `flat` (C,) (positions in x, row-major), their
    logits at rows `rows` (C,) of z, their block pass `blocks` = (scale, shifts, masses), and the
    jump tests u (B, L) they were chosen with."""
    L, V = x.shape[1], z.shape[-1]
    current = x.reshape(-1)[flat]
    scale, shifts, masses = blocks
    exclude = None
    if path.source == "mask":  # a candidate's test passed at p(x_t) = 0, which is p(MASK): all of them move
        moving_at = flat
    else:
        row_of = flat // L  # (C,) the sequence of each candidate
        others, own = categorical.without_token(z, rows, current, shifts, masses, scale=scale)
        p_xt = own / (own + others.sum(-1))  # (C,); the others' mass is a float64 sum of blocks
        ends = final(t, h)[:, 0][row_of]  # (C,)
        jumps = jump_probability(p_xt[:, None], t[row_of], h[row_of], path, sampler)[:, 0]
        go = (ends | (u.reshape(-1)[flat] < jumps)).nonzero().squeeze(1)  # the candidates that move
        rows, shifts, current, others, own, ends = rows[go], shifts[go], current[go], others[go], own[go], ends[go]
        # a jump goes to a token other than the current one; the final draw is free
        own_block = (current // categorical.block_shape(V)[0])[:, None]
        masses = torch.where(ends[:, None], others.scatter_add(1, own_block, own[:, None]), others)
        exclude = torch.where(ends, -1, current)
        moving_at = flat[go]
    x = x.clone()
    x.view(-1)[moving_at] = categorical.draw(z, rows, shifts, masses, scale=scale, exclude=exclude, generator=generator)
    return x


def step(x, logits, t, h, path, sampler="cumulative", temperature=1.0, fixed=None, generator=None, spread=False):
    """`sampler.step`, same arguments and law: reads only the candidates' rows of logits (B, L, V),
    with one block pass and a block draw each (the distillation teacher's RK points use it)."""
    if sampler not in ACCELERATED:
        return reference.step(x, logits, t, h, path, sampler, temperature, fixed, generator, spread)
    B, L = x.shape
    h = torch.as_tensor(h, dtype=torch.float64, device=x.device).expand(B)
    u = jump_tests(x.shape, generator, x.device, spread)
    flat = candidates(x, t, h, path, sampler, u, fixed).reshape(-1).nonzero().squeeze(1)
    z = logits.reshape(B * L, -1)
    scale = categorical.scale_for(temperature)
    blocks = (scale, *categorical.logit_blocks(z, flat, scale=scale))
    return _move(x, z, flat, blocks, t, h, path, sampler, u, flat, generator)


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


def model_step(model, x, t, h, path, sampler, temperature, fixed, generator, workspace, spread=False):
    """One step of `sample`: the jump tests first, then the model's trunk only at the candidates
    (on a CPU only on the rows that have any), its head fused with the block pass. h: the step size
    as (B,) float64. One value is read on the host per step (the candidates' count), two under the
    uniform source (and the movers' count); on a CPU a few more that are free there."""
    u = jump_tests(x.shape, generator, x.device, spread)
    maybe = candidates(x, t, h, path, sampler, u, fixed)
    rows = slice(None)
    if categorical.host_shortcuts(x.device):
        some = maybe.any(-1)  # (B,)
        if not some.any():
            return x
        if not some.all():  # leave the idle rows out (indexing would copy every tensor: not in the common case)
            rows = some.nonzero().squeeze(1)
    x_in, maybe = x[rows], maybe[rows]
    flat = maybe.reshape(-1).nonzero().squeeze(1)  # (C,) the candidates, row-major
    step_size = h[rows].float() if model.config.step_conditioned else None
    features = model.trunk(x_in, t[rows], step_size, positions=flat)  # (C, D)
    out = workspace.get(features.shape[0] * path.vocab_size, x.device)
    logits, shifts, masses = categorical.output_blocks(features, model.head.weight, temperature, out=out)
    at = torch.arange(logits.shape[0], device=x.device)  # the logits' rows are the candidates, in order
    moved = _move(x_in, logits, at, (1.0, shifts, masses), t[rows], h[rows], path, sampler, u[rows], flat,
                  generator)  # scale 1: output_blocks' logits are already base-2 log-weights
    if isinstance(rows, slice):
        return moved
    x = x.clone()
    x[rows] = moved
    return x


@torch.no_grad()
def sample(model, path, num_samples, seq_len, steps, sampler="cumulative", prompt=None, generator=None,
           device="cpu", on_step=None, progress=False):
    """`sampler.sample`, same arguments and law, for a model with a `trunk` and a bias-free `head`
    (model.Transformer)."""
    if sampler not in ACCELERATED:
        return reference.sample(model, path, num_samples, seq_len, steps, sampler, prompt, generator, device,
                                on_step, progress)
    schedule = steps if isinstance(steps, Schedule) else Schedule.of(steps)
    x, fixed, last_change = start(path, (num_samples, seq_len), sampler, prompt, generator, device)
    workspace = Workspace(num_samples * seq_len * path.vocab_size)
    for s, ((t, h), temperature) in enumerate(tqdm(list(zip(schedule.times(), schedule.temperatures)),
                                                   disable=not progress, desc="sampling", leave=False)):
        t = torch.full((num_samples,), t, device=device)
        h = torch.full((num_samples,), h, dtype=torch.float64, device=device)
        x_next = model_step(model, x, t, h, path, sampler, temperature, fixed, generator, workspace, schedule.spread)
        last_change.masked_fill_(x_next != x, s)  # (indexing with the mask would read it on the host)
        x = x_next
        if on_step is not None:
            on_step(s, x, last_change)
    return x, last_change


RECOMPILE_LIMIT = 64


def compile(model, **options):
    """torch.compile a Transformer's trunk in place, and return the model: forward, generation and
    the engine (which applies the head itself) all run the compiled trunk; the weights, the state
    dict and every attribute stay the module's.

    Every Transformer shares the code of `trunk`, and dynamo keeps at most recompile_limit (8 by
    default) compiled versions of one function, then runs it uncompiled: a benchmark of several
    sizes, lengths and batch sizes passes that, so the limit is raised to RECOMPILE_LIMIT."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    model.trunk = torch.compile(model.trunk, **options)
    return model


def is_compiled(model):
    """Whether `compile` compiled this model's trunk."""
    return "trunk" in vars(model)
