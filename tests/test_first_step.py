"""results/first_step.py: the entropies of what a model predicts at t = 0."""

import math
import runpy
from pathlib import Path

import numpy as np
import torch

from conftest import run_script
from test_sampler import V, tiny_model

FIRST_STEP = runpy.run_path(str(Path(__file__).resolve().parents[1] / "results" / "first_step.py"))


def test_a_model_that_predicts_nothing_has_the_entropy_of_the_vocabulary():
    model = tiny_model()
    torch.nn.init.zeros_(model.head.weight)  # every logit 0: the uniform prediction everywhere
    x = torch.randint(0, V, (4, 16), generator=torch.Generator().manual_seed(0))
    marginal, position = FIRST_STEP["predictions"](model, x)
    assert math.isclose(marginal, math.log2(V), rel_tol=1e-9) and math.isclose(position, math.log2(V), rel_tol=1e-9)


def test_the_marginal_is_at_least_as_broad_as_a_position_and_heat_broadens_both():
    model = tiny_model()
    x = torch.randint(0, V, (4, 16), generator=torch.Generator().manual_seed(0))
    cold, hot = FIRST_STEP["predictions"](model, x), FIRST_STEP["predictions"](model, x, temperature=3.0)
    assert cold[0] >= cold[1] - 1e-12 and hot[0] >= hot[1] - 1e-12  # entropy is concave
    assert hot[0] > cold[0] and hot[1] > cold[1]


def test_the_data_entropy_counts_every_token(tmp_path):
    path = tmp_path / "train.bin"
    np.array([0, 1, 0, 1, 2, 3, 2, 3], dtype=np.uint16).tofile(path)
    assert math.isclose(FIRST_STEP["data_entropy"](str(path), 4), 2.0)


def test_a_missing_data_file_is_one_line():
    result = run_script("results/first_step.py", "--pairs=a.pt:b.pt", "--data=no/such/train.bin")
    assert result.returncode != 0 and result.stderr.strip().splitlines() == [
        "error: no/such/train.bin not found: prepare the dataset first (data/<name>/prepare.py)"]
