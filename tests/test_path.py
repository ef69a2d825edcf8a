"""The probability path and the DFM loss (docs/method.md sections 1 and 3)."""

import math

import pytest
import torch

from nanodfm.path import LOG_ZERO, T_EPS, ProbPath, elbo_bound, sample_times

V = 11
MASK = ProbPath(V).mask_id


def one_hot_logits(x1, vocab_size=V):
    """Logits of a perfect denoiser: all probability on the data token."""
    return torch.full((*x1.shape, vocab_size), LOG_ZERO).scatter(-1, x1.unsqueeze(-1), 0.0)


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("n", [1.0, 2.0])
@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_fraction_of_data_tokens_is_kappa(source, n, t):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randint(0, V, (64, 1000), generator=g)
    x_t = ProbPath(V, source, n).x_t(x1, torch.full((64,), t), generator=g)
    k = t ** n
    # a uniform source token equals the data token by chance 1 time in V
    expected = k if source == "mask" else k + (1 - k) / V
    sigma = math.sqrt(expected * (1 - expected) / x1.numel())
    assert abs((x_t == x1).float().mean().item() - expected) <= 5 * sigma + 1e-9
    if source == "mask":
        assert ((x_t == x1) | (x_t == MASK)).all()
    else:
        assert (x_t < V).all()


def test_stratified_times_cover_every_stratum():
    t = sample_times(16, generator=torch.Generator().manual_seed(1))
    strata = (t / (1 - T_EPS) * 16).floor()
    assert torch.equal(strata, torch.arange(16).float())


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("weighting", ["elbo", "ce"])
def test_loss_is_non_negative(source, weighting):
    g = torch.Generator().manual_seed(2)
    x1 = torch.randint(0, V, (32, 50), generator=g)
    t = sample_times(32, generator=g)
    x_t = ProbPath(V, source).x_t(x1, t, generator=g)
    per_pos = ProbPath(V, source).loss(torch.randn(32, 50, V, generator=g) * 3, x1, x_t, t, weighting, reduce=False)
    assert (per_pos >= 0).all() and per_pos.sum() > 0


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_loss_is_zero_for_a_perfect_denoiser(source):
    g = torch.Generator().manual_seed(3)
    x1 = torch.randint(0, V, (32, 50), generator=g)
    t = sample_times(32, generator=g)
    x_t = ProbPath(V, source).x_t(x1, t, generator=g)
    assert ProbPath(V, source).loss(one_hot_logits(x1), x1, x_t, t).item() == 0.0


def test_mask_loss_is_weighted_cross_entropy_on_masked_positions():
    g = torch.Generator().manual_seed(4)
    x1 = torch.randint(0, V, (8, 40), generator=g)
    t = torch.rand(8, generator=g) * 0.9
    x_t = ProbPath(V, "mask").x_t(x1, t, generator=g)
    logits = torch.randn(8, 40, V, generator=g)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x1, reduction="none")  # (B, L)
    expected = (ce * (x_t == MASK) / (1 - t)[:, None]).mean()
    assert torch.allclose(ProbPath(V, "mask").loss(logits, x1, x_t, t), expected, rtol=1e-5)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_loss_is_finite_near_t_equal_one(source):
    g = torch.Generator().manual_seed(5)
    x1 = torch.randint(0, V, (4, 30), generator=g)
    t = torch.full((4,), 1 - T_EPS)
    x_t = ProbPath(V, source).x_t(x1, t, generator=g)
    x_t[:, 0] = MASK if source == "mask" else (x1[:, 0] + 1) % V  # at least one corrupted position
    loss = ProbPath(V, source).loss(torch.randn(4, 30, V, generator=g) * 10, x1, x_t, t)
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(ProbPath(V, source).rate(torch.tensor([1.0])))


def test_mean_rate_tends_to_rate():
    t = torch.tensor([0.0, 0.3, 0.7, 0.95])
    for n in (1.0, 2.0):
        path = ProbPath(V, "mask", n)
        assert torch.allclose(path.mean_rate(t.double(), 1e-7), path.rate(t.double()), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(path.mean_rate(t.double(), 0.04), path.rate(t.double()), rtol=1e-4)
        # exp(-h gbar) is the path's survival: the cumulative step's exactness
        assert torch.allclose(torch.exp(-0.04 * path.mean_rate(t.double(), 0.04)), path.survival(t.double(), 0.04))


def test_elbo_of_an_uninformed_model_is_log_vocab_size():
    """A model that always predicts uniformly pays log V per masked token, weighted by g(t) = 1/(1-t);
    the chance of being masked is 1-t, so the bound is exactly log V in expectation."""
    class Uniform(torch.nn.Module):
        def forward(self, x, t, h=None):
            return torch.zeros(*x.shape, V)
    x1 = torch.randint(0, V, (64, 200), generator=torch.Generator().manual_seed(6))
    bound = elbo_bound(Uniform(), x1, ProbPath(V), num_times=16, generator=torch.Generator().manual_seed(7))
    assert abs(bound - math.log(V)) < 0.02 * math.log(V)


def test_a_path_is_one_value_built_from_a_checkpoint():
    ckpt = {"model_config": {"vocab_size": 65}, "config": {"source": "uniform", "kappa_power": 2.0}}
    assert ProbPath.of(ckpt) == ProbPath(65, "uniform", 2.0)
    with pytest.raises(ValueError, match="unknown source"):
        ProbPath(65, "gaussian")
