"""The probability path of discrete flow matching, its rates and its loss.

Implements docs/method.md sections 1 and 3 (DFM, Gat et al. arXiv 2407.15595; FS-DFM, Monsefi et
al. arXiv 2509.20624):

- scheduler kappa(t) = t^n, t = 0 is pure source, t = 1 is data;
- two sources: "mask" (every position is the id MASK = V) and "uniform" (i.i.d. uniform tokens);
- x_t keeps each data token with probability kappa(t), independently per position;
- the rate g(t) = kappa'(t) / (1 - kappa(t)) and its average over a step, gbar(t, h);
- the generalised-KL loss, which for the mask source with carry-over is the importance-weighted
  cross-entropy whose mean over t is the negative ELBO per token; plain cross-entropy as an option.

The three numbers that define a path (vocabulary size, source, kappa exponent) travel together as
one value, `ProbPath`, built from a checkpoint in one call (`ProbPath.of`). The model is an
x1-predictor: it returns logits of p(x1 | x_t) over the V data tokens; `posterior_log_probs` turns
them into the mask-source posterior, where a position already unmasked is certain to stay what it is.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SOURCES = ("mask", "uniform")
LOSS_WEIGHTINGS = ("elbo", "ce")
# t is drawn in [0, 1 - T_EPS): g(t) = n t^(n-1) / (1 - t^n) blows up at t = 1.
T_EPS = 1e-3
# 1 - kappa is floored so that the last step (t + h = 1) keeps the step ratio finite.
KAPPA_FLOOR = 1e-8
# Log-probability given to impossible tokens of a point-mass posterior: finite, so that averaging
# posteriors (the Runge-Kutta teacher) and KL terms stay finite, yet exp(LOG_ZERO) is 0 in float32.
LOG_ZERO = -1e4


@dataclass(frozen=True)
class ProbPath:
    vocab_size: int  # V data tokens; MASK is the id V
    source: str = "mask"  # "mask" or "uniform"
    kappa_power: float = 1.0  # kappa(t) = t ** kappa_power

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}: use one of {SOURCES}")

    @classmethod
    def of(cls, ckpt):
        """The path a checkpoint's model was trained on."""
        return cls(ckpt["model_config"]["vocab_size"], ckpt["config"]["source"], ckpt["config"]["kappa_power"])

    @property
    def mask_id(self):
        """The mask token is the first id after the data vocabulary."""
        return self.vocab_size

    def kappa(self, t):
        """Probability that a position already holds its data token at time t."""
        return t ** self.kappa_power

    def rate(self, t):
        """g(t) = kappa'(t) / (1 - kappa(t)): how fast source positions turn into data at time t."""
        n = self.kappa_power
        return n * t ** (n - 1) / (1 - self.kappa(t)).clamp_min(KAPPA_FLOOR)

    def survival(self, t, h):
        """(1 - kappa(t + h)) / (1 - kappa(t)): the chance a source position stays one over [t, t + h]."""
        stays = (1 - self.kappa((t + h).clamp(max=1.0))).clamp_min(KAPPA_FLOOR)
        return stays / (1 - self.kappa(t)).clamp_min(KAPPA_FLOOR)

    def mean_rate(self, t, h):
        """gbar(t, h) = (1/h) ln[(1 - kappa(t)) / (1 - kappa(t+h))], the average of g over the step.

        exp(-h * gbar) is exactly `survival(t, h)`, which is why the cumulative step hits the path's
        marginals for any h, while Euler's exp(-h * g(t)) only does so as h -> 0."""
        return -torch.log(self.survival(t, h)) / h

    def source_tokens(self, shape, generator=None, device="cpu"):
        """Draw x0: all MASK ids, or i.i.d. uniform tokens in [0, V)."""
        if self.source == "mask":
            return torch.full(shape, self.mask_id, dtype=torch.long, device=device)
        return (uniform(shape, generator, device, torch.float64) * self.vocab_size).long()

    def x_t(self, x1, t, generator=None):
        """x_t: each position of x1 (B, L) keeps its token with probability kappa(t) (t: (B,)), else
        takes a fresh draw of the source's (the independent coupling)."""
        keep = uniform(x1.shape, generator, x1.device) < self.kappa(t)[:, None]
        return torch.where(keep, x1, self.source_tokens(x1.shape, generator, x1.device))

    def posterior_log_probs(self, logits, x_t):
        """log p(x1 | x_t) (B, L, V) as the method uses it. Mask source: a position already unmasked
        is a point mass on its token ("carry-over"), with LOG_ZERO instead of -inf so that averages
        and KL terms over it stay finite."""
        log_probs = F.log_softmax(logits.float(), dim=-1)
        if self.source == "uniform":
            return log_probs
        point_mass = torch.full_like(log_probs, LOG_ZERO).scatter_(-1, x_t.clamp(max=self.vocab_size - 1)[..., None], 0.0)
        return torch.where((x_t != self.mask_id)[..., None], point_mass, log_probs.clamp_min(LOG_ZERO))

    def loss(self, logits, x1, x_t, t, loss_weighting="elbo", reduce=True):
        """Per-token DFM loss. logits (B, L, V), x1 and x_t (B, L), t (B,).

        loss_weighting="elbo": the generalised KL (a Bregman divergence), per position
            g(t) * (1 - p(x1|x_t))                   where x_t == x1
            g(t) * (-log p(x1|x_t) - p(x_t|x_t))     elsewhere
        which is >= 0 and 0 exactly when p(.|x_t) is a point mass on x1. For the mask source with
        carry-over it is g(t) * -log p(x1|x_t) on masked positions and 0 elsewhere, and its mean over
        t ~ U[0, 1) bounds the NLL per token from above (the ELBO).
        loss_weighting="ce": plain cross-entropy -log p(x1|x_t), averaged over corrupted positions
        (masked ones for the mask source; all for the uniform one, where the model cannot tell which
        were replaced). Trains faster at small scale but is not a bound.
        Returns the mean over tokens, or (B, L) per-position losses if reduce is False."""
        # Only two entries per position are needed, log p(x1|x_t) and p(x_t|x_t): gather them rather
        # than materialise (B, L, V) log-probabilities (3 GB a copy at GPT-2's vocabulary).
        logits = logits.float()
        log_norm = logits.logsumexp(-1)  # (B, L)
        log_p_x1 = logits.gather(-1, x1[..., None]).squeeze(-1) - log_norm  # (B, L)
        masked = x_t == self.mask_id
        if self.source == "mask":  # carry-over: an unmasked position is certain of its token, which is x1
            log_p_x1 = torch.where(masked, log_p_x1, 0.0)
        if loss_weighting == "ce":
            corrupted = masked if self.source == "mask" else torch.ones_like(masked)
            per_pos = -log_p_x1 * corrupted
            return per_pos.sum() / corrupted.sum().clamp_min(1) if reduce else per_pos
        if loss_weighting != "elbo":
            raise ValueError(f"unknown loss weighting {loss_weighting!r}: use one of {LOSS_WEIGHTINGS}")
        log_p_xt = logits.gather(-1, x_t.clamp(max=self.vocab_size - 1)[..., None]).squeeze(-1) - log_norm
        p_xt = torch.where(masked, 0.0, log_p_xt.exp())  # MASK is never a data token
        per_pos = torch.where(x_t == x1, 1 - log_p_x1.exp(), -log_p_x1 - p_xt)
        per_pos = self.rate(t)[:, None] * per_pos
        return per_pos.mean() if reduce else per_pos


