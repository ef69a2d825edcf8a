"""The engine draws from the reference sampler's law (nanodfm/engine.py against nanodfm/sampler.py).

Both are held to the exact one-step transition law, written out here from the formulas, by a
chi-square over many draws; whole samples of the two agree in distribution; and the engine's own
shortcuts (logits only at candidates, the fused output layer) draw exactly what its plain step over
full logits draws.
"""

import math

import pytest
import torch

from nanodfm import categorical, engine, sampler
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import ProbPath
from nanodfm.sampler import Schedule

V = 7


def chi_square(counts, expected):
    """Pearson's statistic and its degrees of freedom, bins of expected count below 5 pooled."""
    big = expected >= 5
    obs, exp = counts[big].tolist(), expected[big].tolist()
    if (~big).any():
        obs.append(counts[~big].sum().item())
        exp.append(expected[~big].sum().item())
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp) if e > 0)
    return stat, max(1, len(exp) - 1)


def critical(df):
    """A chi-square bound that the right law exceeds with probability below about 1e-4 (df <= 8)."""
    return df + 4.5 * math.sqrt(2 * df) + 8


def exact_law(x, probs, t, h, path, rule, fixed):
    """(L, V) the exact chance that each position of x (L,) holds each token after one step."""
    L = x.shape[0]
    out = torch.zeros(L, V, dtype=torch.float64)
    for i in range(L):
        p = probs[i]
        masked = x[i] == path.mask_id
        if fixed[i] or (path.source == "mask" and not masked):
            out[i, x[i]] = 1.0
            continue
        if t + h >= 1:
            out[i] = p
            continue
        p_xt = 0.0 if masked else p[x[i]].item()
        tt, hh = torch.tensor([t], dtype=torch.float64), torch.tensor([h], dtype=torch.float64)
        J = sampler.jump_probability(torch.tensor([[p_xt]]), tt, hh, path, rule).item()
        new = p.clone()
        if not masked:
            new[x[i]] = 0.0
        out[i] = J * new / new.sum()
        if not masked:
            out[i, x[i]] += 1 - J
    return out


def case(source):
    """One row of positions of every kind, with the logits at each: (x (L,), logits (L, V), fixed (L,))."""
    p = torch.tensor([
        [0.4, 0.3, 0.2, 0.1 - 1e-4, 1e-4, 0.0, 0.0],  # a token of probability 1e-4
        [0.05, 0.15, 0.2, 0.2, 0.2, 0.1, 0.1],
        [1 - 1e-9, 1e-9 / 2, 1e-9 / 2, 0.0, 0.0, 0.0, 0.0],  # its current token is almost certain
        [1e-6, 0.5, 0.5 - 1e-6, 0.0, 0.0, 0.0, 0.0],  # its current token is almost impossible
        [0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1],  # a prompt position
    ], dtype=torch.float64)
    logits = p.clamp_min(1e-300).log()
    fixed = torch.tensor([False, False, False, False, True])
    path = ProbPath(V, source)
    if source == "mask":  # masked positions, one already decoded, the prompt
        x = torch.tensor([path.mask_id, path.mask_id, 0, path.mask_id, 3])
    else:
        x = torch.tensor([3, 1, 0, 0, 3])
    return x, logits, fixed


@pytest.fixture(params=["cpu_path", "gpu_path"])
def engine_path(request, monkeypatch):
    """The engine as it runs on a CPU, and as it runs on a GPU (no value read on the host but the
    candidates' count: every row computed, every row of logits shifted by its maximum)."""
    if request.param == "gpu_path":
        monkeypatch.setattr(categorical, "host_shortcuts", lambda device: False)
    return request.param


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("rule", ["cumulative", "euler"])
@pytest.mark.parametrize("t, h", [(0.25, 0.25), (0.5, 0.5)], ids=["inner", "final"])
@pytest.mark.parametrize("spread", [False, True], ids=["independent", "spread"])
def test_one_step_law_of_reference_and_engine(source, rule, t, h, spread, engine_path):
    """Each position's law after one step, spread jump tests or not (they change only which positions move
    together), is the exact law, for the reference and the engine."""
    N = 40_000
    path = ProbPath(V, source)
    x, logits, fixed = case(source)
    L = x.shape[0]
    law = exact_law(x, torch.softmax(logits, -1), t, h, path, rule, fixed)  # (L, V)
    xs, zs, fs = x.expand(N, L), logits.float().expand(N, L, V), fixed.expand(N, L)
    ts = torch.full((N,), t)
    for seed, step in enumerate((sampler.step, engine.step)):
        after = step(xs, zs, ts, h, path, rule, fixed=fs, generator=torch.Generator().manual_seed(seed), spread=spread)
        assert (after < V).all() or source == "mask" and t + h < 1
        for i in range(L):
            counts = torch.bincount(after[:, i].clamp(max=V), minlength=V + 1).double()
            if source == "mask" and x[i] == path.mask_id:  # staying masked is the rest of the law
                expected = torch.cat([law[i], (1 - law[i].sum()).reshape(1)]) * N
            else:
                expected = torch.cat([law[i], torch.zeros(1)]) * N
            assert counts[expected == 0].sum() == 0, (step.__module__, i, counts, expected)  # never the impossible
            stat, df = chi_square(counts, expected)
            assert stat < critical(df), (step.__module__, i, stat, df, counts, expected)


