"""Few-step distillation (FS-DFM): a step-aware student taught by an EMA Runge-Kutta shortcut teacher.

docs/method.md section 5 (Monsefi et al., arXiv 2509.20624). The student is the DFM model with
one more input, the step size h (model.py, `step_conditioned`). It learns that one step of size h
should land where the teacher lands with two half steps:

- (t, h) on a power-of-two grid: h in {1, 1/2, ..., 2^-K}, t a multiple of 2^-K with t + h <= 1.
  The paper weights h by 1/h, which at K = 6 spends 94% of the draws on h <= 1/8 (half of all
  draws on the smallest h, the data anchor); `weighting="uniform"` draws every exponent equally, so
  the step sizes that few-step sampling uses (1/4, 1/8) get as many draws as the tiny ones;
- the teacher is an exponential moving average of the student (no gradient flows through it);
- RK4 target from half steps h' = h/2, the states advanced by the cumulative step (sampler.step's
  law, run by `engine.step`: float64 probabilities over GPT-2's vocabulary would not fit):
      l1 = T(x_t, t, h'),      x_a = step(x_t, l1, t, h')
      l2 = T(x_a, t + h', h'), x_b = step(x_a, l2, t + h', h')
      l3 = T(x_b, t + h', h'), x_c = step(x_b, l3, t + h', h')
      l4 = T(x_c, t + h, h'),  target = (l1 + 2 l2 + 2 l3 + l4) / 6
  (RK2 averages l1 and l2). The l are log-probabilities with carry-over: a position decoded
  inside a half step is a point mass whose zeros are floored at LOG_ZERO, so the average stays finite.
  `average="logits"` is the paper's (a weighted geometric mean of the posteriors, renormalised);
  `average="probs"` averages the probabilities instead, which is the average of the DFM velocities
  (u = g(t) (p - delta_{x_t}) is linear in p) and, for the mask source, the mixture that two half
  steps really land on. A geometric mean is sharper than any of its terms' mixture, which costs
  the student entropy;
- loss: at the smallest h the DFM loss against the data; otherwise KL(target || student) over the
  positions that can still change (masked ones for the mask source, all for the uniform one). The
  anchor uses the ELBO weighting whatever the parent was trained with: it is the loss whose
  minimiser is the true posterior at every t, which is what the shortcut targets bootstrap from.

The four choices of a distillation travel together as one value, `Recipe`, named as train.py's keys.
"""

from dataclasses import dataclass

import torch

from nanodfm import engine
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import LOG_ZERO, uniform

def student_from_dfm(dfm_model):
    """A step-conditioned copy of a DFM model that, untrained, computes exactly what it computes."""
    config = ModelConfig(**{**vars(dfm_model.config), "step_conditioned": True})
    student = Transformer(config).to(next(dfm_model.parameters()).device)
    missing, unexpected = student.load_state_dict(dfm_model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("step_mlp.") for k in missing), (missing, unexpected)
    return student


@torch.no_grad()
def ema_update(ema_model, model, decay):
    """ema <- decay * ema + (1 - decay) * model, for every parameter."""
    ema_params = list(ema_model.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)


TEACHERS = ("rk4", "rk2")
STEP_SIZE_WEIGHTINGS = ("inverse_h", "uniform")
TEACHER_AVERAGES = ("logits", "probs", "calibrated")
RK_POINTS = ("chained", "classical")


