"""Evaluation: the metrics mean what they say, and every eval.py mode runs end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nanodfm.data import load_meta
from nanodfm.evaluate import (ar_samples, flow_samples, generative_perplexity, matched_entropy_ratio, mean_interval,
                              ratio_interval, unigram_entropy)
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import ProbPath
from nanodfm.sampler import COARSE_TO_FINE
from test_autoregressive import save_checkpoint, tiny_model

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_VAL = REPO_ROOT / "data" / "shakespeare_char" / "val.bin"


def run_eval(*args):
    return subprocess.run([sys.executable, "eval.py", "--device=cpu", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


def test_entropy_of_constant_and_all_distinct_sequences():
    constant = torch.full((2, 50), 7)
    distinct = torch.stack([torch.randperm(40), torch.randperm(100)[:40]])
    assert unigram_entropy(constant).tolist() == [0.0, 0.0]
    torch.testing.assert_close(unigram_entropy(distinct), torch.full((2,), math.log2(40), dtype=torch.float64))
    half = torch.tensor([[0, 1] * 10])  # two tokens, equally often: one bit
    torch.testing.assert_close(unigram_entropy(half), torch.ones(1, dtype=torch.float64))



def test_intervals_cover_the_true_mean_95_percent_of_the_time():
    """On a known, skewed distribution (Exp(1): mean 1, sd 1) the interval has half-width
    1.96 / sqrt(N) and covers the mean in 95% of repeated experiments; the ratio of two means too."""
    g = torch.Generator().manual_seed(0)
    N, trials = 400, 1000
    covered, covered_ratio, widths = 0, 0, []
    for _ in range(trials):
        a = torch.empty(N, dtype=torch.float64).exponential_(1.0, generator=g)  # mean 1
        b = 2 + torch.randn(N, dtype=torch.float64, generator=g)  # mean 2
        mean, ci = mean_interval(a)
        covered += abs(mean - 1.0) <= ci
        widths.append(ci)
        ratio, ratio_ci = ratio_interval(mean, ci, *mean_interval(b))
        covered_ratio += abs(ratio - 0.5) <= ratio_ci
    assert abs(sum(widths) / trials - 1.96 / math.sqrt(N)) < 0.1 * 1.96 / math.sqrt(N)
    # binomial sd of the coverage over 1000 trials is 0.007: 0.93-0.97 is about 3 sd
    assert 0.93 <= covered / trials <= 0.97
    assert 0.93 <= covered_ratio / trials <= 0.97
    assert mean_interval(torch.tensor([3.0])) == (3.0, float("inf"))

def test_matched_entropy_interpolates_the_reference_curve_and_never_extrapolates():
    """On a curve whose perplexity is linear in entropy the interpolated reference is that line
    everywhere inside it: its points exactly, midpoints the mean of the neighbours; the interval is
    the bracketing points' interpolated; outside the range, None and a note, whatever the order given."""
    line = lambda e: 10.0 + 20.0 * (e - 4.0)  # perplexity rising with entropy, as cooling lowers both
    entropies, temperatures = [4.0, 4.1, 4.3, 4.4], [0.4, 0.6, 0.8, 1.0]
    cis = [0.2, 0.4, 0.3, 0.5]
    curve = [{"entropy": e, "gen_ppl": line(e), "gen_ppl_ci95": c, "temperature": t}
             for e, c, t in zip(entropies, cis, temperatures)]
    shuffled = [curve[2], curve[0], curve[3], curve[1]]
    for i, e in enumerate(entropies):  # at the points: the point itself
        got, note = matched_entropy_ratio(shuffled, e, 15.0, 0.3)
        assert note is None
        assert got["reference_gen_ppl"] == pytest.approx(line(e)) and got["reference_gen_ppl_ci95"] == pytest.approx(cis[i])
    for i in range(len(entropies) - 1):  # midpoints: the mean of the neighbours, as the line says
        mid = (entropies[i] + entropies[i + 1]) / 2
        got, note = matched_entropy_ratio(shuffled, mid, 15.0, 0.3)
        assert note is None and got["bracket"] == [temperatures[i], temperatures[i + 1]]
        assert got["reference_gen_ppl"] == pytest.approx((line(entropies[i]) + line(entropies[i + 1])) / 2)
        assert got["reference_gen_ppl"] == pytest.approx(line(mid))
        assert got["reference_gen_ppl_ci95"] == pytest.approx((cis[i] + cis[i + 1]) / 2)
        assert got["slope"] == pytest.approx(20.0)
        # the ratio and its interval: relative half-widths in quadrature
        ref, ref_ci = got["reference_gen_ppl"], got["reference_gen_ppl_ci95"]
        assert got["gen_ppl_ratio"] == pytest.approx(15.0 / ref)
        assert got["gen_ppl_ratio_ci95"] / got["gen_ppl_ratio"] == pytest.approx(math.hypot(0.3 / 15.0, ref_ci / ref))
        assert got["gen_ppl_ratio_ci95_with_entropy"] == pytest.approx(got["gen_ppl_ratio_ci95"])  # entropy_ci = 0
    quarter = entropies[1] + 0.25 * (entropies[2] - entropies[1])  # a quarter of the way: weights 3/4 and 1/4
    got, _ = matched_entropy_ratio(curve, quarter, 15.0, 0.3)
    assert got["reference_gen_ppl"] == pytest.approx(line(quarter))
    assert got["reference_gen_ppl_ci95"] == pytest.approx(0.75 * cis[1] + 0.25 * cis[2])
    wider, _ = matched_entropy_ratio(curve, quarter, 15.0, 0.3, entropy_ci=0.02)  # the row's entropy uncertain too
    assert wider["gen_ppl_ratio"] == got["gen_ppl_ratio"]
    assert wider["gen_ppl_ratio_ci95_with_entropy"] > got["gen_ppl_ratio_ci95"] == wider["gen_ppl_ratio_ci95"]
    for outside, word in ((3.99, "below"), (4.41, "above")):
        got, note = matched_entropy_ratio(shuffled, outside, 15.0, 0.3)
        assert got is None and word in note and "--reference_temperatures" in note
    assert "lower" in matched_entropy_ratio(curve, 3.5, 15.0, 0.3)[1]


