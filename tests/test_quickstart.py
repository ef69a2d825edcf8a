"""The README's one command runs the whole story: prepare, train, distil, sample both side by side."""

import os
import subprocess

import pytest

from conftest import ROOT, SHAKESPEARE


@pytest.mark.skipif(not os.path.isfile(SHAKESPEARE), reason="needs the offline copy of Tiny Shakespeare")
def test_quickstart_runs_every_stage_offline(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INPUT": SHAKESPEARE, "OUT": str(tmp_path),
           "TRAIN_ARGS": "--max_iters=2 --eval_interval=1 --eval_iters=1"}
    result = subprocess.run(["bash", "config/quickstart_cpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "DFM model, 8 steps" in result.stdout and "FS-DFM student, 8 steps" in result.stdout
    for name in ("dfm/best.pt", "student/ckpt.pt", "dfm-8.txt", "student-8.txt"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "student-8.txt").read_text().strip()  # a sample was written
