"""Sampling: S steps from t = 0 (source) to t = 1 (data), with the Euler or the cumulative step.

docs/method.md section 4. One step from t to t + h, per position, given p = p(x1 | x_t):

- Euler (DFM, Meta's flow_matching solver): draw x1_hat ~ p and jump to it, if it differs from x_t,
  with probability 1 - exp(-h * g(t)); so a position jumps with probability
  (1 - p(x_t)) * (1 - exp(-h * g(t))). (1 - exp(-h * g(t) * (1 - p(x_t)))) agrees only as h -> 0.
- Cumulative scalar (FS-DFM, as the release's solver): the jump intensity g(t) * (1 - p(x_t)) with g
  replaced by its average over the step, gbar(t, h), so the jump probability is
  1 - survival(t, h) ** (1 - p(x_t)). With the mask source and a perfect denoiser it unmasks exactly
  (kappa(t+h) - kappa(t)) / (1 - kappa(t)) of the masked positions, for any h: the MDLM ancestral rule.
- A position that jumps draws its new token from p restricted to tokens other than x_t.
- The last step (t + h = 1) draws x1 from p directly. Under the mask source only masked positions
  ever change, so a decoded token is never revised.

Under the mask source the jump test needs no model output, so `sample` draws it first and calls
the model only on rows where a position moves (at most `steps` calls, on fewer rows).

Probabilities are computed in float32 and categories drawn in float64: float32 Gumbel noise
truncates the tail and lowers entropy, which flatters generative perplexity.
"""

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nanodfm.config import UsageError
from nanodfm.path import SOURCES, mask_id, rate, sample_source, survival, uniform

METHODS = ("cumulative", "euler")


def sample_categorical(probs, generator=None, chunk_elements=2**24):
    """Draw one index per row of probs (N, V) by the Gumbel-max trick in float64.

    argmax p / E with E ~ Exp(1) is argmax log p + Gumbel; drawn in chunks of rows to bound memory
    (2^24 float64 elements, 128 MB, per temporary).
    """
    chunk_rows = max(1, chunk_elements // probs.shape[-1])
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    for start in range(0, probs.shape[0], chunk_rows):
        p = probs[start:start + chunk_rows].double()
        u = uniform(p.shape, generator, p.device, torch.float64)
        exponential = -torch.log1p(-u)  # u in [0, 1): -log(1 - u) is finite and > 0 except u = 0
        out[start:start + chunk_rows] = (p / exponential.clamp_min(1e-300)).argmax(dim=-1)
    return out


def jump_probability(p_xt, t, h, method, n=1.0):
    """Chance that a position leaves its token x_t during [t, t + h].

    p_xt = p(x_t | x_t) (B, L); t and h are (B,) tensors (h may also be a float)."""
    t, h = t.double()[:, None], torch.as_tensor(h, dtype=torch.float64, device=t.device).reshape(-1, 1)
    leave = 1 - p_xt.double()  # the chance that x1_hat ~ p differs from x_t
    if method == "euler":  # x1_hat differs from x_t, then jumps with 1 - e^(-h g)
        return leave * (1 - torch.exp(-h * rate(t, n)))
    if method == "cumulative":
        return 1 - survival(t, h, n) ** leave
    raise ValueError(f"unknown sampling method {method!r}: use one of {METHODS}")


def moving(can_change, p_xt, t, h, method, n, u):
    """(moves (B, L), final (B, 1)): the changeable positions whose jump test u passes over
    [t, t + h], or all of them in a row taking the final step (t + h = 1)."""
    # float32 t: (S-1)/S + 1/S may fall just short of 1
    final = (t + torch.as_tensor(h, device=t.device) >= 1 - 1e-6).reshape(-1, 1)  # (B, 1)
    return can_change & (final | (u < jump_probability(p_xt, t, h, method, n))), final


def step(x, logits, t, h, source, method="cumulative", n=1.0, temperature=1.0, generator=None, fixed=None, u=None):
    """One step of size h from time t (B,): returns x at t + h (B, L). h: a float or (B,).

    logits (B, L, V) are the model's posterior logits (or log-probabilities) at (x, t). `fixed`
    (B, L) marks positions that must not change (a prompt). A row with t + h = 1 takes the final
    step: its changeable positions draw x1 from p directly. u (B, L): the uniforms of the jump test,
    if the caller drew them already (`sample` does, to skip the model where nothing moves).
    """
    V = logits.shape[-1]
    probs = F.softmax(logits.float() / temperature, dim=-1)  # (B, L, V)
    if source == "mask":
        can_change = x == mask_id(V)  # decoded tokens are final
        p_xt = torch.zeros(x.shape, device=x.device)
    else:
        can_change = torch.ones_like(x, dtype=torch.bool)
        p_xt = probs.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    if fixed is not None:
        can_change &= ~fixed
    if u is None:
        u = uniform(x.shape, generator, x.device, torch.float64)
    moves, final = moving(can_change, p_xt, t, h, method, n, u)
    rows = probs[moves]  # (N, V) posteriors of the positions that change
    if source == "uniform":  # a jump goes to a token other than the current one; the final draw is free
        jumps = ~final.expand_as(x)[moves]
        rows[jumps] = rows[jumps].scatter(-1, x[moves][jumps].unsqueeze(-1), 0.0)
        rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-30)
    x = x.clone()
    x[moves] = sample_categorical(rows, generator)
    return x


