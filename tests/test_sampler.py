"""The Euler and cumulative-scalar samplers (docs/method.md section 4)."""

import math

import pytest
import torch

from nanodfm.config import UsageError
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import LOG_ZERO, kappa, mask_id, sample_source
from nanodfm.sampler import jump_probability, output_layer, sample, step

V = 7


class PerfectDenoiser(torch.nn.Module):
    """Knows the answer: puts all probability on a fixed x1 (1, L) at every step."""

    def __init__(self, x1):
        super().__init__()
        self.x1, self.config = x1, ModelConfig(vocab_size=V)

    def forward(self, x, t, h=None, positions=None):
        logits = torch.full((*x.shape, V), LOG_ZERO).scatter(-1, self.x1.expand(x.shape).unsqueeze(-1), 0.0)
        return logits if positions is None else logits[positions]  # (C, V) where sample asks


def masked_fractions(model, steps, method, n=1.0, num_samples=200, seq_len=100, seed=0):
    """Fraction of the still-masked positions that each step unmasks."""
    fractions, masked = [], [float(num_samples * seq_len)]
    def on_step(s, x, last_change):
        now = (x == mask_id(V)).sum().item()
        fractions.append(1 - now / masked[-1] if masked[-1] else float("nan"))
        masked.append(now)
    x, _ = sample(model, num_samples, seq_len, steps, "mask", method, n, generator=torch.Generator().manual_seed(seed),
                  on_step=on_step)
    return x, fractions, masked


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [1.0, 2.0])
def test_cumulative_step_unmasks_the_exact_fraction(steps, n):
    h = 1.0 / steps
    t = torch.arange(steps, dtype=torch.float64) * h
    exact = (kappa(t + h, n) - kappa(t, n)) / (1 - kappa(t, n))
    # the jump probability itself is exact, not only in expectation ...
    probs = jump_probability(torch.zeros(steps, 1), t, h, "cumulative", n)[:, 0]
    assert torch.allclose(probs[:-1], exact[:-1], atol=1e-12)
    # ... and the sampler draws it: every step within 5 binomial standard deviations
    x1 = torch.randint(0, V, (1, 100), generator=torch.Generator().manual_seed(1))
    x, fractions, masked = masked_fractions(PerfectDenoiser(x1), steps, "cumulative", n)
    for s in range(steps):
        p, trials = exact[s].item(), masked[s]
        assert abs(fractions[s] - p) <= 5 * math.sqrt(p * (1 - p) / trials) + 1e-12, (s, fractions[s], p)
    assert masked[-1] == 0 and torch.equal(x, x1.expand_as(x))


def test_euler_unmasks_too_few_in_two_steps():
    x1 = torch.randint(0, V, (1, 100), generator=torch.Generator().manual_seed(2))
    _, fractions, masked = masked_fractions(PerfectDenoiser(x1), 2, "euler", num_samples=400)
    p = 1 - math.exp(-0.5)  # 0.393, where the exact fraction is 0.5
    assert abs(fractions[0] - p) <= 5 * math.sqrt(p * (1 - p) / masked[0])
    assert abs(fractions[0] - 0.5) > 0.05
    assert fractions[1] == 1.0  # the final step decodes everything left



@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_euler_step_is_flow_matchings_euler_solver(source):
    """Euler draws x1_hat ~ p and moves to it with probability 1 - exp(-h g(t)): a position leaves
    x_t with probability (1 - p(x_t)) (1 - exp(-h g(t))), to a token drawn from p without x_t."""
    t, h = 0.25, 0.25
    g = 1 / (1 - t)
    p = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0])  # p(x1 | x_t) at every position
    p_xt = 0.0 if source == "mask" else 0.5  # x_t is MASK, or the token 0
    exact = (1 - p_xt) * (1 - math.exp(-h * g))
    formula = jump_probability(torch.full((1, 1), p_xt), torch.tensor([t]), h, "euler")
    assert formula.item() == pytest.approx(exact, abs=1e-12)
    # the h -> 0 form differs by 0.012 here; the sampler follows the exact one within 5 sigma
    N = 200_000
    x = torch.full((1, N), mask_id(V) if source == "mask" else 0)
    logits = p.clamp_min(1e-30).log().expand(1, N, V)
    moved = step(x, logits, torch.tensor([t]), h, source, "euler", generator=torch.Generator().manual_seed(9))
    changed = moved != x
    assert abs(changed.float().mean().item() - exact) < 5 * math.sqrt(exact * (1 - exact) / N)
    new = p.clone()
    if source == "uniform":
        new[0] = 0.0
    new = new / new.sum()
    counts = torch.bincount(moved[changed], minlength=V).double()
    expected = new.double() * changed.sum()
    assert counts[new == 0].sum() == 0
    chi2 = (((counts - expected) ** 2 / expected)[new > 0]).sum().item()
    assert chi2 < 20  # degrees of freedom <= 2: p < 1e-4 under the right distribution


