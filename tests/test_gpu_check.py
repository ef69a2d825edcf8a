"""The GPU check's every stage runs on a CPU at tiny sizes (DRY_RUN=1) and lands in one JSON."""

import json
import os
import subprocess

from conftest import ROOT


def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DRY_RUN": "1", "OUT": str(tmp_path)}
    result = subprocess.run(["bash", "config/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["env"]["device"] == "cpu" and "torch" in report["env"]
    for run in ("char", "char-student", "owt"):
        assert report["train"][run]["tokens_per_s"] > 0, run
    assert report["train"]["ddp"]["steps"] == 8  # the torchrun run resumed from step 4 and went on
    eager, compiled = report["study"]["False"], report["study"]["True"]
    assert {(r["name"], r["nfe"], r["batch_size"]) for r in eager} == {(r["name"], r["nfe"], r["batch_size"]) for r in compiled}
    assert all(r["compiled_calls"] > 0 for r in compiled) and all(r["compiled_calls"] == 0 for r in eager)
    assert {r["source"] for r in report["syncs"]} == {"mask", "uniform"}
    assert "ROMEO:" in report["sample"]
