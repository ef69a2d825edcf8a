"""The probability path of discrete flow matching, its rates and its loss.

Implements docs/method.md sections 1 and 3 (DFM, Gat et al. arXiv 2407.15595; FS-DFM, Monsefi et
al. arXiv 2509.20624):

- scheduler kappa(t) = t^n, t = 0 is pure source, t = 1 is data;
- two sources: "mask" (every position is the id MASK = V) and "uniform" (i.i.d. uniform tokens);
- x_t keeps each data token with probability kappa(t), independently per position;
- the rate g(t) = kappa'(t) / (1 - kappa(t)) and its average over a step, gbar(t, h);
- the generalised-KL loss, which for the mask source with carry-over is the importance-weighted
  cross-entropy whose mean over t is the negative ELBO per token; plain cross-entropy as an option.

The model in nanodfm is an x1-predictor: it returns logits of p(x1 | x_t) over the V data tokens.
`carry_over` turns those logits into the mask-source posterior, where a position that is already
unmasked is certain to stay what it is.
"""


import torch
import torch.nn.functional as F

SOURCES = ("mask", "uniform")
# t is drawn in [0, 1 - T_EPS): g(t) = n t^(n-1) / (1 - t^n) blows up at t = 1.
T_EPS = 1e-3
# 1 - kappa is floored so that the last step (t + h = 1) keeps the step ratio finite.
KAPPA_FLOOR = 1e-8
# Log-probability given to impossible tokens of a point-mass posterior: finite, so that averaging
# posteriors (the Runge-Kutta teacher) and KL terms stay finite, yet exp(LOG_ZERO) is 0 in float32.
LOG_ZERO = -1e4


def mask_id(vocab_size):
    """The mask token is the first id after the data vocabulary."""
    return vocab_size


def kappa(t, n=1.0):
    """Probability that a position already holds its data token at time t."""
    return t ** n


def rate(t, n=1.0):
    """g(t) = kappa'(t) / (1 - kappa(t)): how fast source positions turn into data at time t."""
    return n * t ** (n - 1) / (1 - kappa(t, n)).clamp_min(KAPPA_FLOOR)


def survival(t, h, n=1.0):
    """(1 - kappa(t + h)) / (1 - kappa(t)): the chance a source position stays one over [t, t+h]."""
    t_next = (t + h).clamp(max=1.0)
    return (1 - kappa(t_next, n)).clamp_min(KAPPA_FLOOR) / (1 - kappa(t, n)).clamp_min(KAPPA_FLOOR)


def mean_rate(t, h, n=1.0):
    """gbar(t, h) = (1/h) ln[(1 - kappa(t)) / (1 - kappa(t+h))], the average of g over the step.

    exp(-h * gbar) is exactly `survival(t, h)`, which is why the cumulative step hits the path's
    marginals for any h, while Euler's exp(-h * g(t)) only does so as h -> 0.
    """
    return -torch.log(survival(t, h, n)) / h


def uniform(shape, generator=None, device="cpu", dtype=torch.float32):
    """U[0, 1) draws on `device` from a generator that may live elsewhere (training keeps its
    generator on the CPU so that its state is one small tensor to checkpoint, on any device)."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def sample_source(shape, vocab_size, source, generator=None, device="cpu"):
    """Draw x0: all MASK ids, or i.i.d. uniform tokens in [0, V)."""
    if source == "mask":
        return torch.full(shape, mask_id(vocab_size), dtype=torch.long, device=device)
    if source == "uniform":
        return (uniform(shape, generator, device, torch.float64) * vocab_size).long()
    raise ValueError(f"unknown source {source!r}: use one of {SOURCES}")


def sample_path(x1, t, vocab_size, source, n=1.0, generator=None):
    """x_t: each position of x1 (B, L) survives with probability kappa(t) (t has shape (B,))."""
    keep = uniform(x1.shape, generator, x1.device) < kappa(t, n)[:, None]
    x0 = sample_source(x1.shape, vocab_size, source, generator=generator, device=x1.device)
    return torch.where(keep, x1, x0)


def sample_times(batch_size, generator=None, device="cpu", t_max=1.0 - T_EPS):
    """Stratified t in [0, t_max): one uniform draw per stratum of the batch.

    Low-discrepancy times lower the variance of the batch loss; each t is still marginally uniform.
    """
    u = uniform((), generator, device)
    return (u + torch.arange(batch_size, device=device)) / batch_size * t_max


def carry_over(logits, x_t, vocab_size):
    """Mask-source posterior: positions already unmasked are a point mass on their token.

    logits: (B, L, V) from the model; x_t: (B, L). Returns log-probabilities (B, L, V) with
    LOG_ZERO instead of -inf, so averages and KL terms over them stay finite.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    decoded = x_t != mask_id(vocab_size)
    point_mass = torch.full_like(log_probs, LOG_ZERO)
    point_mass.scatter_(-1, x_t.clamp(max=vocab_size - 1).unsqueeze(-1), 0.0)
    return torch.where(decoded.unsqueeze(-1), point_mass, log_probs.clamp_min(LOG_ZERO))


