"""The reference sampler, the Euler and cumulative-scalar steps (docs/method.md section 4).
tests/test_engine.py holds the engine to the same law."""

import math
import runpy
from pathlib import Path

import pytest
import torch

from nanodfm.config import UsageError
from nanodfm.model import ModelConfig, Transformer
from nanodfm import engine
from nanodfm.path import LOG_ZERO, ProbPath
from nanodfm.sampler import COARSE_TO_FINE, STEP_RULES, Schedule, jump_probability, jump_tests, sample, step

V = 7
MASK = ProbPath(V).mask_id


class PerfectDenoiser(torch.nn.Module):
    """Knows the answer: puts all probability on a fixed x1 (1, L) at every step."""

    def __init__(self, x1):
        super().__init__()
        self.x1, self.config = x1, ModelConfig(vocab_size=V)

    def forward(self, x, t, h=None):
        return torch.full((*x.shape, V), LOG_ZERO).scatter(-1, self.x1.expand(x.shape).unsqueeze(-1), 0.0)


def masked_fractions(model, steps, method, n=1.0, num_samples=200, seq_len=100, seed=0, schedule=None):
    """Fraction of the still-masked positions that each step unmasks."""
    fractions, masked = [], [float(num_samples * seq_len)]
    def on_step(s, x, last_change):
        now = (x == MASK).sum().item()
        fractions.append(1 - now / masked[-1] if masked[-1] else float("nan"))
        masked.append(now)
    x, _ = sample(model, ProbPath(V, "mask", n), num_samples, seq_len, Schedule.of(steps, schedule), method,
                  generator=torch.Generator().manual_seed(seed), on_step=on_step)
    return x, fractions, masked


SCHEDULES = [[1.0], [0.5] * 2, [0.25] * 4, [0.125] * 8, [0.5, 0.25, 0.125, 0.125], [0.7, 0.2, 0.1]]


