"""Sampling: S steps from t = 0 (source) to t = 1 (data), with the Euler or the cumulative step.

docs/method.md section 4. The reference, written to be read: full tensors, float64 probabilities, one draw per
moving position; `engine.py` draws from the same law, faster (tests/test_engine.py). In a step from t to t + h,
given p = p(x1 | x_t), a position leaves x_t with its rule's probability (`STEP_RULES`: Euler, DFM's; cumulative,
FS-DFM's, which with the mask source and a perfect denoiser unmasks exactly (kappa(t+h) - kappa(t)) / (1 - kappa(t))
of the masked positions, for any h), to a token drawn from p without x_t; the last step draws x1 from p. Under the
mask source only masked positions change (p(MASK) = 0): decoded tokens stay.
"""

import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from nanodfm.config import MIN_TEMPERATURE, UsageError
from nanodfm.path import uniform

# The step rules, one entry each: a position's chance to leave x_t in [t, t + h] from p(x_t) (B, L), t, h (B, 1).
STEP_RULES = {
    "cumulative": lambda p_xt, t, h, path: 1 - torch.exp(-h * path.mean_rate(t, h) * (1 - p_xt)),  # FS-DFM
    "euler": lambda p_xt, t, h, path: (1 - p_xt) * (1 - torch.exp(-h * path.rate(t))),  # DFM (flow_matching)
}


def jump_probability(p_xt, t, h, path, sampler):
    """The chance that a position leaves its token x_t during [t, t + h]. p_xt (B, L); t, h (B,)."""
    return STEP_RULES[sampler](p_xt.double(), t.double()[:, None], h.double()[:, None], path)


def draw(probs, generator=None):
    """One index per row of probs (N, V) float64, by inverse CDF: exact to float64's precision."""
    cdf = probs.cumsum(-1)
    u = uniform((probs.shape[0], 1), generator, probs.device, torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[1] - 1).squeeze(1)


def jump_tests(shape, generator=None, device="cpu", spread=False):
    """(B, L) float64 U(0, 1) draws, fresh at each step, for the jump tests. spread: one draw a per row, u_i = frac(a +
    i (sqrt(5) - 1) / 2): each position jumps as often as before, but neighbours' u lie 0.38 or more apart, so
    positions that jump together lie apart along the sequence (docs/method.md section 7)."""
    u = uniform((shape[0], 1) if spread else shape, generator, device, torch.float64)
    return torch.frac(u + (math.sqrt(5) - 1) / 2 * torch.arange(shape[1]).to(u)) if spread else u


def step(x, logits, t, h, path, sampler="cumulative", temperature=1.0, fixed=None, generator=None, spread=False):
    """x at t + h (B, L), one step of size h (a float or (B,)) from x at time t (B,). logits (B, L, V):
    the model's posterior logits (or log-probabilities) at (x, t); fixed (B, L): positions kept (a prompt)."""
    h = torch.as_tensor(h, dtype=torch.float64, device=x.device).expand(x.shape[0])
    probs = torch.softmax(logits.double() / temperature, dim=-1)  # (B, L, V)
    masked = x == path.mask_id
    current = x.clamp(max=path.vocab_size - 1)[..., None]  # (B, L, 1)
    p_xt = torch.where(masked, 0.0, probs.gather(-1, current).squeeze(-1))  # (B, L); MASK is never a data token
    final = (t + h >= 1 - 1e-6)[:, None]  # (B, 1): the last step draws x1 itself
    can_change = masked if path.source == "mask" else torch.ones_like(masked)
    can_change = can_change if fixed is None else can_change & ~fixed
    u = jump_tests(x.shape, generator, x.device, spread)
    moves = can_change & (final | (u < jump_probability(p_xt, t, h, path, sampler)))  # (B, L)
    leaving = moves & ~final & ~masked  # these draw from p without their current token
    target = torch.where(leaving[..., None], probs.scatter(-1, current, 0.0), probs)
    return x.masked_scatter(moves, draw(target[moves], generator))  # in the order of x[moves]


