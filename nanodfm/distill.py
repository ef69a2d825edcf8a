"""Few-step distillation (FS-DFM): a step-aware student taught by an EMA Runge-Kutta shortcut teacher.

docs/method.md section 5 (Monsefi et al., arXiv 2509.20624). The student is the DFM model with
one more input, the step size h (model.py, `step_conditioned`; train.py makes it from its parent).
It learns that one step of size h should land where the teacher's Runge-Kutta estimate lands:

- (t, h) on a power-of-two grid: h in {1, 1/2, ..., 2^-K}, t a multiple of 2^-K with t + h <= 1.
  The paper weights h by 1/h, which at K = 6 spends 94% of the draws on h <= 1/8 (half of them on
  the smallest h, the data anchor); `step_size_weighting="uniform"` draws every exponent equally,
  so the step sizes that few-step sampling uses (1/4, 1/8) get as many draws as the tiny ones;
- the teacher is an exponential moving average of the student (no gradient flows through it);
- the RK target: a table of evaluation points c and weights b (`TEACHERS`). The first point is x_t
  itself; point i is one cumulative step of size c_i h from x_t with the posterior of point i - 1
  (sampler.step's law, run by `engine.step`), evaluated at t + c_i h. RK4:
      l1 = T(x_t, t),  x_a = step(x_t, l1, h/2),  l2 = T(x_a, t + h/2)
      x_b = step(x_t, l2, h/2),  l3 = T(x_b, t + h/2),  x_c = step(x_t, l3, h),  l4 = T(x_c, t + h)
      target = (l1 + 2 l2 + 2 l3 + l4) / 6
  Every evaluation conditions the teacher on the half step h/2, the finest step it is asked to
  bootstrap from. RK2 averages l1 and l2 with equal weights: the Heun-style average of the FS-DFM
  release. A new teacher is one row of the table; its cost (forward passes) is the row's length.
- the l are log-probabilities with carry-over: a position decoded inside a step is a point mass
  whose zeros are floored at LOG_ZERO, so the average stays finite. `teacher_average="logits"` is
  the paper's (a weighted geometric mean of the posteriors, renormalised); "probs" averages the
  probabilities instead, the average of the DFM velocities (u = g(t) (p - delta_{x_t}) is linear
  in p): a geometric mean is sharper than its terms' mixture, which costs the student entropy;
- loss: at the smallest h the DFM loss against the data, with the ELBO weighting whatever the
  parent was trained with (its minimiser is the true posterior, what the shortcuts bootstrap from);
  otherwise KL(target || student) over the positions that can still change (masked ones for the
  mask source, all for the uniform one).

The choices of a distillation travel together as one value, `Recipe`, named as train.py's keys. Its
defaults are the paper's; config/shakespeare_char_cpu_student.py holds the measured recipe.
"""

from dataclasses import dataclass

import torch

from nanodfm import engine
from nanodfm.config import UsageError
from nanodfm.path import LOG_ZERO, uniform

# name: (c, the evaluation points as fractions of h; b, their weights)
TEACHERS = {"rk4": ((0, 1 / 2, 1 / 2, 1), (1, 2, 2, 1)),
            "rk2": ((0, 1 / 2), (1, 1))}
STEP_SIZE_WEIGHTINGS = ("inverse_h", "uniform")
TEACHER_AVERAGES = ("logits", "probs")
# measured without gain, and gone (results/README.md): the value each key now always has
REMOVED = {"rk_points": "classical", "anchor_share": 0.0, "own_share": 0.0}