@pytest.mark.parametrize("sizes", SCHEDULES, ids=lambda sizes: ",".join(f"{h:g}" for h in sizes))
@pytest.mark.parametrize("n", [1.0, 2.0])
def test_cumulative_step_unmasks_the_exact_fraction(sizes, n):
    """For any step sizes, uniform (1/steps each, the default) or a schedule's."""
    steps = len(sizes)
    uniform_sizes = len(set(sizes)) == 1
    h = torch.tensor(sizes, dtype=torch.float64)
    t = torch.cumsum(h, 0) - h
    path = ProbPath(V, "mask", n)
    exact = (path.kappa(t + h) - path.kappa(t)) / (1 - path.kappa(t))
    # the jump probability itself is exact, not only in expectation ...
    probs = jump_probability(torch.zeros(steps, 1), t, h, path, "cumulative")[:, 0]
    assert torch.allclose(probs[:-1], exact[:-1], atol=1e-12)
    # ... and the sampler draws it: every step within 5 binomial standard deviations
    x1 = torch.randint(0, V, (1, 100), generator=torch.Generator().manual_seed(1))
    x, fractions, masked = masked_fractions(PerfectDenoiser(x1), steps, "cumulative", n,
                                            schedule=None if uniform_sizes else sizes)
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
    path = ProbPath(V, source)
    formula = jump_probability(torch.full((1, 1), p_xt), torch.tensor([t]), torch.tensor([h]), path, "euler")
    assert formula.item() == pytest.approx(exact, abs=1e-12)
    # the h -> 0 form differs by 0.012 here; the sampler follows the exact one within 5 sigma
    N = 200_000
    x = torch.full((1, N), MASK if source == "mask" else 0)
    logits = p.clamp_min(1e-30).log().expand(1, N, V)
    moved = step(x, logits, torch.tensor([t]), h, path, "euler", generator=torch.Generator().manual_seed(9))
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


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("method", ["cumulative", "euler"])
def test_prompt_is_kept_and_decoded_tokens_are_final(source, method, sample_fn):
    model = tiny_model()
    prompt = torch.randint(0, V, (32,), generator=torch.Generator().manual_seed(3))
    fixed = torch.zeros(32, dtype=torch.bool)
    fixed[:5] = fixed[20:24] = True
    frames = []
    x, last_change = sample_fn(model, ProbPath(V, source), 16, 32, 8, method, prompt=prompt.masked_fill(~fixed, -1),
                               generator=torch.Generator().manual_seed(4),
                               on_step=lambda s, x, last_change: frames.append(x.clone()))
    assert (x < V).all() and (x >= 0).all()
    assert torch.equal(x[:, fixed], prompt[fixed].expand(16, -1))
    assert (last_change[:, fixed] == -1).all() and ((last_change[:, ~fixed] >= 0) & (last_change[:, ~fixed] < 8)).all()
    if source == "mask":
        for before, after in zip(frames, frames[1:]):
            decoded = before != MASK
            assert torch.equal(after[decoded], before[decoded])
        changed = sum((a != b).long() for a, b in zip(frames[1:], frames[:-1]))
        assert ((changed + (frames[0] != MASK).long())[:, ~fixed] == 1).all()  # each position once


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
def test_same_seed_same_samples(sample_fn):
    model = tiny_model()
    a, _ = sample_fn(model, ProbPath(V), 4, 32, 4, generator=torch.Generator().manual_seed(5))
    b, _ = sample_fn(model, ProbPath(V), 4, 32, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


class StepRecorder(Transformer):
    """A step-conditioned transformer that records the (t, h) of every call of its trunk."""

    def __init__(self):
        super().__init__(ModelConfig(vocab_size=V, block_size=32, n_layer=1, n_head=2, n_embd=16, n_cond=8,
                                     step_conditioned=True))
        self.calls = []

    def trunk(self, idx, t=None, h=None, cache=None, positions=None):
        self.calls.append((t.tolist(), h if isinstance(h, float) else h.tolist()))
        return super().trunk(idx, t, h, cache, positions)


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_a_student_is_given_each_steps_own_time_and_size(sample_fn, source):
    sizes = [0.5, 0.25, 0.125, 0.125]
    model = StepRecorder().eval()
    sample_fn(model, ProbPath(V, source), 3, 32, Schedule.of(4, sizes), generator=torch.Generator().manual_seed(0))
    assert len(model.calls) == 4
    for (t, h), start, size in zip(model.calls, [0.0, 0.5, 0.75, 0.875], sizes):
        assert t == [start] * len(t) and (h == size if isinstance(h, float) else h == [size] * len(h))


def test_coarse_to_fine_takes_sizes_the_cpu_student_was_trained_on():
    """Each of its schedules sums to 1, never grows, and uses only h = 2^-k with k at most the CPU
    recipe's max_step_exponent (a student meets no other h in training)."""
    recipe = runpy.run_path(str(Path(__file__).resolve().parents[1] / "config" / "shakespeare_char_cpu_student.py"))
    trained = {2.0 ** -k for k in range(recipe["max_step_exponent"] + 1)}
    for steps, sizes in COARSE_TO_FINE.items():
        assert len(sizes) == steps and math.fsum(sizes) == 1.0 and set(sizes) <= trained
        assert list(sizes) == sorted(sizes, reverse=True)
        assert Schedule.of(steps, sizes).times()[-1][0] + sizes[-1] == 1.0


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
def test_a_uniform_schedule_is_the_default(sample_fn):
    a, _ = sample_fn(tiny_model(), ProbPath(V), 4, 32, 4, generator=torch.Generator().manual_seed(5))
    b, _ = sample_fn(tiny_model(), ProbPath(V), 4, 32, Schedule.of(4, [0.25] * 4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
@pytest.mark.parametrize("schedule, message", [([0.5, 0.5], "of 3 steps takes 3 step sizes.*got 2"),
                                               ([0.5, 0.25, 0.125], "summing to 1.*summing to 0.875"),
                                               ([1.0, 0.0, 0.0], r"in \(0, 1\]"),
                                               ([1.5, -0.25, -0.25], r"in \(0, 1\]"),
                                               ([float("nan")] * 3, r"in \(0, 1\]")])
def test_a_bad_schedule_is_a_usage_error(sample_fn, schedule, message):
    with pytest.raises(UsageError, match=message):
        sample_fn(tiny_model(), ProbPath(V), 1, 8, Schedule.of(3, schedule))


def test_only_the_first_step_takes_the_first_temperature():
    assert Schedule.of(4, None, 0.9, 3.0).temperatures == (3.0, 0.9, 0.9, 0.9)
    assert Schedule.of(3, None, 0.9).temperatures == (0.9,) * 3


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_a_first_temperature_heats_the_first_step_alone(sample_fn, source):
    """The first step at first_temperature T draws what a first step at temperature T does (the state
    after it is the same), the samples of one step too; a first temperature equal to the temperature
    changes nothing."""
    def run(steps, **kw):
        states = []
        x, _ = sample_fn(tiny_model(), ProbPath(V, source), 8, 32, Schedule.of(steps, **kw),
                         generator=torch.Generator().manual_seed(3), on_step=lambda s, x, last: states.append(x.clone()))
        return x, states[0]
    assert torch.equal(run(4, first_temperature=3.0)[1], run(4, temperature=3.0)[1])
    assert torch.equal(run(1, first_temperature=3.0)[0], run(1, temperature=3.0)[0])
    assert torch.equal(run(4, temperature=0.8, first_temperature=0.8)[0], run(4, temperature=0.8)[0])


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_first_temperature_is_a_usage_error(sample_fn, bad):
    with pytest.raises(UsageError, match="temperatures must be finite and at least 0.0001"):
        sample_fn(tiny_model(), ProbPath(V), 1, 8, Schedule.of(3, first_temperature=bad))


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
def test_zero_steps_and_unknown_samplers_are_usage_errors(sample_fn):
    with pytest.raises(UsageError, match="steps must be a positive integer"):
        sample_fn(tiny_model(), ProbPath(V), 1, 8, 0)
    with pytest.raises(UsageError, match="unknown sampler 'heun': use one of cumulative, euler$"):
        sample_fn(tiny_model(), ProbPath(V), 1, 8, 2, "heun")


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_a_new_step_rule_is_one_table_entry_and_the_engine_runs_it_through_the_reference(source, monkeypatch):
    """A fork adds a rule (here: every position that may change leaves with probability h) as one
    entry of STEP_RULES; the engine, which does not accelerate it, draws exactly what the reference does."""
    monkeypatch.setitem(STEP_RULES, "flat", lambda p_xt, t, h, path: h.expand_as(p_xt))
    runs = [fn(tiny_model(), ProbPath(V, source), 4, 32, 4, "flat", generator=torch.Generator().manual_seed(7))
            for fn in (sample, engine.sample)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    with pytest.raises(UsageError, match="use one of cumulative, euler, flat$"):
        engine.sample(tiny_model(), ProbPath(V), 1, 8, 2, "heun")


def test_spread_jump_tests_are_uniform_at_each_position_and_fresh_at_each_step():
    """Each position's u is U(0, 1) whatever its index, a new draw of the same generator gives new values, and
    neighbours' u lie at least 0.38 apart on the circle (which independent draws do not)."""
    g = torch.Generator().manual_seed(0)
    u, again = jump_tests((20_000, 50), g, spread=True), jump_tests((20_000, 50), g, spread=True)
    for q in (0.1, 0.25, 0.5, 0.9):  # binomial: 5 standard deviations are 0.011 at 20,000 draws
        assert ((u < q).double().mean(0) - q).abs().max() < 0.011
    assert abs(torch.corrcoef(torch.stack([u[:, 7], again[:, 7]]))[0, 1]) < 0.03  # fresh at the next step
    gap = lambda a, b: torch.minimum((a - b).abs(), 1 - (a - b).abs())
    assert gap(u[:, 1:], u[:, :-1]).min() > 0.38
    assert gap(*(jump_tests((20_000, 2), g).unbind(1))).min() < 0.01


class AvoidCurrent(torch.nn.Module):
    """A model (trunk and head, as the engine asks) that never predicts the current token: p(x_t) = 0."""

    def __init__(self):
        super().__init__()
        self.config, self.head = ModelConfig(vocab_size=V), torch.nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(V))

    def trunk(self, x, t, h=None, positions=None):
        features = -1e4 * torch.nn.functional.one_hot(x, V + 1)[..., :V].float()
        return features if positions is None else features.flatten(0, 1)[positions]

    def forward(self, x, t, h=None):
        return self.head(self.trunk(x, t))


@pytest.mark.parametrize("sample_fn", [sample, engine.sample], ids=["reference", "engine"])
@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_spread_jumps_move_no_two_neighbours_in_one_step_where_each_jumps_with_probability_below_0_38(sample_fn,
                                                                                                     source):
    """With p(x_t) = 0 (a masked position, or a model that never predicts the current token) a position moves
    in step s of 16 with probability 1 / (16 - s), below 0.38 for s < 14. Spread, no two neighbours move in the
    same such step; independent, neighbours often move together. Under the uniform source (every position
    may move) each position moves at each step as often as the rule says, spread or not."""
    model, path, L = AvoidCurrent(), ProbPath(V, source), 64
    moved = {}
    for spread in (True, False):
        states = []
        sample_fn(model, path, 2000, L, Schedule.of(16, spread=spread), generator=torch.Generator().manual_seed(3),
                  on_step=lambda s, x, last_change: states.append(x))
        moved[spread] = torch.stack([b != a for a, b in zip(states[:13], states[1:14])])  # steps 1 to 13
    probability = jump_probability(torch.zeros(13, 1), torch.arange(1, 14) / 16, torch.full((13,), 1 / 16), path,
                                   "cumulative")
    torch.testing.assert_close(probability[:, 0], 1 / (16 - torch.arange(1, 14, dtype=torch.float64)))
    together = lambda m: (m[..., 1:] & m[..., :-1]).sum().item()
    assert together(moved[True]) == 0 and together(moved[False]) > 1000
    if source == "uniform":  # a position moves at step s with probability 1 / (16 - s), spread or not
        expected = probability.float().expand(13, L)
        for m in moved.values():  # 5 standard deviations of a mean of 2,000 draws at p <= 1/3 are <= 0.053
            assert (m.float().mean(1) - expected).abs().max() < 0.053
