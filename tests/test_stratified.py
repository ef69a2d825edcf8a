"""Stratified jumps (results/stratified.py): the property that defines them."""

import importlib.util
import math
from pathlib import Path

import torch

from nanodfm.path import ProbPath
from nanodfm.sampler import jump_probability

spec = importlib.util.spec_from_file_location("stratified", Path(__file__).parents[1] / "results" / "stratified.py")
stratified = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stratified)

V, B, L = 5, 3, 40_000


def setup(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, 1, V, generator=g).expand(B, L, V) * 2  # one posterior per row
    x = torch.randint(V, (B, L), generator=g)
    phase = torch.rand(B, L, generator=g, dtype=torch.float64)
    total = torch.rand(B, L, generator=g, dtype=torch.float64) * 3  # any running total
    return g, logits, x, phase, total


def test_a_step_jumps_with_the_rules_probability_and_draws_from_the_same_law():
    path, (g, logits, x, phase, total) = ProbPath(V, "uniform"), setup(0)
    t, h = torch.tensor([0.1, 0.4, 0.7]), 0.125
    x_next, new_total = stratified.stratified_step(x, logits, t, h, path, phase, total, g)
    probs = torch.softmax(logits.double(), -1)
    p_xt = probs.gather(-1, x[..., None]).squeeze(-1)
    J = jump_probability(p_xt, t, torch.full((B,), h), path, "cumulative")
    assert torch.allclose(new_total, total + J)
    moved = x_next != x
    expected = J.mean(-1)
    assert ((moved.double().mean(-1) - expected).abs() < 4 * (expected * (1 - expected) / L).sqrt()).all()
    for row in range(B):  # the destination: p without the current token, renormalised (here: from token 0)
        came_from_0 = moved[row] & (x[row] == 0)
        counts = torch.bincount(x_next[row][came_from_0], minlength=V).double()
        law = probs[row, 0].clone()
        law[0] = 0
        law /= law.sum()
        assert counts[0] == 0
        chi2 = ((counts - counts.sum() * law) ** 2 / (counts.sum() * law).clamp_min(1e-12))[1:].sum()
        assert chi2 < 25, (counts, law)  # 4 degrees of freedom: far beyond the 99.99% point


def test_the_number_of_jumps_is_fixed_by_the_running_total():
    """A position jumps once for every theta + k its total passes: floor(A - theta) + 1 times (0 if A < theta),
    so the count is floor or ceil of A: a variance of at most 1/4, where independent coins give sum J (1 - J)."""
    path, (g, logits, x, phase, _) = ProbPath(V, "uniform"), setup(1)
    total, jumps, steps = torch.zeros_like(phase), torch.zeros(B, L, dtype=torch.long), 8
    for s in range(steps - 1):  # the last step draws x1 itself: every position moves
        t = torch.full((B,), s / steps)
        x_next, total = stratified.stratified_step(x, logits, t, 1 / steps, path, phase, total, g)
        jumps += x_next != x
        x = x_next
    expected = torch.where(total >= phase, torch.floor(total - phase) + 1, 0).long()
    assert torch.equal(jumps, expected)
    assert ((jumps - torch.floor(total)).abs() <= 1).all() and math.isfinite(total.max().item())
