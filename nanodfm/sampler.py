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

The jump probability is largest at p(x_t) = 0, so a position whose jump test fails there cannot
move whatever the model says (`candidates`; under the mask source, the test needs no model output
at all). `sample` draws the tests first and asks the model for logits only at the candidates, on the
rows that have any: exact, and with a large vocabulary most of the output layer is skipped.

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


def candidates(x, t, h, source, V, method="cumulative", n=1.0, u=None, fixed=None):
    """(B, L) bool: the positions that may move in this step, whatever the model says.

    A position can move if it may change (masked, under the mask source; not `fixed`) and its jump
    test u passes at p(x_t) = 0, the largest jump probability: it falls as p(x_t) grows, so no other
    position moves. The rest need no logits, no normaliser and no draw: under the uniform source at
    8 steps two thirds of the positions, at 1024 steps all but a few."""
    can_change = x == mask_id(V) if source == "mask" else torch.ones_like(x, dtype=torch.bool)
    if fixed is not None:
        can_change &= ~fixed
    return moving(can_change, torch.zeros(x.shape, dtype=torch.float64, device=x.device), t, h, method, n, u)[0]


def step(x, logits, t, h, source, method="cumulative", n=1.0, temperature=1.0, generator=None, fixed=None, u=None,
         at_candidates=False, blocks=None, maybe=None):
    """One step of size h from time t (B,): returns x at t + h (B, L). h: a float or (B,).

    logits (B, L, V) are the model's posterior logits (or log-probabilities) at (x, t); they are
    read, never changed. With at_candidates, logits (C, V) are given only at the `candidates`
    positions, in order (what `model(..., positions=candidates(...))` returns). `fixed` (B, L)
    marks positions that must not change (a prompt). A row with t + h = 1 takes the final step: its
    changeable positions draw x1 from p directly. u (B, L): the uniforms of the jump test, if the
    caller drew them already (`sample` does, to call the model only where something may move).
    The draws are categorical.py's: one pass over the candidates' logits, exact in float64;
    blocks: (scale, shifts, masses) of that pass, if the caller made it already (`sample` fuses it
    with the output layer, `categorical.output_blocks`, whose logits are base-2 log-weights: scale
    1); maybe: the `candidates`, if the caller has them.
    """
    B, L = x.shape
    V = logits.shape[-1]
    if u is None:
        u = uniform(x.shape, generator, x.device, torch.float64)
    if maybe is None:
        maybe = candidates(x, t, h, source, V, method, n, u, fixed)
    flat = maybe.reshape(-1).nonzero().squeeze(1)  # (C,) positions in x
    if at_candidates:
        if logits.shape[0] != flat.shape[0]:
            raise ValueError(f"logits for {logits.shape[0]} positions, but {flat.shape[0]} may move")
        z, rows = logits, torch.arange(flat.shape[0], device=x.device)
    else:
        z, rows = logits.reshape(B * L, V), flat  # rows of z
    current = x.reshape(-1)[flat]
    if blocks is None:
        scale = categorical.scale_for(temperature)
        shifts, masses = categorical.logit_blocks(z, None if at_candidates else rows, scale=scale)
    else:
        scale, shifts, masses = blocks
    exclude = None
    if source == "mask":  # a candidate's test passed at p(x_t) = 0, which is p(MASK): all of them move
        moving_at = flat
    else:
        others, own = categorical.without_token(z, rows, current, shifts, masses, scale=scale)
        p_xt = torch.ones(B * L, dtype=torch.float64, device=x.device)  # 1: no jump; only candidates need p
        p_xt[flat] = own / (own + others.sum(-1))  # the others' mass is a float64 sum of blocks
        moves, final = moving(maybe, p_xt.reshape(B, L), t, h, method, n, u)
        go = moves.reshape(-1)[flat]  # (C,) the candidates that move
        rows, shifts, current, others, own = rows[go], shifts[go], current[go], others[go], own[go]
        # a jump goes to a token other than the current one; the final draw is free
        jump = ~final.expand(B, L).reshape(-1)[flat[go]]
        own_block = (current // categorical.block_shape(V)[0])[:, None]
        masses = torch.where(jump[:, None], others, others.scatter_add(1, own_block, own[:, None]))
        exclude = torch.where(jump, current, -1)
        moving_at = flat[go]
    x = x.clone()
    x.view(-1)[moving_at] = categorical.draw(z, rows, shifts, masses, scale=scale, exclude=exclude, generator=generator)
    return x


def output_layer(model):
    """The weight (V, D) of the model's output layer if `sample` may apply it itself, else None: the
    model says so (`fused_head`, as Transformer does: its logits are features @ head.weight^T and
    its forward takes features=True)."""
    if getattr(model, "fused_head", False):
        return model.head.weight
    return None


@torch.no_grad()
def sample(model, num_samples, seq_len, steps, source, method="cumulative", n=1.0, temperature=1.0,
           prompt=None, fixed=None, step_size_input=False, generator=None, device="cpu",
           progress=False, on_step=None, stride=1):
    """Generate num_samples sequences of seq_len tokens in `steps` model calls (NFE = steps).

    prompt (L,) or (B, L) token ids and fixed (L,) or (B, L) bool: positions clamped to the prompt.
    step_size_input: pass h = 1/steps to the model (the few-step student).
    on_step(s, x, last_change): called after every step s in [0, steps), e.g. to show frames.
    stride (timing only): run just the steps s = stride - 1, 2 stride - 1, ..., steps - 1, each at its
    own t, and skip the others; under the uniform source a step's work depends on t alone, so the
    time times `stride` estimates the whole run's (speed.time_sampling).
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
    workspace, head = None, output_layer(model)
    for s in tqdm(range(stride - 1, steps, stride), disable=not progress, desc="sampling", leave=False):
        t = torch.full((num_samples,), s * h, device=device)
        # Which positions can move does not depend on the model (`candidates`), so draw the jump
        # tests first and ask the model for logits only there, on the rows that have any: exact, and
        # the output layer (most of the work with a large vocabulary) shrinks with the candidates.
        u = uniform(x.shape, generator, device, torch.float64)
        maybe = candidates(x, t, h, source, V, method, n, u, fixed)
        rows = maybe.any(-1)  # (B,)
        x_next = x
        if rows.all():  # the common case: no row to leave out (indexing would copy every tensor)
            rows = slice(None)
        elif rows.any():
            rows = rows.nonzero().squeeze(1)
        else:
            rows = None
        if rows is not None:
            args = (x[rows], t[rows], h if step_size_input else None)
            if head is None:
                logits, blocks = model(*args, positions=maybe[rows]), None  # (C, V)
            else:  # the output layer fused with the softmax pass (categorical.output_blocks)
                features = model(*args, positions=maybe[rows], features=True)  # (C, D)
                need = features.shape[0] * V
                if features.device.type == "cpu" and (workspace is None or workspace.numel() < need):
                    # one buffer for the logits of the steps to come, grown by doubling: a fresh
                    # tensor of tens of MB at every step costs a page fault per 4 kB
                    workspace = torch.empty(min(2 * need, num_samples * seq_len * V))
                logits, shifts, masses = categorical.output_blocks(features, head, temperature, out=workspace)
                blocks = (1.0, shifts, masses)  # the logits are already base-2 log-weights
            moved = step(x[rows], logits, t[rows], h, source, method, n, temperature, generator,
                         fixed[rows] if fixed is not None else None, u[rows], at_candidates=True, blocks=blocks,
                         maybe=maybe[rows])
            if isinstance(rows, slice):
                x_next = moved
            else:
                x_next = x.clone()
                x_next[rows] = moved
        last_change[x_next != x] = s
        x = x_next
        if on_step is not None:
            on_step(s, x, last_change)
    return x, last_change