class RowwiseModel(torch.nn.Module):
    """Logits that depend on each row's own tokens and t only, and a count of the rows it saw."""

    def __init__(self):
        super().__init__()
        self.table, self.config = torch.randn(V + 1, V, generator=torch.Generator().manual_seed(0)), ModelConfig(vocab_size=V)
        self.rows_seen = self.positions_seen = 0

    def forward(self, x, t, h=None, positions=None):
        self.rows_seen += x.shape[0]
        self.positions_seen += x.numel() if positions is None else int(positions.sum())
        logits = self.table[x] * (1 + t[:, None, None]) + x.float().mean(-1)[:, None, None]
        return logits if positions is None else logits[positions]


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("method", ["cumulative", "euler"])
def test_model_is_asked_only_where_a_position_may_move_and_draws_the_same(source, method):
    """The jump test passes only if it passes at p(x_t) = 0, so `sample` asks the model for logits
    only at those candidates, on the rows that have any: the samples are those of calling it on
    every row and position at every step."""
    B, L, S = 16, 24, 64
    model = RowwiseModel()
    fixed = torch.zeros(L, dtype=torch.bool)
    fixed[:3] = True
    prompt = torch.randint(0, V, (L,), generator=torch.Generator().manual_seed(1))
    x, _ = sample(model, B, L, S, source, method, prompt=prompt, fixed=fixed, generator=torch.Generator().manual_seed(2))
    # 21 changeable positions over 64 steps: rows idle at many steps, positions at most
    assert model.rows_seen < B * S * (0.5 if source == "mask" else 0.75)
    assert model.positions_seen < B * L * S // 8
    g = torch.Generator().manual_seed(2)
    reference = torch.where(fixed, prompt, sample_source((B, L), V, source, generator=g))
    for s in range(S):
        t = torch.full((B,), s / S)
        reference = step(reference, model(reference, t), t, 1 / S, source, method, generator=g, fixed=fixed.expand(B, L))
    assert torch.equal(x, reference)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_fused_output_layer_draws_what_the_logits_draw(source):
    """`sample` applies a Transformer's output layer itself, fused with the softmax pass
    (categorical.output_blocks); a model it cannot do that for returns logits. Same draws."""
    model = tiny_model(vocab_size=600)  # three blocks of the vocabulary

    class LogitsOnly:  # the same model, seen without its output layer
        config = model.config

        def __call__(self, *args, **kwargs):
            return model(*args, **kwargs)

    assert output_layer(model) is model.head.weight and output_layer(LogitsOnly()) is None
    fused, _ = sample(model, 4, 24, 8, source, generator=torch.Generator().manual_seed(5))
    plain, _ = sample(LogitsOnly(), 4, 24, 8, source, generator=torch.Generator().manual_seed(5))
    assert torch.equal(fused, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 features meet the float32 bands
        assert sample(model, 2, 24, 4, source)[0].shape == (2, 24)
    features = model(fused, torch.full((4,), 0.5), features=True)
    torch.testing.assert_close(model.head(features), model(fused, torch.full((4,), 0.5)))


def test_model_logits_at_positions_are_the_full_logits_there():
    model = tiny_model()
    x = torch.randint(0, V, (3, 10), generator=torch.Generator().manual_seed(0))
    positions = torch.rand(3, 10, generator=torch.Generator().manual_seed(1)) < 0.4
    t = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(model(x, t, positions=positions), model(x, t)[positions])


def tiny_model(seed=0, vocab_size=V):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32, n_cond=16))
    for p in model.parameters():  # random non-zero modulations, so the output depends on t and x
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("method", ["cumulative", "euler"])
def test_prompt_is_kept_and_decoded_tokens_are_final(source, method):
    model = tiny_model()
    prompt = torch.randint(0, V, (32,), generator=torch.Generator().manual_seed(3))
    fixed = torch.zeros(32, dtype=torch.bool)
    fixed[:5] = fixed[20:24] = True
    frames = []
    x, last_change = sample(model, 16, 32, 8, source, method, prompt=prompt, fixed=fixed,
                            generator=torch.Generator().manual_seed(4), on_step=lambda s, x, last_change: frames.append(x.clone()))
    assert (x < V).all() and (x >= 0).all()
    assert torch.equal(x[:, fixed], prompt[fixed].expand(16, -1))
    assert (last_change[:, fixed] == -1).all() and ((last_change[:, ~fixed] >= 0) & (last_change[:, ~fixed] < 8)).all()
    if source == "mask":
        for before, after in zip(frames, frames[1:]):
            decoded = before != mask_id(V)
            assert torch.equal(after[decoded], before[decoded])
        changed = sum((a != b).long() for a, b in zip(frames[1:], frames[:-1]))
        assert ((changed + (frames[0] != mask_id(V)).long())[:, ~fixed] == 1).all()  # each position once


def test_same_seed_same_samples():
    model = tiny_model()
    a, _ = sample(model, 4, 32, 4, "mask", generator=torch.Generator().manual_seed(5))
    b, _ = sample(model, 4, 32, 4, "mask", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_zero_steps_is_a_usage_error():
    with pytest.raises(UsageError, match="steps must be a positive integer"):
        sample(tiny_model(), 1, 8, 0, "mask")
