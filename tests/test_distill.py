"""Few-step distillation (docs/method.md section 5)."""

import copy

import pytest
import torch

from nanodfm import engine
from nanodfm.distill import Recipe, distill_loss, ema_update, sample_step_sizes, shortcut_target, student_from_dfm
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
    with pytest.raises(ValueError, match="teacher"):
        Recipe(teacher="rk3")


def test_calibrated_target_has_the_entropy_of_the_probability_average():
    g = torch.Generator().manual_seed(20)
    terms = [torch.randn(3, 5, V, generator=g).mul(3).log_softmax(-1) for _ in range(4)]
    weights = (1, 2, 2, 1)
    mixture = (sum(w * l.exp() for w, l in zip(weights, terms)) / 6).log()
    geometric = (sum(w * l for w, l in zip(weights, terms)) / 6).log_softmax(-1)
    entropy = lambda log_p: -(log_p.exp() * log_p).sum(-1)
    assert entropy(geometric).mean() < entropy(mixture).mean()  # the geometric mean is the sharper, on average
    from nanodfm.distill import calibrate
    calibrated = calibrate(geometric, entropy(mixture))
    torch.testing.assert_close(entropy(calibrated), entropy(mixture), atol=1e-5, rtol=0)
    # the shape is the geometric mean's: the order of the tokens is kept at every position
    assert torch.equal(calibrated.argsort(-1), geometric.argsort(-1))


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("recipe", [Recipe(teacher_average="calibrated", max_step_exponent=4),
                                    Recipe(rk_points="classical", max_step_exponent=4),
                                    Recipe(anchor_share=0.5, max_step_exponent=4),
                                    Recipe(own_share=1.0, max_step_exponent=4)],
                         ids=["calibrated", "classical", "anchor", "own"])
def test_a_perfect_teacher_still_gives_zero_loss_with_each_lever(source, recipe):
    g = torch.Generator().manual_seed(21)
    x1 = torch.randint(0, V, (1, 40), generator=g)
    perfect, data, path = PerfectDenoiser(x1), x1.expand(64, -1), ProbPath(V, source)
    t, h = sample_step_sizes(64, recipe, g)
    target = shortcut_target(perfect, path.x_t(data, t, generator=g), t, h, path, recipe, generator=g)
    assert torch.isfinite(target).all() and torch.equal(target.argmax(-1), data)
    assert distill_loss(perfect, perfect, data, path, recipe, generator=g).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("rk_points, starts", [("classical", ["x_t", "x_t", "x_t"]), ("chained", ["x_t", "x_a", "x_b"])])
def test_classical_rk_points_all_start_from_x_t(rk_points, starts, monkeypatch):
    """Each evaluation point's state is a step from x_t (classical) or from the state before (chained)."""
    from nanodfm import distill
    states, taken = {}, []
    real_step = engine.step
    def recording_step(x, *args, **kwargs):
        taken.append(next((name for name, s in states.items() if torch.equal(s, x)), "other"))
        out = real_step(x, *args, **kwargs)
        states[f"x_{'abc'[len(taken) - 1]}"] = out
        return out
    monkeypatch.setattr(distill.engine, "step", recording_step)
    teacher, path = tiny_model(seed=22), ProbPath(V, "uniform")
    x_t = torch.randint(0, V, (4, 32), generator=torch.Generator().manual_seed(23))
    states["x_t"] = x_t
    shortcut_target(teacher, x_t, torch.full((4,), 0.25), torch.full((4,), 0.5), path, Recipe(rk_points=rk_points),
                    generator=torch.Generator().manual_seed(24))
    assert taken == starts


def test_the_anchor_share_sets_the_share_of_samples_at_the_smallest_step():
    recipe = Recipe(step_size_weighting="uniform", max_step_exponent=6, anchor_share=0.5)
    _, h = sample_step_sizes(100_000, recipe, torch.Generator().manual_seed(25))
    assert abs((h == 2.0 ** -6).double().mean().item() - 0.5) < 0.01
    exponents = (-torch.log2(h[h > 2.0 ** -6])).round().long()
    counts = torch.bincount(exponents, minlength=6).double()
    assert (counts / counts.sum() - 1 / 6).abs().max() < 0.01  # the others keep their proportions


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_own_states_of_a_perfect_teacher_lie_on_the_probability_path(source):
    """The cumulative step with the true posterior keeps the path's marginals at every grid time: from
    the source, t / h steps of size h leave a position on the data token with probability kappa(t)
    (plus 1/V of the rest by chance under the uniform source)."""
    from nanodfm.distill import own_states
    g = torch.Generator().manual_seed(26)
    L, path, h = 20_000, ProbPath(V, source, kappa_power=2.0), 0.25
    x1 = torch.randint(0, V, (1, L), generator=g)
    t = torch.tensor([0.0, 0.25, 0.5, 0.75])
    x_t = own_states(PerfectDenoiser(x1), t, torch.full((4,), h), L, path, generator=g)
    assert x_t.shape == (4, L)
    hit = (x_t == x1).double().mean(-1)
    expected = path.kappa(t.double()) + (1 - path.kappa(t.double())) * (1 / V if source == "uniform" else 0)
    bound = 4 * (expected * (1 - expected) / L).sqrt() + 1e-12
    assert ((hit - expected).abs() <= bound).all(), (hit, expected)
    if source == "mask":  # every other position still holds the source token
        assert ((x_t == x1) | (x_t == path.mask_id)).all()


def test_own_share_takes_states_from_the_teacher_at_multiples_of_h(monkeypatch):
    """The own rows are exactly the samples at h >= 1/8 the share picks, at t rounded down to a
    multiple of h; with own_share 0 the teacher is never asked for a state."""
    from nanodfm import distill
    asked = []
    def recording(teacher, t, h, seq_len, path, generator=None):
        asked.append((t.clone(), h.clone()))
        return path.source_tokens((t.shape[0], seq_len), generator)
    monkeypatch.setattr(distill, "own_states", recording)
    x1 = torch.randint(0, V, (256, 8), generator=torch.Generator().manual_seed(27))
    model = student_from_dfm(tiny_model())
    path = ProbPath(V, "uniform")
    distill_loss(model, model, x1, path, Recipe(step_size_weighting="uniform", max_step_exponent=6),
                 torch.Generator().manual_seed(28))
    assert asked == []
    distill_loss(model, model, x1, path, Recipe(step_size_weighting="uniform", max_step_exponent=6, own_share=0.5),
                 torch.Generator().manual_seed(28))
    (t, h), = asked
    assert (h >= 1 / 8).all() and torch.equal(t / h, (t / h).round()) and (t + h <= 1).all()
    assert 0.35 < len(h) / (256 * 4 / 7) < 0.65  # about half of the 4 of 7 exponents that may take own states
