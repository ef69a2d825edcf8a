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

Categories are drawn by categorical.py: exact, with float64 cumulative sums (float32 noise would
truncate the tail and lower the entropy, which flatters generative perplexity), at about the cost
of one pass over the logits.
"""

import torch
from tqdm import tqdm

from nanodfm import categorical
from nanodfm.config import UsageError
from nanodfm.path import SOURCES, mask_id, rate, sample_source, survival, uniform

METHODS = ("cumulative", "euler")


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

    logits (B, L, V) are the model's posterior logits (or log-probabilities) at (x, t); they are
    read, never changed. `fixed` (B, L) marks positions that must not change (a prompt). A row with
    t + h = 1 takes the final step: its changeable positions draw x1 from p directly. u (B, L): the
    uniforms of the jump test, if the caller drew them already (`sample` does, to skip the model
    where nothing moves). The draws are categorical.py's: one pass over the logits, exact in float64.
    """
    B, L, V = logits.shape
    z = logits.reshape(B * L, V)
    if source == "mask":
        can_change = x == mask_id(V)  # decoded tokens are final
        p_xt = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    else:
        can_change = torch.ones_like(x, dtype=torch.bool)
        everyone = torch.arange(B * L, device=x.device)
        maxima, masses = categorical.logit_blocks(z, None, temperature)
        others, own = categorical.without_token(z, everyone, x.reshape(-1), maxima, masses, temperature)
        rest = others.sum(-1)  # the mass of every token but x_t, in float64 from the blocks
        p_xt = (own / (own + rest)).reshape(B, L)
    if fixed is not None:
        can_change &= ~fixed
    if u is None:
        u = uniform(x.shape, generator, x.device, torch.float64)
    moves, final = moving(can_change, p_xt, t, h, method, n, u)
    rows = moves.reshape(-1).nonzero().squeeze(1)  # (N,) the positions that change
    if source == "mask":
        maxima, masses = categorical.logit_blocks(z, rows, temperature)
        exclude = None
    else:  # a jump goes to a token other than the current one; the final draw is free
        jump = ~final.expand(B, L).reshape(-1)[rows]
        others, own = others[rows], own[rows]
        own_block = (x.reshape(-1)[rows] // categorical.block_shape(V)[0])[:, None]
        masses = torch.where(jump[:, None], others, others.scatter_add(1, own_block, own[:, None]))
        maxima = maxima[rows]
        exclude = torch.where(jump, x.reshape(-1)[rows], -1)
    x = x.clone()
    x.view(-1)[rows] = categorical.draw(z, rows, maxima, masses, temperature, exclude, generator)
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