@torch.no_grad()
def sample(model, num_samples, seq_len, steps, source, method="cumulative", n=1.0, temperature=1.0,
           prompt=None, fixed=None, step_size_input=False, generator=None, device="cpu",
           progress=False, on_step=None):
    """Generate num_samples sequences of seq_len tokens in `steps` model calls (NFE = steps).

    prompt (L,) or (B, L) token ids and fixed (L,) or (B, L) bool: positions clamped to the prompt.
    step_size_input: pass h = 1/steps to the model (the few-step student).
    on_step(s, x, last_change): called after every step s in [0, steps), e.g. to show frames.
    Returns x (B, L) and last_change (B, L): the step at which each position last took a new value
    (0 for a position that kept its initial token, -1 for prompt positions).
    """
    if steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps}")
    if source not in SOURCES:
        raise UsageError(f"unknown source {source!r}: use one of {SOURCES}")
    V = model.config.vocab_size
    shape = (num_samples, seq_len)
    x = sample_source(shape, V, source, generator=generator, device=device)
    if fixed is not None:
        fixed = fixed.to(device).expand(shape)
        x = torch.where(fixed, prompt.to(device).expand(shape), x)
    last_change = torch.zeros(shape, dtype=torch.long, device=device)
    if fixed is not None:
        last_change[fixed] = -1
    h = 1.0 / steps
    for s in tqdm(range(steps), disable=not progress, desc="sampling", leave=False):
        t = torch.full((num_samples,), s * h, device=device)
        if source == "mask":
            # The jump test of a masked position does not depend on the model (p(x_t) = 0), so draw
            # it first and call the model only on rows where some position moves: exact, and at
            # 1024 steps of 128 tokens about 8 times fewer rows. Same draws as the full batch.
            u = uniform(x.shape, generator, device, torch.float64)
            can_change = (x == mask_id(V)) & (~fixed if fixed is not None else True)
            rows = moving(can_change, torch.zeros(x.shape, device=device), t, h, method, n, u)[0].any(-1)  # (B,)
            x_next = x.clone()
            if rows.any():
                logits = model(x[rows], t[rows], h if step_size_input else None)
                x_next[rows] = step(x[rows], logits, t[rows], h, source, method, n, temperature, generator,
                                    fixed[rows] if fixed is not None else None, u[rows])
        else:
            logits = model(x, t, h if step_size_input else None)
            x_next = step(x, logits, t, h, source, method, n, temperature, generator, fixed)
        last_change[x_next != x] = s
        x = x_next
        if on_step is not None:
            on_step(s, x, last_change)
    return x, last_change