@dataclass(frozen=True)
class Schedule:
    """Each step's size h (they sum to 1) and temperature; spread: see `jump_tests`. E.g. `Schedule.of(8)`."""
    sizes: tuple
    temperatures: tuple
    spread: bool = False

    @classmethod
    def of(cls, steps, sizes=None, temperature=1.0, first_temperature=None, spread=False):
        """`steps` steps of the given sizes (None: 1/steps each), at `temperature`, the first at
        first_temperature if given (a hot first step gives a student diversity back: results/README.md)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UsageError(f"steps must be a positive integer, got {steps}")
        sizes = (1.0 / steps,) * steps if sizes is None else tuple(float(h) for h in sizes)
        if len(sizes) != steps or not all(0 < h <= 1 for h in sizes) or abs(math.fsum(sizes) - 1) > 1e-6:
            raise UsageError(f"a schedule of {steps} steps takes {steps} step sizes in (0, 1] summing to 1 (t runs "
                             f"from 0 to 1); got {len(sizes)} summing to {math.fsum(sizes):.6g}: {list(sizes)}")
        first = temperature if first_temperature is None else first_temperature
        if not (MIN_TEMPERATURE <= temperature < math.inf and MIN_TEMPERATURE <= first < math.inf):
            raise UsageError(f"temperatures must be finite and at least {MIN_TEMPERATURE:g} (the greedy limit), got "
                             f"{temperature} and first {first}")
        return cls(sizes, (first,) + (temperature,) * (steps - 1), spread)

    def times(self):
        return [(math.fsum(self.sizes[:s]), h) for s, h in enumerate(self.sizes)]  # t: the sum of the sizes before


# large steps first, sizes 2^-k as the student was trained on: measured against equal steps (results/README.md)
COARSE_TO_FINE = {4: (1 / 2, 1 / 4, 1 / 8, 1 / 8),
                  8: (1 / 4,) * 3 + (1 / 16,) * 3 + (1 / 32,) * 2,
                  16: (1 / 8,) * 4 + (1 / 16,) * 4 + (1 / 32,) * 8}


def start(path, shape, sampler, prompt=None, generator=None, device="cpu"):
    """(x, fixed, last_change) at t = 0: a draw of the source with the prompt's tokens (>= 0) clamped in,
    the positions they fix (None without a prompt), the decode record (-1 there)."""
    if sampler not in STEP_RULES:
        raise UsageError(f"unknown sampler {sampler!r}: use one of {', '.join(STEP_RULES)}")
    x = path.source_tokens(shape, generator, device)
    last_change = torch.zeros(shape, dtype=torch.long, device=device)
    if prompt is None:
        return x, None, last_change
    prompt = prompt.to(device).expand(shape)
    fixed = prompt >= 0
    return torch.where(fixed, prompt, x), fixed, last_change.masked_fill(fixed, -1)


@torch.no_grad()
def sample(model, path, num_samples, seq_len, steps, sampler="cumulative", prompt=None, generator=None,
           device="cpu", on_step=None, progress=False):
    """num_samples sequences of seq_len tokens in `steps` model calls (a number of equal steps at
    temperature 1, or a Schedule). prompt (L,) or (B, L): ids to keep, -1 where to sample. A student is
    also given each step's h. on_step(s, x, last_change) after each step.
    Returns x (B, L) and last_change (B, L): the step each position last changed at (0: never, -1: prompt)."""
    schedule = steps if isinstance(steps, Schedule) else Schedule.of(steps)
    x, fixed, last_change = start(path, (num_samples, seq_len), sampler, prompt, generator, device)
    for s, ((t, h), temperature) in enumerate(tqdm(list(zip(schedule.times(), schedule.temperatures)),
                                                   disable=not progress, desc="sampling", leave=False)):
        t = torch.full((num_samples,), t, device=device)
        logits = model(x, t, h if model.config.step_conditioned else None)  # (B, L, V)
        x_next = step(x, logits, t, h, path, sampler, temperature, fixed, generator, schedule.spread)
        last_change[x_next != x] = s
        x = x_next
        if on_step is not None:
            on_step(s, x, last_change)
    return x, last_change
