"""Sampling: S steps from t = 0 (source) to t = 1 (data), with the Euler or the cumulative step.

docs/method.md section 4. This is the reference, written to be read: full tensors, float64
probabilities, one draw per moving position. `engine.py` draws from the same law, faster (the
scripts use it; tests/test_engine.py holds the two together). One step from t to t + h, per
position, given p = p(x1 | x_t):

- Euler (DFM; Meta's flow_matching solver): draw x1_hat ~ p and jump to it, if it differs from x_t,
  with probability 1 - exp(-h g(t)): a position leaves x_t with probability
  (1 - p(x_t)) (1 - exp(-h g(t))).
- Cumulative scalar (FS-DFM): the jump intensity g(t) (1 - p(x_t)) with g replaced by its average
  over the step, gbar(t, h), so a position leaves with probability 1 - exp(-h gbar (1 - p(x_t))).
  With the mask source and a perfect denoiser it unmasks exactly (kappa(t+h) - kappa(t)) / (1 - kappa(t))
  of the masked positions, for any h.
- A position that leaves draws its new token from p without x_t. The last step (t + h = 1) draws x1
  from p directly. Under the mask source only masked positions ever change (MASK is not among the V
  tokens, so p(x_t) = 0 there), and a decoded token is never revised.
"""

import math

import torch
from tqdm import tqdm

from nanodfm.config import UsageError
from nanodfm.path import uniform

SAMPLERS = ("cumulative", "euler")


def jump_probability(p_xt, t, h, path, sampler):
    """The chance that a position leaves its token x_t during [t, t + h]. p_xt (B, L); t, h (B,)."""
    t, h, leave = t.double()[:, None], h.double()[:, None], 1 - p_xt.double()
    if sampler == "euler":
        return leave * (1 - torch.exp(-h * path.rate(t)))
    if sampler == "cumulative":
        return 1 - torch.exp(-h * path.mean_rate(t, h) * leave)
    raise ValueError(f"unknown sampler {sampler!r}: use one of {SAMPLERS}")


def draw(probs, generator=None):
    """One index per row of probs (N, V) float64, by inverse CDF: exact to float64's precision."""
    cdf = probs.cumsum(-1)
    u = uniform((probs.shape[0], 1), generator, probs.device, torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[1] - 1).squeeze(1)


def step(x, logits, t, h, path, sampler="cumulative", temperature=1.0, fixed=None, generator=None):
    """x at t + h (B, L), one step of size h (a float or (B,)) from x at time t (B,).

    logits (B, L, V): the model's posterior logits (or log-probabilities) at (x, t).
    fixed (B, L) bool: positions that must not change (a prompt)."""
    h = torch.as_tensor(h, dtype=torch.float64, device=x.device).expand(x.shape[0])
    probs = torch.softmax(logits.double() / temperature, dim=-1)  # (B, L, V)
    masked = x == path.mask_id
    current = x.clamp(max=path.vocab_size - 1)[..., None]  # (B, L, 1)
    p_xt = torch.where(masked, 0.0, probs.gather(-1, current).squeeze(-1))  # (B, L); MASK is never a data token
    final = (t + h >= 1 - 1e-6)[:, None]  # (B, 1): the last step draws x1 itself
    can_change = masked if path.source == "mask" else torch.ones_like(masked)
    if fixed is not None:
        can_change = can_change & ~fixed
    u = uniform(x.shape, generator, x.device, torch.float64)
    moves = can_change & (final | (u < jump_probability(p_xt, t, h, path, sampler)))  # (B, L)
    leaving = moves & ~final & ~masked  # these draw from p without their current token
    target = torch.where(leaving[..., None], probs.scatter(-1, current, 0.0), probs)
    x = x.clone()
    x[moves] = draw(target[moves], generator)
    return x