def posterior_log_probs(logits, x_t, vocab_size, source):
    """log p(x1 | x_t) as the method uses it: carry-over for the mask source, plain otherwise."""
    if source == "mask":
        return carry_over(logits, x_t, vocab_size)
    return F.log_softmax(logits.float(), dim=-1)


def dfm_loss(logits, x1, x_t, t, vocab_size, source, n=1.0, weighting="elbo", reduce=True):
    """Per-token DFM loss. logits (B, L, V), x1 and x_t (B, L), t (B,).

    weighting="elbo": the generalised KL (a Bregman divergence), per position
        g(t) * (1 - p(x1|x_t))                   where x_t == x1
        g(t) * (-log p(x1|x_t) - p(x_t|x_t))     elsewhere
    which is >= 0 and 0 exactly when p(.|x_t) is a point mass on x1. For the mask source with
    carry-over it reduces to g(t) * -log p(x1|x_t) on masked positions and 0 elsewhere, and its mean
    over t ~ U[0, 1) bounds the NLL per token from above (the ELBO).
    weighting="ce": plain cross-entropy -log p(x1|x_t), averaged over corrupted positions (masked
    ones for the mask source; every position for the uniform source, since the model cannot tell
    which ones were replaced). Trains faster at small scale but is not a bound.
    Returns a scalar mean over tokens, or (B, L) per-position losses if reduce is False.
    """
    # Only two entries per position are needed, log p(x1|x_t) and p(x_t|x_t): gather them from the
    # logits rather than materialise (B, L, V) log-probabilities (3 GB a copy at GPT-2's vocabulary).
    logits = logits.float()
    log_norm = logits.logsumexp(-1)  # (B, L)
    log_p_x1 = logits.gather(-1, x1.unsqueeze(-1)).squeeze(-1) - log_norm  # (B, L)
    masked = x_t == mask_id(vocab_size)
    if source == "mask":  # carry-over: an unmasked position is certain of its token, which is x1
        log_p_x1 = torch.where(masked, log_p_x1, 0.0)
    if weighting == "ce":
        corrupted = masked if source == "mask" else torch.ones_like(masked)
        per_pos = -log_p_x1 * corrupted
        return per_pos.sum() / corrupted.sum().clamp_min(1) if reduce else per_pos
    if weighting != "elbo":
        raise ValueError(f"unknown loss weighting {weighting!r}: use 'elbo' or 'ce'")
    p_x1 = log_p_x1.exp()
    log_p_xt = logits.gather(-1, x_t.clamp(max=vocab_size - 1).unsqueeze(-1)).squeeze(-1) - log_norm
    p_xt = torch.where(masked, 0.0, log_p_xt.exp())  # MASK is never a data token
    same = x_t == x1
    per_pos = torch.where(same, 1 - p_x1, -log_p_x1 - p_xt)
    per_pos = rate(t, n)[:, None] * per_pos
    return per_pos.mean() if reduce else per_pos


@torch.no_grad()
def elbo_bound(model, x1, vocab_size, n=1.0, num_times=8, generator=None):
    """Monte-Carlo negative ELBO per token (nats) of the mask-source model on x1 (B, L).

    Each sequence is scored at `num_times` stratified t in [0, 1 - T_EPS); the final sliver of t
    is dropped, which slightly underestimates the bound (by less than T_EPS * log V per token).
    exp(bound) is the "ELBO perplexity", an upper bound on the model's true perplexity.
    """
    total = 0.0
    for _ in range(num_times):
        t = sample_times(x1.shape[0], generator=generator, device=x1.device)
        x_t = sample_path(x1, t, vocab_size, "mask", n, generator=generator)
        total += dfm_loss(model(x_t, t), x1, x_t, t, vocab_size, "mask", n).item()
    return total / num_times
