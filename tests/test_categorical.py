"""The categorical draw (categorical.py): exact frequencies, tiny probabilities, exclusion."""

import math

import pytest
import torch

from nanodfm import categorical


def chi_square(counts, probs):
    """Pearson's statistic over the cells with an expected count of at least 5, and their number."""
    expected = probs * counts.sum()
    keep = expected >= 5
    return (((counts - expected) ** 2 / expected)[keep]).sum().item(), int(keep.sum())


def chi_square_bound(dof):
    """A bound the statistic exceeds with probability about 1e-5 (Wilson-Hilferty)."""
    z = 4.3
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def draws(z, num, temperature=1.0, exclude=None, seed=0):
    """num draws from every row of z (R, V): counts (R, V)."""
    g = torch.Generator().manual_seed(seed)
    R, V = z.shape
    big = z.repeat(num, 1)
    rows = torch.arange(big.shape[0])
    scale = categorical.scale_for(temperature)
    shifts, masses = categorical.logit_blocks(big, None, scale=scale)
    if exclude is not None:
        exclude = exclude.repeat(num)
        masses, _ = categorical.without_token(big, rows, exclude, shifts, masses, scale=scale)
    out = categorical.draw(big, rows, shifts, masses, scale=scale, exclude=exclude, generator=g).view(num, R)
    return torch.stack([torch.bincount(out[:, r], minlength=V) for r in range(R)]).double()


@pytest.mark.parametrize("V", [7, 600])  # one block, and three blocks with a partial last one
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_frequencies_follow_p(V, temperature):
    torch.manual_seed(V)
    z = torch.randn(2, V) * 2
    z[1, 3] = 6.0  # a dominant token beside many small ones
    counts = draws(z, 40_000, temperature)
    probs = torch.softmax(z.double() / temperature, -1)
    for r in range(2):
        stat, dof = chi_square(counts[r], probs[r])
        assert stat < chi_square_bound(dof), (r, stat, dof)


def test_exclusion_never_draws_the_token_and_renormalises_the_rest():
    V = 600
    torch.manual_seed(1)
    z = torch.randn(1, V)
    z[0, 300] = 12.0  # p(x_t) ~ 0.9995: the rest must not drown in its rounding
    counts = draws(z, 60_000, exclude=torch.tensor([300]))[0]
    assert counts[300] == 0
    probs = torch.softmax(z.double(), -1)[0]
    probs[300] = 0
    stat, dof = chi_square(counts, probs / probs.sum())
    assert stat < chi_square_bound(dof), (stat, dof)


def test_tiny_probabilities_are_carried_in_float64():
    # token 5 has p = 1e-12, block 2 holds 1e-9 in all; float32 cumulative sums would lose both
    V = 600
    logp = torch.full((1, V), -60.0, dtype=torch.float64)
    logp[0, 0] = 0.0
    logp[0, 5] = math.log(1e-12)
    logp[0, 512:] = math.log(1e-9 / 88)
    z = logp.float()
    p = torch.softmax(z.double(), -1)[0]
    shifts, masses = categorical.logit_blocks(z)
    block_p = masses[0] / masses[0].sum()
    size, blocks = categorical.block_shape(V)
    assert blocks == 3
    expected = torch.stack([p[:256].sum(), p[256:512].sum(), p[512:].sum()])
    assert torch.allclose(block_p, expected, rtol=1e-5, atol=0), (block_p / expected - 1)
    weights, ids = categorical.block_weights(z, torch.tensor([0]), torch.tensor([0]), shifts)
    within = weights[0] / weights[0].sum()
    assert ids[0, 5] == 5 and within[5].item() == pytest.approx(p[5].item() / p[:256].sum().item(), rel=1e-6)
    # the whole inverse CDF: the u-interval of every token has the token's probability
    cdf = masses[0].cumsum(0)
    for j in (0, 5, 520):
        b = j // size
        w, _ = categorical.block_weights(z, torch.tensor([0]), torch.tensor([b]), shifts)
        mass = (cdf[b] - (cdf[b - 1] if b else 0)) / cdf[-1] * w[0, j - b * size] / w[0].sum()
        assert mass.item() == pytest.approx(p[j].item(), rel=1e-6)