def transformer(vocab_size, seed=0, step_conditioned=False):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, n_cond=8,
                                    step_conditioned=step_conditioned))
    for p in model.parameters():  # random modulations, so the output depends on t, h and x
        torch.nn.init.normal_(p, std=0.5)
    return model.eval()


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("rule", ["cumulative", "euler"])
@pytest.mark.parametrize("schedule, first_temperature, spread", [(None, None, False), ((0.5, 0.375, 0.125), None, False),
                                                                  (None, 3.0, False), (None, None, True)],
                         ids=["uniform", "schedule", "hot-first-step", "spread"])
def test_whole_samples_agree_in_distribution(source, rule, schedule, first_temperature, spread, engine_path):
    """Sequences of 3 tokens over 3 letters in 3 steps (of 1/3 each, or of a schedule's sizes, or with
    a hotter first step, or spread jump tests) with a prompt at the middle: the 9 outcomes of each
    implementation's 30,000 samples are one law (chi-square test of homogeneity)."""
    N, vocab = 30_000, 3
    model, path = transformer(vocab, step_conditioned=True), ProbPath(vocab, source)
    prompt = torch.tensor([-1, 2, -1])
    counts = []
    for seed, sample in enumerate((sampler.sample, engine.sample)):
        x, _ = sample(model, path, N, 3, Schedule.of(3, schedule, first_temperature=first_temperature, spread=spread), rule,
                      prompt=prompt, generator=torch.Generator().manual_seed(seed))
        assert (x[:, 1] == 2).all()
        counts.append(torch.bincount(x[:, 0] * vocab + x[:, 2], minlength=vocab * vocab).double())
    a, b = counts
    pooled = (a + b) / 2
    stat = (((a - pooled) ** 2 + (b - pooled) ** 2) / pooled.clamp_min(1e-9))[pooled > 0].sum().item()
    assert stat < critical(vocab * vocab - 1), (stat, a, b)


class RowwiseModel(torch.nn.Module):
    """A trunk whose features are logits that depend on each row's own tokens and t only (the head is
    the identity), and a count of the rows and positions it was asked for."""

    def __init__(self):
        super().__init__()
        self.table, self.config = torch.randn(V + 1, V, generator=torch.Generator().manual_seed(0)), ModelConfig(vocab_size=V)
        self.head = torch.nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(V))
        self.rows_seen = self.positions_seen = 0

    def trunk(self, x, t, h=None, positions=None):  # positions: None, or indices into the B L positions
        self.rows_seen += x.shape[0]
        self.positions_seen += x.numel() if positions is None else positions.numel()
        features = self.table[x] * (1 + t[:, None, None]) + x.float().mean(-1)[:, None, None]
        return features if positions is None else features.flatten(0, 1)[positions]

    def forward(self, x, t, h=None, positions=None):
        return self.head(self.trunk(x, t, h, positions))


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("rule", ["cumulative", "euler"])
def test_engine_asks_only_where_a_position_may_move_and_draws_what_its_full_step_draws(source, rule):
    """The jump test passes only if it passes at p(x_t) = 0, so the engine asks the trunk only at
    those candidates, on the rows that have any: its samples are those of `engine.step` applied to
    the model's logits on every row and position at every step."""
    B, L, S = 16, 24, 64
    model, path = RowwiseModel(), ProbPath(V, source)
    prompt = torch.randint(0, V, (L,), generator=torch.Generator().manual_seed(1))
    prompt[3:] = -1
    x, _ = engine.sample(model, path, B, L, S, rule, prompt=prompt, generator=torch.Generator().manual_seed(2))
    # 21 changeable positions over 64 steps: rows idle at many steps, positions at most
    assert model.rows_seen < B * S * (0.5 if source == "mask" else 0.75)
    assert model.positions_seen < B * L * S // 8
    g = torch.Generator().manual_seed(2)
    fixed = (prompt >= 0).expand(B, L)
    reference = torch.where(fixed, prompt, path.source_tokens((B, L), generator=g))
    for s in range(S):
        t = torch.full((B,), s / S)
        reference = engine.step(reference, model(reference, t), t, 1 / S, path, rule, fixed=fixed, generator=g)
    assert torch.equal(x, reference)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_fused_output_layer_draws_what_the_logits_draw(source):
    """A Transformer's head is applied by the engine, fused with the block pass
    (categorical.output_blocks): the same draws as its step over the model's logits."""
    model, path = transformer(600), ProbPath(600, source)  # three blocks of the vocabulary
    fused, _ = engine.sample(model, path, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x = path.source_tokens((4, 8), generator=g)
    for s in range(8):
        t = torch.full((4,), s / 8)
        x = engine.step(x, model(x, t), t, 1 / 8, path, generator=g)
    assert torch.equal(fused, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 features meet the float32 bands
        assert engine.sample(model, path, 2, 8, 4)[0].shape == (2, 8)
    torch.testing.assert_close(model.head(model.trunk(x, torch.full((4,), 0.5))), model(x, torch.full((4,), 0.5)))