def test_a_uniform_judge_has_perplexity_vocab_size():
    V = 13
    uniform_judge = lambda ids: torch.zeros(*ids.shape, V)  # (B, T, V)
    ppl = generative_perplexity(uniform_judge, torch.randint(V, (5, 30)), batch_size=2)
    torch.testing.assert_close(ppl, torch.full((5,), float(V)))


def test_a_trained_judge_prefers_its_text_to_the_same_tokens_shuffled():
    # a periodic corpus: a trained causal judge predicts every token after the first few, so its
    # perplexity on real windows is near 1, while shuffling the same tokens makes them unpredictable
    torch.manual_seed(0)
    V, period, L = 16, 12, 32
    corpus = torch.randperm(V)[:period].repeat(200)
    judge = Transformer(ModelConfig(vocab_size=V, block_size=L, n_layer=1, n_head=2, n_embd=32, causal=True))
    optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-2)
    for _ in range(150):
        starts = torch.randint(len(corpus) - L, (16,))
        x = torch.stack([corpus[s:s + L] for s in starts])
        loss = F.cross_entropy(judge(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    judge.eval()
    text = torch.stack([corpus[s:s + L] for s in range(0, 240, 20)])  # (12, L)
    shuffled = torch.stack([row[torch.randperm(L)] for row in text])
    ppl_text = generative_perplexity(judge, text).mean().item()
    ppl_shuffled = generative_perplexity(judge, shuffled).mean().item()
    assert ppl_text < 1.5 < 4 < ppl_shuffled, (ppl_text, ppl_shuffled)


def test_sample_helpers_return_full_length_batches():
    ar, dfm = tiny_model("ar", dtype=torch.float32), tiny_model("dfm", dtype=torch.float32)
    x = ar_samples(ar, 5, 10, start_id=0, batch_size=2, seed=1)
    assert x.shape == (5, 10) and (x[:, 0] == 0).all()
    path = ProbPath(dfm.config.vocab_size, "mask")
    y = flow_samples(dfm, path, 5, 10, steps=3, sampler="cumulative", batch_size=2, seed=1)
    assert y.shape == (5, 10) and (y < dfm.config.vocab_size).all()  # no MASK left
    assert torch.equal(y, flow_samples(dfm, path, 5, 10, 3, "cumulative", batch_size=2, seed=1))  # seeded


def test_speed_mode_points_to_the_benchmark():
    result = run_eval("--mode=speed")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "bench.py --mode=study" in result.stderr


@pytest.mark.skipif(not SHAKESPEARE_VAL.is_file(), reason="run data/shakespeare_char/prepare.py first")
def test_quality_and_elbo_modes_on_shakespeare_char(tmp_path):
    vocab = {"vocab_size": 65, "block_size": 16}
    meta = load_meta(SHAKESPEARE_VAL.parent)  # the checkpoints' tokens are the held-out data's
    paths = {kind: save_checkpoint(tmp_path / f"{kind}.pt", tiny_model(kind, dtype=torch.float32, **vocab), kind,
                                   meta=meta) for kind in ("ar", "dfm", "student")}
    out = tmp_path / "quality.json"
    result = run_eval("--mode=quality", f"--dfm={paths['dfm']}", f"--student={paths['student']}",
                      f"--judge={paths['ar']}", "--steps_list=1,2", "--num_samples=3", f"--out_json={out}")
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows[:2]] == ["held-out text", "AR samples"]
    assert [(r["name"], r["steps"]) for r in rows[2:]] == [(n, s) for n in ("dfm euler", "dfm cumulative",
                                                                         "student rk4 cumulative") for s in (1, 2)]
    assert all(r["gen_ppl"] > 1 and 0 < r["entropy"] <= 4 for r in rows)  # 16 tokens: at most 4 bits
    assert all(0 < r["gen_ppl_ci95"] < r["gen_ppl"] and r["num_samples"] == 3 for r in rows)
    reference = next(r for r in rows if r["name"] == "dfm cumulative" and r["steps"] == 2)  # the most steps
    assert reference["gen_ppl_ratio"] == 1.0 and reference["gen_ppl_ratio_ci95"] == 0.0
    for r in rows:
        assert r["gen_ppl_ratio"] == pytest.approx(r["gen_ppl"] / reference["gen_ppl"])
    assert "| held-out text |" in result.stdout and "±" in result.stdout and "reference row" in result.stdout
    # the n-gram divergence from the training text: in [0, 1], and held-out text is nearer than untrained models
    assert all(0 <= r["ngram_js"] <= 1 and r["ngram_js_ci95"] >= 0 for r in rows)
    assert rows[0]["ngram_js"] < min(r["ngram_js"] for r in rows if r["name"].startswith("dfm"))
    # --previous reuses the rows of the same models and settings, and samples only the new ones
    again = tmp_path / "again.json"
    (tmp_path / "b").mkdir()
    other = save_checkpoint(tmp_path / "b" / "ckpt.pt", tiny_model("student", dtype=torch.float32, **vocab), "student",
                            meta=meta)
    result = run_eval("--mode=quality", f"--dfm={paths['dfm']}", f"--student={paths['student']},{other}",
                      f"--judge={paths['ar']}", "--steps_list=1,2", "--num_samples=3", f"--previous={out}",
                      "--student_steps_list=2,4", f"--out_json={again}")
    assert result.returncode == 0, result.stderr
    new_rows = json.loads(again.read_text())["rows"]
    assert new_rows[:6] == rows[:6]  # held-out, AR, DFM: the very same rows
    # two students with the same teacher: their rows are named by their folders
    assert [(r["name"], r["steps"]) for r in new_rows[6:]] == [
        (f"student {folder} cumulative", S) for folder in (tmp_path.name, "b") for S in (2, 4)]
    old_student = next(r for r in rows if r["name"].startswith("student") and r["steps"] == 2)
    assert {**new_rows[6], "name": old_student["name"]} == old_student  # reused under its new name
    result = run_eval("--mode=quality", f"--dfm={paths['dfm']}", f"--judge={paths['ar']}", "--steps_list=1,2",
                      "--num_samples=4", f"--previous={out}")
    assert result.returncode != 0 and "made with other num_samples" in result.stderr
    result = run_eval("--mode=quality", f"--dfm={paths['dfm']}", f"--judge={paths['ar']}", "--steps_list=1,2",
                      "--num_samples=3", "--reference_steps=4")
    assert result.returncode != 0 and "--reference_steps=4 is not in --steps_list" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_eval("--mode=elbo", f"--dfm={paths['dfm']}", "--num_batches=2", "--batch_size=4")
    assert result.returncode == 0, result.stderr
    assert "perplexity <=" in result.stdout
    result = run_eval("--mode=quality", f"--dfm={paths['dfm']}", f"--judge={paths['dfm']}")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


@pytest.mark.skipif(not SHAKESPEARE_VAL.is_file(), reason="run data/shakespeare_char/prepare.py first")
def test_quality_samples_the_reference_at_each_temperature_and_matches_entropy(tmp_path):
    vocab = {"vocab_size": 65, "block_size": 16}
    meta = load_meta(SHAKESPEARE_VAL.parent)  # the checkpoints' tokens are the held-out data's
    paths = {kind: save_checkpoint(tmp_path / f"{kind}.pt", tiny_model(kind, dtype=torch.float32, **vocab), kind,
                                   meta=meta) for kind in ("ar", "dfm", "student")}
    common = [f"--dfm={paths['dfm']}", f"--judge={paths['ar']}", "--steps_list=1,2", "--dfm_methods=cumulative",
              "--num_samples=3"]
    out = tmp_path / "frontier.json"
    result = run_eval("--mode=quality", *common, f"--student={paths['student']}", "--student_steps_list=1",
                      "--reference_temperatures=0.5,1.0,3.0", f"--out_json={out}")
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    curve = [r for r in rows if r["name"] == "dfm cumulative" and r["steps"] == 2]
    assert sorted(r["temperature"] for r in curve) == [0.5, 1.0, 3.0]  # 1.0, the run's own, once
    assert [r["temperature"] for r in rows if r["name"] == "dfm cumulative" and r["steps"] == 1] == [1.0]
    assert all("temperature" in r and "seed" in r for r in rows)
    assert rows[0]["name"] == "held-out text" and rows[0]["seed"] is None and rows[0]["temperature"] is None
    assert len({r["gen_ppl"] for r in curve}) == 3  # three temperatures, three sets of samples
    reference = next(r for r in curve if r["temperature"] == 1.0)
    assert reference["gen_ppl_ratio"] == 1.0
    off_curve = [r for r in rows if r["method"] is not None and not any(r is c for c in curve)]
    assert off_curve and all("matched" in r for r in off_curve)
    for r in off_curve:
        if r["matched"] is None:  # outside the curve: a note, no number
            assert "--reference_temperatures" in r["matched_note"]
        else:
            low, high = sorted(c["entropy"] for c in curve)[0], sorted(c["entropy"] for c in curve)[-1]
            assert low <= r["entropy"] <= high
            assert r["matched"]["gen_ppl_ratio"] == pytest.approx(r["gen_ppl"] / r["matched"]["reference_gen_ppl"])
    assert "perplexity / reference at its entropy" in result.stdout
    # a run at one temperature is reused, row by row, by a run of the curve
    single = tmp_path / "t05.json"
    result = run_eval("--mode=quality", *common, "--temperature=0.5", f"--out_json={single}")
    assert result.returncode == 0, result.stderr
    again = tmp_path / "again.json"
    result = run_eval("--mode=quality", *common, f"--student={paths['student']}", "--student_steps_list=1",
                      "--reference_temperatures=0.5,1.0,3.0", f"--previous={single},{out}", f"--out_json={again}")
    assert result.returncode == 0, result.stderr
    cold = next(r for r in json.loads(single.read_text())["rows"] if r["name"] == "dfm cumulative" and r["steps"] == 2)
    new_cold = next(r for r in json.loads(again.read_text())["rows"] if r["name"] == "dfm cumulative"
                    and r["steps"] == 2 and r["temperature"] == 0.5)
    assert new_cold["gen_ppl"] == cold["gen_ppl"] and new_cold["entropy"] == cold["entropy"]
    result = run_eval("--mode=quality", *common, "--reference_temperatures=0.5,-1")
    assert result.returncode != 0 and "positive numbers" in result.stderr and "Traceback" not in result.stderr


def tiny_trio(tmp_path, steps_list="2"):
    """eval.py's flags for an AR judge, a DFM model and a student, tiny and untrained, with Shakespeare's vocabulary."""
    meta = load_meta(SHAKESPEARE_VAL.parent)
    paths = {kind: save_checkpoint(tmp_path / f"{kind}.pt", tiny_model(kind, dtype=torch.float32, vocab_size=65,
                                                                       block_size=16), kind, meta=meta)
             for kind in ("ar", "dfm", "student")}
    return [f"--dfm={paths['dfm']}", f"--student={paths['student']}", f"--judge={paths['ar']}",
            f"--steps_list={steps_list}", "--dfm_methods=cumulative", "--num_samples=6", "--student_steps_list=2"]


@pytest.mark.skipif(not SHAKESPEARE_VAL.is_file(), reason="run data/shakespeare_char/prepare.py first")
def test_quality_samples_a_student_at_each_schedule_as_rows_of_their_own(tmp_path):
    common = tiny_trio(tmp_path)
    out = tmp_path / "schedules.json"
    result = run_eval("--mode=quality", *common, "--student_schedules=even=1/2,1/2 front=3/4,1/4;front=1/2,1/4,1/4",
                      f"--out_json={out}")
    assert result.returncode == 0, result.stderr
    students = [r for r in json.loads(out.read_text())["rows"] if r["name"].startswith("student")]
    assert [(r["name"], r["steps"], r.get("schedule")) for r in students] == [
        ("student rk4 cumulative", 2, None),
        ("student rk4 cumulative, schedule even", 2, {"name": "even", "sizes": [0.5, 0.5]}),
        ("student rk4 cumulative, schedule front", 2, {"name": "front", "sizes": [0.75, 0.25]}),
        ("student rk4 cumulative, schedule front", 3, {"name": "front", "sizes": [0.5, 0.25, 0.25]})]
    uniform, even, front = students[:3]
    assert even["gen_ppl"] == uniform["gen_ppl"]  # 1/2, 1/2 is the default: the same draws
    assert front["gen_ppl"] != uniform["gen_ppl"]  # other step sizes, other samples: a row of its own
    assert "schedule front" in result.stdout
    # --previous tells the rows apart by their step sizes
    again = tmp_path / "again.json"
    result = run_eval("--mode=quality", *common, "--student_schedules=front=3/4,1/4", f"--previous={out}",
                      f"--out_json={again}")
    assert result.returncode == 0, result.stderr
    reused = [r for r in json.loads(again.read_text())["rows"] if r["name"].startswith("student")]
    assert reused == students[:1] + students[2:3]
    named = tmp_path / "named.json"
    result = run_eval("--mode=quality", *common, "--student_schedules=coarse-to-fine", f"--out_json={named}")
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(named.read_text())["rows"] if r.get("schedule")]
    assert [(r["steps"], tuple(r["schedule"]["sizes"])) for r in rows] == list(COARSE_TO_FINE.items())
    hot = tmp_path / "hot.json"
    result = run_eval("--mode=quality", *common, "--student_schedules=front=3/4,1/4", "--student_first_temperature=3",
                      f"--previous={out}", f"--out_json={hot}")
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(hot.read_text())["rows"] if r["name"].startswith("student")]
    assert [(r["name"], r.get("first_temperature")) for r in rows] == [
        ("student rk4 cumulative", None), ("student rk4 cumulative, schedule front", None),
        ("student rk4 cumulative, first step at 3", 3.0), ("student rk4 cumulative, schedule front, first step at 3", 3.0)]
    assert rows[:2] == reused  # the rows without a first temperature come from --previous
    for bad, message in (("front", "NAME=SIZES"), ("front=1/2,1/4", "summing to 1"), ("front=a,b", "step sizes")):
        result = run_eval("--mode=quality", *common, f"--student_schedules={bad}")
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not SHAKESPEARE_VAL.is_file(), reason="run data/shakespeare_char/prepare.py first")
def test_quality_draws_rows_under_each_jump_rule_but_the_reference_only_independent(tmp_path):
    common = tiny_trio(tmp_path, steps_list="2,4")
    out = tmp_path / "jumps.json"
    result = run_eval("--mode=quality", *common, "--jumps=independent,spread", f"--out_json={out}")
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(out.read_text())["rows"] if r["method"]]
    assert [(r["name"], r["steps"], r.get("jumps")) for r in rows] == [
        ("dfm cumulative", 2, None), ("dfm cumulative, spread jumps", 2, "spread"), ("dfm cumulative", 4, None),
        ("student rk4 cumulative", 2, None), ("student rk4 cumulative, spread jumps", 2, "spread")]
    assert rows[0]["gen_ppl"] != rows[1]["gen_ppl"] and rows[3]["gen_ppl"] != rows[4]["gen_ppl"]  # other draws
    # --jumps=spread alone: the reference (4 steps) stays independent, and --previous tells the rows apart
    again = tmp_path / "again.json"
    result = run_eval("--mode=quality", *common, "--jumps=spread", f"--previous={out}", f"--out_json={again}")
    assert result.returncode == 0, result.stderr
    assert [r for r in json.loads(again.read_text())["rows"] if r["method"]] == [rows[1], rows[2], rows[4]]
    result = run_eval("--mode=quality", *common, "--jumps=dilated")
    assert result.returncode != 0 and "independent,spread" in result.stderr and "Traceback" not in result.stderr


def test_out_png_without_matplotlib_is_refused_before_any_sampling(tmp_path, monkeypatch):
    import eval as eval_script
    from nanodfm.config import UsageError
    from nanodfm import evaluate
    monkeypatch.setattr(evaluate, "pyplot", lambda: None)
    sampled = []
    monkeypatch.setattr(evaluate, "load_judge", lambda *a: sampled.append("judge"))
    with pytest.raises(UsageError, match="--out_png needs matplotlib: pip install matplotlib"):
        eval_script.main(["--mode=quality", "--dfm=d.pt", "--judge=j.pt", f"--out_png={tmp_path / 'p.png'}"])
    assert sampled == []  # refused before the judge was even loaded