def uniform(shape, generator=None, device="cpu", dtype=torch.float32):
    """U[0, 1) draws on `device` from a generator that may live elsewhere (training keeps its
    generator on the CPU so that its state is one small tensor to checkpoint, on any device)."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def sample_times(batch_size, generator=None, device="cpu", t_max=1.0 - T_EPS):
    """Stratified t in [0, t_max): one uniform draw per stratum of the batch.

    Low-discrepancy times lower the variance of the batch loss; each t is still marginally uniform."""
    u = uniform((), generator, device)
    return (u + torch.arange(batch_size, device=device)) / batch_size * t_max


def batch_loss(model, x1, path, loss_weighting="elbo", generator=None, loss=None):
    """The DFM loss of a batch of data x1 (B, L): times, corruption, model, loss. loss: a function
    with path.loss's arguments (train.py passes a compiled one, so its passes over the logits fuse)."""
    t = sample_times(x1.shape[0], generator, x1.device)
    x_t = path.x_t(x1, t, generator)
    return (loss or path.loss)(model(x_t, t), x1, x_t, t, loss_weighting)


@torch.no_grad()
def elbo_bound(model, x1, path, num_times=8, generator=None):
    """Monte-Carlo negative ELBO per token (nats) of a mask-source model on x1 (B, L).

    Each sequence is scored at `num_times` stratified t in [0, 1 - T_EPS); the final sliver of t
    is dropped, which slightly underestimates the bound (by less than T_EPS * log V per token).
    exp(bound) is the "ELBO perplexity", an upper bound on the model's true perplexity."""
    if path.source != "mask":
        raise ValueError("the ELBO bound is for the mask source")
    return sum(batch_loss(model, x1, path, "elbo", generator).item() for _ in range(num_times)) / num_times