def start(path, shape, steps, sampler, prompt=None, generator=None, device="cpu"):
    """(x, fixed, last_change) at t = 0: the source with the prompt's tokens (>= 0) clamped in, the
    positions they fix (None without a prompt), and the decode record (-1 at the prompt)."""
    if steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps}")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    x = path.source_tokens(shape, generator, device)
    last_change = torch.zeros(shape, dtype=torch.long, device=device)
    if prompt is None:
        return x, None, last_change
    prompt = prompt.to(device).expand(shape)
    fixed = prompt >= 0
    return torch.where(fixed, prompt, x), fixed, last_change.masked_fill(fixed, -1)


# Large steps first, small ones last, at the step counts where it was measured against 1/steps each
# for the few-step student (README, Results): sizes of the form 2^-k, the ones it was trained on.
COARSE_TO_FINE = {4: (1 / 2, 1 / 4, 1 / 8, 1 / 8),
                  8: (1 / 4,) * 3 + (1 / 16,) * 3 + (1 / 32,) * 2,
                  16: (1 / 8,) * 4 + (1 / 16,) * 4 + (1 / 32,) * 8}


def schedule_times(steps, schedule=None):
    """[(t, h)] of every step: h = 1/steps each, or the sizes of `schedule` (a sequence of `steps`
    positive numbers summing to 1, e.g. [1/2, 1/4, 1/8, 1/8]: large steps first, small ones last)."""
    if schedule is None:
        return [(s * (1.0 / steps), 1.0 / steps) for s in range(steps)]
    sizes = [float(h) for h in schedule]
    if len(sizes) != steps:
        raise UsageError(f"the schedule has {len(sizes)} step sizes but steps is {steps}: give one size a step")
    if not all(0 < h <= 1 for h in sizes):
        raise UsageError(f"step sizes must be in (0, 1], got {schedule}")
    if abs(math.fsum(sizes) - 1) > 1e-6:
        raise UsageError(f"the step sizes must sum to 1 (t runs from 0 to 1), they sum to {math.fsum(sizes):.6g}")
    return [(math.fsum(sizes[:s]), h) for s, h in enumerate(sizes)]


def step_temperatures(steps, temperature, first_temperature=None):
    """The temperature of every step: `temperature`, except the first step's if first_temperature is
    given (a hotter first step gives the few-step student back diversity: README, Results)."""
    if first_temperature is not None and not 0 < first_temperature < math.inf:
        raise UsageError(f"the first step's temperature must be a positive number, got {first_temperature}")
    return [first_temperature if s == 0 and first_temperature is not None else temperature for s in range(steps)]


@torch.no_grad()
def sample(model, path, num_samples, seq_len, steps, sampler="cumulative", temperature=1.0, prompt=None,
           generator=None, device="cpu", on_step=None, progress=False, schedule=None, first_temperature=None):
    """Generate num_samples sequences of seq_len tokens in `steps` model calls (NFE = steps).

    prompt (L,) or (B, L): token ids to keep, -1 at the positions to sample. schedule: the step
    sizes, `steps` of them summing to 1 (None: 1/steps each). first_temperature: the first step's
    temperature (None: `temperature`, as every other step's). A model whose config is
    step_conditioned (the few-step student) is also given each step's size h.
    on_step(s, x, last_change): called after every step s in [0, steps), e.g. to show frames.
    Returns x (B, L) and last_change (B, L): the step at which each position last took a new value
    (0 for one that kept its initial token, -1 for prompt positions)."""
    x, fixed, last_change = start(path, (num_samples, seq_len), steps, sampler, prompt, generator, device)
    times, temps = schedule_times(steps, schedule), step_temperatures(steps, temperature, first_temperature)
    for s in tqdm(range(steps), disable=not progress, desc="sampling", leave=False):
        t, h = torch.full((num_samples,), times[s][0], device=device), times[s][1]
        logits = model(x, t, h if model.config.step_conditioned else None)  # (B, L, V)
        x_next = step(x, logits, t, h, path, sampler, temps[s], fixed, generator)
        last_change[x_next != x] = s
        x = x_next
        if on_step is not None:
            on_step(s, x, last_change)
    return x, last_change
