"""results/first_step_sample.py: students sampled with their first step changed."""

import runpy
from pathlib import Path

import pytest
import torch

from conftest import run_script
from nanodfm.config import UsageError
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import ProbPath
from nanodfm.sampler import sample
from test_sampler import V

SCRIPT = runpy.run_path(str(Path(__file__).resolve().parents[1] / "results" / "first_step_sample.py"))
SIZES = [1 / 4, 1 / 4, 1 / 4, 1 / 8, 1 / 8]


def tiny_student():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=V, block_size=32, n_layer=2, n_head=2, n_embd=32, n_cond=16,
                                    step_conditioned=True))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def test_variants_parse_and_a_bad_one_is_a_usage_error():
    assert SCRIPT["parse_variant"]("own") == (None, 1.0)
    assert SCRIPT["parse_variant"]("T=3") == (None, 3.0)
    assert SCRIPT["parse_variant"]("h=1/32:T=1.5") == (1 / 32, 1.5)
    for bad in ("T=0", "h=2", "h=1/0", "hot"):
        with pytest.raises(UsageError):
            SCRIPT["parse_variant"](bad)


@pytest.mark.parametrize("first_temperature", [1.0, 3.0])
def test_an_unchanged_conditioning_is_the_samplers_own_law_draw_for_draw(first_temperature):
    model, path = tiny_student(), ProbPath(V, "uniform")
    mine = SCRIPT["first_step_samples"](model, path, 6, 16, SIZES, None, first_temperature, seed=5)
    theirs, _ = sample(model, path, 6, 16, len(SIZES), schedule=SIZES, generator=torch.Generator().manual_seed(5),
                       first_temperature=None if first_temperature == 1.0 else first_temperature)
    assert torch.equal(mine, theirs)


def test_only_the_first_call_sees_the_smaller_step_size():
    model, path, seen = tiny_student(), ProbPath(V, "uniform"), []
    forward = model.forward
    model.forward = lambda x, t, h=None: seen.append(h) or forward(x, t, h)
    SCRIPT["first_step_samples"](model, path, 3, 16, SIZES, 1 / 32)
    assert seen == [1 / 32] + SIZES[1:]


def test_a_missing_student_is_one_line(tmp_path):
    result = run_script("results/first_step_sample.py", "--students=no/such/ckpt.pt", "--references=r.json",
                        "--judge=j.pt", f"--out_jsonl={tmp_path / 'o.jsonl'}")
    assert result.returncode != 0 and result.stderr.strip().splitlines() == [
        "error: no/such/ckpt.pt not found: train the models (config/reproduce_frontier.sh) or fix the path"]


def test_the_summary_is_the_mean_over_seeds_and_says_when_a_row_has_no_matched_ratio():
    rows = [{"steps": 8, "variant": "T=3", "seed": s, "raw": raw, "entropy_ratio": e, "matched": m}
            for s, raw, e, m in ((1, 1.0, 0.98, 1.1), (2, 1.2, 0.99, None))]
    lines = SCRIPT["summary"](rows).splitlines()
    assert lines[2] == "| 8 | T=3 | 1, 2 | 1.100 | 0.985 | outside the curve |"
    lines = SCRIPT["summary"](rows[:1]).splitlines()
    assert lines[2] == "| 8 | T=3 | 1 | 1.000 | 0.980 | 1.100 |"