@dataclass(frozen=True)
class Recipe:
    teacher: str = "rk4"  # "rk4" or "rk2" shortcut teacher
    teacher_average: str = "logits"  # average the half steps' "logits" (the paper) or "probs"
    step_size_weighting: str = "inverse_h"  # P(h): "inverse_h" (the paper) or "uniform" over exponents
    max_step_exponent: int = 8  # h in {1, 1/2, ..., 2**-max_step_exponent}
    anchor_share: float = 0.0  # P(smallest h), the samples trained on the data; 0: as the weighting gives
    rk_points: str = "chained"  # RK evaluation points from chained half steps (the release's) or all from x_t
    own_share: float = 0.0  # P(x_t is the teacher's own few-step state) for h >= OWN_MIN_H; 0: always noised data

    def __post_init__(self):
        for key, allowed in (("teacher", TEACHERS), ("teacher_average", TEACHER_AVERAGES),
                             ("step_size_weighting", STEP_SIZE_WEIGHTINGS), ("rk_points", RK_POINTS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}: use one of {allowed}")
        if not 0 <= self.anchor_share < 1:
            raise ValueError(f"anchor_share must be in [0, 1), got {self.anchor_share}")
        if not 0 <= self.own_share <= 1:
            raise ValueError(f"own_share must be in [0, 1], got {self.own_share}")

    @classmethod
    def of(cls, config):
        """The recipe of a training config (train.py's keys)."""
        optional = {key: config[key] for key in ("anchor_share", "rk_points", "own_share") if key in config}
        return cls(config["teacher"], config["teacher_average"], config["step_size_weighting"],
                   config["max_step_exponent"], **optional)


def step_size_probabilities(recipe):
    """P(h = 2^-k) for k = 0..K: proportional to 1/h = 2^k (the paper), or uniform over k; with an
    anchor_share, P(h = 2^-K) is that share and the others keep their proportions."""
    k = torch.arange(recipe.max_step_exponent + 1, dtype=torch.float64)
    weights = 2.0 ** k if recipe.step_size_weighting == "inverse_h" else torch.ones_like(k)
    p = weights / weights.sum()
    if recipe.anchor_share and recipe.max_step_exponent > 0:
        p = torch.cat([p[:-1] / p[:-1].sum() * (1 - recipe.anchor_share), p.new_tensor([recipe.anchor_share])])
    return p


def teacher_forwards(recipe):
    """The teacher's forward passes per training sample, on average: 4 (RK4) or 2 (RK2) for every
    sample whose step size is not the smallest (those train on the data), and with an own_share the
    steps that reach the own states (t / h of them, t rounded down to a multiple of h)."""
    p = step_size_probabilities(recipe)
    forwards = (4 if recipe.teacher == "rk4" else 2) * (1 - p[-1].item())
    K = recipe.max_step_exponent
    for k in range(K):  # the smallest h never takes own states
        if 2.0 ** -k >= OWN_MIN_H:
            j = torch.arange(2 ** K - 2 ** (K - k) + 1)
            forwards += recipe.own_share * p[k].item() * (j // 2 ** (K - k)).double().mean().item()
    return forwards


def sample_step_sizes(batch_size, recipe, generator=None, device="cpu"):
    """(t, h), each (B,): h = 2^-k with k drawn by `step_size_probabilities`, t = j 2^-K, t + h <= 1."""
    K = recipe.max_step_exponent
    cdf = torch.cumsum(step_size_probabilities(recipe), 0)
    u = uniform((batch_size,), generator, "cpu", torch.float64)
    k = torch.searchsorted(cdf, u, right=True).clamp(max=K)  # (B,) exponents
    num_starts = 2 ** K - 2 ** (K - k) + 1  # j in [0, 2^K - 2^(K-k)]: t + h <= 1
    j = (uniform((batch_size,), generator, "cpu", torch.float64) * num_starts).long()
    return (j / 2 ** K).float().to(device), (2.0 ** -k).float().to(device)


def calibrate(log_p, entropy, iterations=30):
    """log_p (..., V) tempered per position, softmax(log_p / tau), with tau chosen by bisection so
    that its entropy (nats) equals `entropy` (...): the shape of log_p, the spread of another law."""
    def entropy_at(tau):
        q = (log_p / tau[..., None]).log_softmax(-1)
        return -(q.exp() * q).sum(-1)
    low, high = torch.full_like(entropy, -3.0), torch.full_like(entropy, 3.0)  # log tau in [-3, 3]
    for _ in range(iterations):  # the entropy grows with tau
        mid = (low + high) / 2
        above = entropy_at(mid.exp()) > entropy
        low, high = torch.where(above, low, mid), torch.where(above, mid, high)
    return (log_p / ((low + high) / 2).exp()[..., None]).log_softmax(-1)


@torch.no_grad()
def shortcut_target(teacher, x_t, t, h, path, recipe, generator=None):
    """Target log-probabilities (B, L, V) for one step of size h (B,) from x_t at t (B,), by RK2 or
    RK4, averaging the half steps' log-probabilities ("logits"), probabilities ("probs"), or
    log-probabilities tempered per position to the entropy of the probabilities' average
    ("calibrated"). rk_points "chained" (the release's): each state advances from the one before,
    x_b from x_a and x_c from x_b; "classical": every evaluation point starts from x_t, as in
    classical Runge-Kutta (x_a and x_b a half step from x_t with l1 and l2, x_c a full step with l3)."""
    def mean(terms, weights):
        geometric = sum(w * l for w, l in zip(weights, terms)) / sum(weights)
        if recipe.teacher_average == "logits":
            return geometric
        mixture = (sum(w * l.exp() for w, l in zip(weights, terms)) / sum(weights)).log().clamp_min(LOG_ZERO)
        if recipe.teacher_average == "probs":
            return mixture
        entropy = -(mixture.exp() * mixture).sum(-1)
        return calibrate(geometric.log_softmax(-1), entropy)
    half = h / 2
    def posterior(x, time, step_size=half):
        return path.posterior_log_probs(teacher(x, time, step_size), x)
    def advance(x, log_p, time, size=half):
        return engine.step(x, log_p, time, size, path, "cumulative", generator=generator)
    l1 = posterior(x_t, t)
    x_a = advance(x_t, l1, t)
    l2 = posterior(x_a, t + half)
    if recipe.teacher == "rk2":
        return mean((l1, l2), (1, 1))
    if recipe.rk_points == "classical":
        x_b = advance(x_t, l2, t)
        l3 = posterior(x_b, t + half)
        x_c = advance(x_t, l3, t, h)
    else:
        x_b = advance(x_a, l2, t + half)
        l3 = posterior(x_b, t + half)
        x_c = advance(x_b, l3, t + half)
    l4 = posterior(x_c, t + h)
    return mean((l1, l2, l3, l4), (1, 2, 2, 1))


OWN_MIN_H = 1 / 8  # own states only for the step sizes that few-step sampling takes (at most 7 steps to reach)


@torch.no_grad()
def own_states(teacher, t, h, seq_len, path, generator=None):
    """x_t (B, L) where the few-step sampler, run with the teacher, stands: from the source, t / h steps
    of size h (t a multiple of h). The student then learns its step from the states it will meet when
    sampling, not from noised data: states whose positions were moved independently, with the errors
    of the steps before, which noised data never shows it."""
    x = path.source_tokens((t.shape[0], seq_len), generator, t.device)
    done = (t / h).round().long()  # (B,) steps to take
    for i in range(int(done.max().item()) if done.numel() else 0):
        rows = (done > i).nonzero().squeeze(1)
        time = i * h[rows]
        log_p = path.posterior_log_probs(teacher(x[rows], time, h[rows]), x[rows])
        x[rows] = engine.step(x[rows], log_p, time, h[rows], path, "cumulative", generator=generator)
    return x


def distill_loss(student, teacher, x1, path, recipe, generator=None):
    """Mean per-token loss of the student on data x1 (B, L); see the module docstring. With an
    own_share, that share of the samples at h >= OWN_MIN_H takes x_t from `own_states` instead (t
    rounded down to a multiple of h) and learns the teacher's shortcut from there."""
    t, h = sample_step_sizes(x1.shape[0], recipe, generator, x1.device)
    x_t = path.x_t(x1, t, generator)
    if recipe.own_share:
        own = (h >= OWN_MIN_H) & (uniform(h.shape, generator, "cpu").to(h.device) < recipe.own_share)
        if own.any():
            rows = own.nonzero().squeeze(1)
            t = t.clone()
            t[rows] = torch.floor(t[rows] / h[rows] + 1e-6) * h[rows]
            x_t = x_t.clone()
            x_t[rows] = own_states(teacher, t[rows], h[rows], x1.shape[1], path, generator)
    logits = student(x_t, t, h)
    smallest = h <= 2.0 ** -recipe.max_step_exponent  # (B,) samples trained on the data directly
    loss = path.loss(logits, x1, x_t, t, reduce=False)  # (B, L)
    if not smallest.all():
        rows = ~smallest
        target = shortcut_target(teacher, x_t[rows], t[rows], h[rows], path, recipe, generator)
        student_log_p = path.posterior_log_probs(logits[rows], x_t[rows])
        target = target.log_softmax(-1)  # the average of log-probabilities is not normalised
        kl = (target.exp() * (target - student_log_p)).sum(-1)  # (b, L)
        if path.source == "mask":  # decoded positions are certain for both; they carry no signal
            kl = kl * (x_t[rows] == path.mask_id)
        loss = loss.clone()
        loss[rows] = kl
    return loss.mean()
