"""Few-step distillation (docs/method.md section 5)."""

import copy

import pytest
import torch

from nanodfm import engine
from nanodfm.distill import Recipe, distill_loss, ema_update, sample_step_sizes, shortcut_target
from train import student_from_dfm
from nanodfm.path import LOG_ZERO, ProbPath
from test_sampler import PerfectDenoiser, V, tiny_model


@pytest.mark.parametrize("weighting", ["inverse_h", "uniform"])
def test_step_sizes_lie_on_the_grid_with_the_chosen_frequencies(weighting):
    K, N = 5, 200_000
    t, h = sample_step_sizes(N, Recipe(step_size_weighting=weighting, max_step_exponent=K), torch.Generator().manual_seed(0))
    grid = 2.0 ** -K
    assert torch.equal(t / grid, (t / grid).round()) and (t >= 0).all()
    assert (t + h <= 1).all()
    exponents = (-torch.log2(h)).round().long()
    assert torch.equal(h, 2.0 ** -exponents.float())
    counts = torch.bincount(exponents, minlength=K + 1).double()
    if weighting == "inverse_h":  # P(h = 2^-k) proportional to 2^k
        expected = N * 2.0 ** torch.arange(K + 1) / (2 ** (K + 1) - 1)
    else:  # every exponent equally often
        expected = torch.full((K + 1,), N / (K + 1), dtype=torch.float64)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 25.7  # the 0.9999 quantile of chi-square with K = 5 degrees of freedom
    # given h, the start t is uniform over its allowed multiples of 2^-K: check the mean for h = 1/2
    half = t[exponents == 1]
    assert abs(half.mean().item() - 0.25) < 0.01  # t in {0, 1/32, ..., 1/2}


def test_untrained_student_equals_its_dfm_parent_for_any_h():
    dfm = tiny_model(seed=1)
    student = student_from_dfm(dfm)
    x = torch.randint(0, V + 1, (3, 32), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.1, 0.5, 0.9])
    expected = dfm(x, t)
    for h in (1.0, 0.5, 1 / 64, torch.tensor([1.0, 0.25, 1 / 8])):
        assert torch.equal(student(x, t, h), expected)
    # and it does learn to use h: a non-zero last layer makes h matter
    torch.nn.init.normal_(student.step_mlp[-1].weight)
    assert not torch.allclose(student(x, t, 1.0), student(x, t, 1 / 64))


@pytest.mark.parametrize("average", ["logits", "probs"])
@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("method", ["rk2", "rk4"])
def test_perfect_teacher_gives_exact_targets_and_zero_loss(source, method, average):
    g = torch.Generator().manual_seed(3)
    x1 = torch.randint(0, V, (1, 40), generator=g)
    perfect = PerfectDenoiser(x1)
    data = x1.expand(64, -1)
    path, recipe = ProbPath(V, source), Recipe(teacher=method, teacher_average=average, max_step_exponent=4)
    t, h = sample_step_sizes(64, recipe, g)
    x_t = path.x_t(data, t, generator=g)
    target = shortcut_target(perfect, x_t, t, h, path, recipe, generator=g)
    assert torch.isfinite(target).all()
    assert torch.equal(target.log_softmax(-1).argmax(-1), data)
    torch.testing.assert_close(target.log_softmax(-1).exp(), path.posterior_log_probs(perfect(x_t, t), x_t).exp())
    assert distill_loss(perfect, perfect, data, path, recipe, generator=g).item() == 0.0


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_rk2_target_averages_log_probabilities_or_probabilities(source):
    """The target is the mean of the two half steps' log-posteriors ("logits", a geometric mean) or
    of their probabilities ("probs", the mean velocity), the second half step taken from x_a."""
    teacher = tiny_model(seed=10)
    g = torch.Generator().manual_seed(11)
    path = ProbPath(V, source)
    x_t = path.x_t(torch.randint(0, V, (4, 32), generator=g), torch.full((4,), 0.3), generator=g)
    t, h = torch.full((4,), 0.25), torch.full((4,), 0.5)
    l1 = path.posterior_log_probs(teacher(x_t, t, h / 2), x_t)
    x_a = engine.step(x_t, l1, t, h / 2, path, "cumulative", generator=torch.Generator().manual_seed(12))
    l2 = path.posterior_log_probs(teacher(x_a, t + h / 2, h / 2), x_a)
    geometric, arithmetic = (l1 + l2) / 2, ((l1.exp() + l2.exp()) / 2).log().clamp_min(LOG_ZERO)
    for average, expected in (("logits", geometric), ("probs", arithmetic)):
        target = shortcut_target(teacher, x_t, t, h, path, Recipe(teacher="rk2", teacher_average=average),
                                 generator=torch.Generator().manual_seed(12))
        torch.testing.assert_close(target, expected)
    # the geometric mean is the sharper of the two where the half steps disagree (here: on average)
    entropy = lambda log_p: -(log_p.log_softmax(-1).exp() * log_p.log_softmax(-1)).sum(-1).mean()
    assert entropy(geometric) < entropy(arithmetic)


def test_targets_stay_finite_where_half_steps_decode():
    """Positions decoded inside a half step are point masses; their average with l1 stays finite."""
    teacher = tiny_model(seed=4)
    path = ProbPath(V, "mask")
    x_t = torch.full((8, 32), path.mask_id)
    t, h = torch.zeros(8), torch.ones(8)  # one step over the whole path: the half steps decode a lot
    target = shortcut_target(teacher, x_t, t, h, path, Recipe(), generator=torch.Generator().manual_seed(5))
    assert torch.isfinite(target).all() and (target >= LOG_ZERO).all()