@dataclass(frozen=True)
class Recipe:
    teacher: str = "rk4"  # a row of TEACHERS
    teacher_average: str = "logits"  # average the RK points' "logits" (the paper) or "probs"
    step_size_weighting: str = "inverse_h"  # P(h): "inverse_h" (the paper) or "uniform" over exponents
    max_step_exponent: int = 8  # h in {1, 1/2, ..., 2**-max_step_exponent}

    def __post_init__(self):
        for key, allowed in (("teacher", tuple(TEACHERS)), ("teacher_average", TEACHER_AVERAGES),
                             ("step_size_weighting", STEP_SIZE_WEIGHTINGS)):
            if getattr(self, key) not in allowed:
                raise UsageError(f"unknown {key} {getattr(self, key)!r}: use one of {', '.join(allowed)}")

    @classmethod
    def of(cls, config):
        """The recipe of a training config (train.py's keys). A config of a lever that has left the
        package (an older student's) is refused rather than silently trained on without it."""
        gone = [f"{k}={config[k]!r}" for k, kept in REMOVED.items() if config.get(k, kept) != kept]
        if gone:
            raise UsageError(f"this run used {', '.join(gone)}, a distillation option measured without gain that "
                             f"left nanodfm: it lives at commit e631de9 (results/README.md)")
        return cls(config["teacher"], config["teacher_average"], config["step_size_weighting"],
                   config["max_step_exponent"])

    def teacher_forwards(self):
        """The teacher's forward passes per training sample, on average: one per RK point for every
        sample whose step size is not the smallest (those train on the data)."""
        return len(TEACHERS[self.teacher][0]) * (1 - step_size_probabilities(self)[-1].item())


@torch.no_grad()
def ema_update(ema_model, model, decay):
    """ema <- decay * ema + (1 - decay) * model, for every parameter."""
    ema_params = list(ema_model.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)


def step_size_probabilities(recipe):
    """P(h = 2^-k) for k = 0..K: proportional to 1/h = 2^k (the paper), or uniform over k."""
    k = torch.arange(recipe.max_step_exponent + 1, dtype=torch.float64)
    weights = 2.0 ** k if recipe.step_size_weighting == "inverse_h" else torch.ones_like(k)
    return weights / weights.sum()


def sample_step_sizes(batch_size, recipe, generator=None, device="cpu"):
    """(t, h), each (B,): h = 2^-k with k drawn by `step_size_probabilities`, t = j 2^-K, t + h <= 1."""
    K = recipe.max_step_exponent
    cdf = torch.cumsum(step_size_probabilities(recipe), 0)
    u = uniform((batch_size,), generator, "cpu", torch.float64)
    k = torch.searchsorted(cdf, u, right=True).clamp(max=K)  # (B,) exponents
    num_starts = 2 ** K - 2 ** (K - k) + 1  # j in [0, 2^K - 2^(K-k)]: t + h <= 1
    j = (uniform((batch_size,), generator, "cpu", torch.float64) * num_starts).long()
    return (j / 2 ** K).float().to(device), (2.0 ** -k).float().to(device)


@torch.no_grad()
def shortcut_target(teacher, x_t, t, h, path, recipe, generator=None):
    """Target log-probabilities (B, L, V) for one step of size h (B,) from x_t at t (B,): the
    recipe's RK row over the teacher's posteriors, averaged as log-probabilities or probabilities."""
    points, weights = TEACHERS[recipe.teacher]
    half = h / 2
    terms = [path.posterior_log_probs(teacher(x_t, t, half), x_t)]
    for c in points[1:]:
        x = engine.step(x_t, terms[-1], t, c * h, path, "cumulative", generator=generator)
        terms.append(path.posterior_log_probs(teacher(x, t + c * h, half), x))
    if recipe.teacher_average == "logits":
        return sum(b * l for b, l in zip(weights, terms)) / sum(weights)
    return (sum(b * l.exp() for b, l in zip(weights, terms)) / sum(weights)).log().clamp_min(LOG_ZERO)


def distill_loss(student, teacher, x1, path, recipe, generator=None):
    """Mean per-token loss of the student on data x1 (B, L); see the module docstring."""
    t, h = sample_step_sizes(x1.shape[0], recipe, generator, x1.device)
    x_t = path.x_t(x1, t, generator)
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
