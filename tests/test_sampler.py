"""The Euler and cumulative-scalar samplers (docs/method.md section 4)."""

import math

import pytest
import torch

from nanodfm.config import UsageError
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import LOG_ZERO, kappa, mask_id
from nanodfm.sampler import jump_probability, sample

V = 7


class PerfectDenoiser(torch.nn.Module):
    """Knows the answer: puts all probability on a fixed x1 (1, L) at every step."""

    def __init__(self, x1):
        super().__init__()
        self.x1, self.config = x1, ModelConfig(vocab_size=V)

    def forward(self, x, t, h=None):
        return torch.full((*x.shape, V), LOG_ZERO).scatter(-1, self.x1.expand(x.shape).unsqueeze(-1), 0.0)


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
