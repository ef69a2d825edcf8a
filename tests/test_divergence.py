"""The distributional measure: the n-gram Jensen-Shannon divergence, on texts whose divergence is known."""

import math

import pytest
import torch

from nanodfm.evaluate import jensen_shannon, ngram_divergence, ngram_profile


def test_jensen_shannon_of_known_distributions():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.0, 0.5, 0.5])
    assert jensen_shannon(p, q) == pytest.approx(0.5)  # M = (1/4, 1/2, 1/4): each side 1/2 bit on half its mass
    assert jensen_shannon(p, p) == 0.0
    assert jensen_shannon(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(1.0)
    # a general pair against the definition
    p, q = torch.tensor([0.7, 0.2, 0.1]).double(), torch.tensor([0.1, 0.3, 0.6]).double()
    m = (p + q) / 2
    expected = 0.5 * sum(a * math.log2(a / b) for a, b in zip(p.tolist(), m.tolist())) \
        + 0.5 * sum(a * math.log2(a / b) for a, b in zip(q.tolist(), m.tolist()))
    assert jensen_shannon(p, q) == pytest.approx(expected, rel=1e-12)


def divergence(ids, reference, max_n=4):
    V = int(max(ids.max(), reference.max())) + 1
    return ngram_divergence(ids, ngram_profile(reference, V, max_n), V)


def test_ngram_divergence_is_zero_for_the_same_text_and_one_for_disjoint_texts():
    text = torch.randint(0, 7, (64, 40), generator=torch.Generator().manual_seed(0))
    same, ci = divergence(text, text)
    assert same == pytest.approx(0.0, abs=1e-12) and 0 < ci < 0.05  # resamples of the samples differ a little
    shuffled = text[torch.randperm(64, generator=torch.Generator().manual_seed(1))]  # the same n-grams, other order
    assert divergence(shuffled, text)[0] == pytest.approx(0.0, abs=1e-12)
    assert divergence(torch.zeros(8, 20, dtype=torch.long), torch.ones(8, 20, dtype=torch.long))[0] == 1.0


def test_ngram_divergence_counts_n_grams_not_only_tokens():
    """"0101..." against "0110 0110...": the same unigrams (JS 0 for n = 1), different bigrams:
    {01, 10} half and half against {01, 11, 10, 00} a quarter each, whose JS is computable by hand."""
    a = torch.tensor([[0, 1] * 200])
    b = torch.tensor([[0, 1, 1, 0] * 100])
    assert divergence(a, b, max_n=1)[0] == pytest.approx(0.0, abs=1e-3)
    p = torch.tensor([0.5, 0.5, 0.0, 0.0])  # 01, 10, 11, 00
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    two = divergence(a, b, max_n=2)[0]
    assert two == pytest.approx((0.0 + jensen_shannon(p, q).item()) / 2, abs=2e-3)  # up to the ends of the sequences


def test_the_interval_shrinks_with_more_samples_and_covers_the_truth():
    """Samples drawn from the reference's own distribution: the divergence falls towards 0 and its
    bootstrap interval narrows as the sample count grows."""
    g = torch.Generator().manual_seed(2)
    draw = lambda n: torch.multinomial(torch.tensor([0.5, 0.3, 0.15, 0.05]), n * 30, replacement=True,
                                       generator=g).view(n, 30)
    reference = draw(4000)
    small, small_ci = divergence(draw(32), reference, max_n=2)
    large, large_ci = divergence(draw(512), reference, max_n=2)
    assert large < small and large_ci < small_ci
    assert 0 < large < 0.01