def test_probability_of_the_current_token_keeps_its_complement():
    # p(x_t) = 1 - 1e-9: the chance to leave, 1e-9, must survive (1 - p in float32 would be 0)
    V = 100
    z = torch.full((1, V), 0.0)
    z[0, 42] = math.log((V - 1) / 1e-9)
    shifts, masses = categorical.logit_blocks(z)
    others, own = categorical.without_token(z, torch.tensor([0]), torch.tensor([42]), shifts, masses)
    leave = others.sum(-1) / (others.sum(-1) + own)
    assert leave.item() == pytest.approx(1e-9, rel=1e-5)


def test_minus_infinity_is_never_drawn_and_rows_are_independent_of_chunking():
    z = torch.randn(37, 300)
    z[:, ::2] = float("-inf")  # top-k style masking
    g = torch.Generator().manual_seed(0)
    out = categorical.sample_logits(z, generator=g)
    assert (out % 2 == 1).all()
    m1, s1 = categorical.logit_blocks(z, chunk_elements=300)  # one row per chunk
    m2, s2 = categorical.logit_blocks(z)
    assert torch.equal(m1, m2) and torch.allclose(s1, s2, rtol=1e-6)
    rows = torch.tensor([3, 0, 3])
    m3, s3 = categorical.logit_blocks(z, rows)
    assert torch.equal(m3, m2[rows]) and torch.allclose(s3, s2[rows], rtol=1e-6)


def test_rows_beyond_float32s_range_are_shifted_by_their_maximum():
    V = 600
    z = torch.randn(4, V)
    z[1] += 300.0  # 2^433 would overflow float32
    z[2] -= 80.0  # every weight below 2^-115: nearly out of the normal range
    z[3, 7] = 90.0  # one large logit; 2^130 still overflows
    shifts, masses = categorical.logit_blocks(z)
    assert shifts[0] == 0  # the others' maxima, where exp would overflow or lose precision
    torch.testing.assert_close(shifts[1:], z[1:].max(-1).values * categorical.LOG2E)
    reference = torch.softmax(z.double(), -1)
    block_p = masses / masses.sum(-1, keepdim=True)
    expected = torch.stack([reference[:, :256].sum(-1), reference[:, 256:512].sum(-1), reference[:, 512:].sum(-1)], -1)
    torch.testing.assert_close(block_p, expected, rtol=1e-5, atol=1e-12)
    weights, _ = categorical.block_weights(z, torch.arange(4), torch.zeros(4, dtype=torch.long), shifts)
    torch.testing.assert_close(weights.sum(-1), masses[:, 0], rtol=1e-5, atol=0)  # the two levels agree


@pytest.mark.parametrize("V", [65, 600])  # one block; three, with a partial last one
def test_output_layer_fused_with_the_pass_equals_the_two_steps(V):
    g = torch.Generator().manual_seed(V)
    features, weight = torch.randn(37, 16, generator=g), torch.randn(V, 16, generator=g)
    features[5] *= 40  # logits of several hundred: this row needs the shift
    for temperature in (1.0, 0.7):
        z_ref = features @ weight.T
        scale = categorical.scale_for(temperature)
        shifts_ref, masses_ref = categorical.logit_blocks(z_ref, None, scale=scale)
        for chunk in (None, 300, 20_000):  # one band; one row of one block at a time; bands of rows
            a, shifts, masses = categorical.output_blocks(features, weight, temperature, chunk)
            torch.testing.assert_close(a, z_ref * scale, rtol=1e-5, atol=1e-4)  # base-2 log-weights
            torch.testing.assert_close(shifts, shifts_ref, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(masses, masses_ref, rtol=1e-4, atol=0)
    assert shifts[5] > 0 and (shifts[torch.arange(37) != 5] == 0).all()


def test_bfloat16_logits_give_the_masses_of_their_float32_values():
    z = (torch.randn(3, 600) * 8).bfloat16()  # under autocast a model may return bfloat16 logits
    shifts, masses = categorical.logit_blocks(z)
    shifts32, masses32 = categorical.logit_blocks(z.float())
    torch.testing.assert_close(masses, masses32, rtol=1e-6, atol=0)  # block_weights reads the same values
    assert torch.equal(shifts, shifts32)