def test_ema_moves_the_right_fraction():
    torch.manual_seed(6)
    student = tiny_model(seed=7)
    ema = copy.deepcopy(student)
    for p in student.parameters():
        p.data.add_(1.0)
    before = [p.clone() for p in ema.parameters()]
    ema_update(ema, student, decay=0.9)
    for old, new, target in zip(before, ema.parameters(), student.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * target)


def test_a_short_distillation_lowers_the_distillation_loss():
    torch.manual_seed(8)
    dfm = tiny_model(seed=8)
    student = student_from_dfm(dfm)
    teacher = copy.deepcopy(student).requires_grad_(False)
    data = torch.randint(0, V, (16, 32), generator=torch.Generator().manual_seed(9))
    path, recipe = ProbPath(V, "mask"), Recipe(max_step_exponent=3)
    def loss():
        with torch.no_grad():
            return sum(distill_loss(student, teacher, data, path, recipe,
                                    generator=torch.Generator().manual_seed(s)).item() for s in range(8)) / 8
    start = loss()
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    for i in range(60):
        distill_loss(student, teacher, data, path, recipe, generator=torch.Generator().manual_seed(100 + i)).backward()
        optimizer.step()
        optimizer.zero_grad()
        ema_update(teacher, student, 0.9)
    assert loss() < 0.8 * start


def test_a_recipe_is_one_value_named_as_the_config_keys():
    config = {"teacher": "rk2", "teacher_average": "probs", "step_size_weighting": "uniform", "max_step_exponent": 6}
    assert Recipe.of(config) == Recipe(**config)
    with pytest.raises(ValueError, match="unknown teacher 'rk3': use one of rk4, rk2"):
        Recipe(teacher="rk3")


def test_every_rk_point_is_a_step_from_x_t_and_the_teacher_sees_the_half_step(monkeypatch):
    """RK4's points: x_t itself, then steps of h/2, h/2 and h from x_t, each with the posterior of the
    point before, evaluated at t, t + h/2, t + h/2, t + h; the teacher is always given h/2."""
    from nanodfm import distill
    states, steps, calls = {}, [], []
    real_step = engine.step
    def recording_step(x, log_p, t, size, *args, **kwargs):
        steps.append((next((name for name, s in states.items() if torch.equal(s, x)), "other"), size[0].item()))
        out = real_step(x, log_p, t, size, *args, **kwargs)
        states[f"x_{'abc'[len(steps) - 1]}"] = out
        return out
    monkeypatch.setattr(distill.engine, "step", recording_step)
    model, path = tiny_model(seed=22), ProbPath(V, "uniform")
    def teacher(x, time, step_size):
        calls.append((time[0].item(), step_size[0].item()))
        return model(x, time, step_size)
    x_t = torch.randint(0, V, (4, 32), generator=torch.Generator().manual_seed(23))
    states["x_t"] = x_t
    shortcut_target(teacher, x_t, torch.full((4,), 0.25), torch.full((4,), 0.5), path, Recipe(),
                    generator=torch.Generator().manual_seed(24))
    assert steps == [("x_t", 0.25), ("x_t", 0.25), ("x_t", 0.5)]
    assert calls == [(0.25, 0.25), (0.5, 0.25), (0.5, 0.25), (0.75, 0.25)]


def test_a_new_teacher_is_one_row_and_its_cost_follows(monkeypatch):
    """A fork adds a teacher as one row of TEACHERS (here the midpoint rule: the posterior a half step
    on, alone); shortcut_target runs it and Recipe.teacher_forwards counts its points."""
    from nanodfm import distill
    monkeypatch.setitem(distill.TEACHERS, "midpoint", ((0, 1 / 2), (0, 1)))
    teacher, path = tiny_model(seed=30), ProbPath(V, "mask")
    x_t = path.x_t(torch.randint(0, V, (4, 32), generator=torch.Generator().manual_seed(31)), torch.full((4,), 0.3))
    t, h = torch.full((4,), 0.25), torch.full((4,), 0.5)
    target = shortcut_target(teacher, x_t, t, h, path, Recipe(teacher="midpoint"), torch.Generator().manual_seed(32))
    x_a = engine.step(x_t, path.posterior_log_probs(teacher(x_t, t, h / 2), x_t), t, h / 2, path, "cumulative",
                      generator=torch.Generator().manual_seed(32))
    torch.testing.assert_close(target, path.posterior_log_probs(teacher(x_a, t + h / 2, h / 2), x_a))
    uniform_k2 = dict(step_size_weighting="uniform", max_step_exponent=2)  # 2/3 of the samples take the teacher
    assert Recipe(teacher="midpoint", **uniform_k2).teacher_forwards() == pytest.approx(2 * 2 / 3)
    assert Recipe(teacher="rk4", **uniform_k2).teacher_forwards() == pytest.approx(4 * 2 / 3)


def test_a_config_of_a_removed_lever_is_refused_in_one_line():
    from nanodfm.config import UsageError
    config = {"teacher": "rk4", "teacher_average": "logits", "step_size_weighting": "uniform", "max_step_exponent": 6}
    assert Recipe.of({**config, "rk_points": "classical", "own_share": 0.0}) == Recipe("rk4", "logits", "uniform", 6)
    for key, value in (("rk_points", "chained"), ("own_share", 0.5), ("anchor_share", 0.5)):
        with pytest.raises(UsageError, match=f"{key}=.*commit e631de9"):
            Recipe.of({**config, key: value})
