"""bench.py: the timing is of what it says, the study's JSON has its fields, and the
GPU command's code paths (bfloat16 autocast, compile) run on a CPU."""

import json

import pytest
import torch

import bench
from conftest import run_script
from nanodfm.path import ProbPath

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--repeats=1", "--device=cpu"]
SIZE = {"n_layer": 1, "n_head": 2, "n_embd": 16}
STUDY = ["--mode=study", "--lengths=8,12", "--batch_sizes=1,2", "--student_steps=2", "--dfm_steps=6",
         "--max_timed_steps=3", "--large=True", "--large_n_layer=1", "--large_n_head=2", "--large_n_embd=32",
         "--large_vocab_size=300", "--large_length=16"]


def test_gpu_command_smoke_run_on_cpu_writes_the_study(tmp_path):
    """The GPU command with --device=cpu: bfloat16 autocast, every row and field in the JSON."""
    out = tmp_path / "study.json"
    result = run_script("bench.py", *STUDY, *TINY, "--dtype=bfloat16", f"--out_json={out}")
    assert result.returncode == 0, result.stderr
    study = json.loads(out.read_text())
    assert study["mode"] == "study" and study["dtype"] == "bfloat16" and study["device"] == "cpu"
    assert {"device_name", "torch", "threads", "compile", "settings", "crossovers"} <= set(study)
    cells = {(r["size"], r["length"], r["name"], r["nfe"], r["batch_size"]) for r in study["rows"]}
    expected = {("small", L, name, nfe, B) for L in (8, 12) for B in (1, 2)
                for name, nfe in (("ar_cache", L - 1), ("student", 2), ("dfm", 6))}
    expected |= {("large", 16, name, nfe, 1) for name, nfe in (("ar_cache", 15), ("student", 2), ("dfm", 6))}
    assert cells == expected
    for r in study["rows"]:
        assert r["seconds"] > 0 and r["seconds_per_sequence"] == pytest.approx(r["seconds"] / r["batch_size"])
        assert r["tokens_per_s"] == pytest.approx(r["batch_size"] * r["length"] / r["seconds"])
        assert r["timed_steps"] == (3 if r["name"] == "dfm" else r["nfe"])  # the DFM rows are scaled from 3 steps
    assert {(c["size"], c["length"], c["name"]) for c in study["crossovers"]} == \
        {(s, L, n) for s, L in (("small", 8), ("small", 12), ("large", 16)) for n in ("student@2", "dfm@6")}


def test_compile_compiles_every_row_of_a_multi_length_study(tmp_path):
    """--compile=True: every timed row of a study of two lengths, two batch sizes and a second model
    size ran compiled code (dynamo's eager backend traces without compiling, so this runs fast on a
    CPU); with dynamo's default limit of 8 versions per function the later rows ran uncompiled."""
    out = tmp_path / "study.json"
    result = run_script("bench.py", *STUDY, *TINY, "--compile=True", "--compile_backend=eager", f"--out_json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 15
    assert all(r["compiled_calls"] > 0 for r in rows), [(r["name"], r["compiled_calls"]) for r in rows]


def test_a_row_that_ran_uncompiled_is_an_error(monkeypatch):
    from nanodfm import engine
    monkeypatch.setattr(engine, "RECOMPILE_LIMIT", 1)
    # dynamo's own patch: a config attribute that monkeypatch deletes and restores is gone for later tests
    with torch._dynamo.config.patch(recompile_limit=1), pytest.raises(bench.UsageError, match="ran uncompiled"):
        bench.main([*STUDY, *TINY, "--large=False", "--compile=True", "--compile_backend=eager"])
    torch._dynamo.reset()


def test_strided_timing_runs_every_kth_step_only_for_the_uniform_source():
    calls = []
    model = bench.random_model("dfm", 11, 8, SIZE)
    trunk = model.trunk
    def counting(x, t, h=None, positions=None):
        calls.append(round(t[0].item() * 20))
        return trunk(x, t, h, positions=positions)
    model.trunk = counting
    seconds, timed = bench.time_sampling(model, ProbPath(11, "uniform"), 1, 8, 20, 4, "cpu")
    assert timed == 4 and seconds > 0  # steps 4, 9, 14, 19 of 20 (stride 5)
    assert set(calls) <= {4, 9, 14, 19} and 19 in calls  # the final step always runs
    calls.clear()
    _, timed = bench.time_sampling(model, ProbPath(11, "mask"), 1, 8, 20, 4, "cpu")
    assert timed == 20 and 0 < len(calls) <= 20  # timed whole: its steps depend on what is still masked


def test_crossover_is_the_first_batch_size_where_ar_is_faster():
    def row(name, nfe, B, s):
        return {"size": "small", "length": 8, "name": name, "nfe": nfe, "batch_size": B, "seconds_per_sequence": s}
    rows = [row("ar_cache", 7, 1, 1.0), row("ar_cache", 7, 4, 0.3), row("ar_cache", 7, 16, 0.1),
            row("student", 8, 1, 0.2), row("student", 8, 4, 0.25), row("student", 8, 16, 0.2)]
    (c,) = bench.crossovers(rows)
    assert c["name"] == "student@8" and c["crossover_batch_size"] == 16
    assert c["speedup_vs_ar"] == pytest.approx([5.0, 1.2, 0.5])


@pytest.mark.parametrize("args, message", [
    (["--mode=fast"], "--mode must be one of study, syncs, env"),
    (["--batch_sizes=0"], "--batch_sizes must be comma-separated positive integers"),
    (["--mode=syncs", "--overhead_cases=65"], "vocabulary:length pairs"),
    (["--dtype=float16"], "--dtype must be"),
])
def test_bad_input_is_one_line(args, message):
    result = run_script("bench.py", *TINY, *args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["ar", "dfm"])
def test_sample_py_compile_flag_compiles_the_model_it_samples_with(kind, tmp_path, monkeypatch, capsys):
    import sample as sample_script
    from test_autoregressive import save_checkpoint, tiny_model
    ckpt = save_checkpoint(tmp_path / f"{kind}.pt", tiny_model(kind, dtype=torch.float32), kind)
    compiled = []
    def fake_compile(trunk, **options):
        compiled.append(trunk.__self__)
        return trunk
    monkeypatch.setattr(torch, "compile", fake_compile)
    steps = [] if kind == "ar" else ["--steps=64"]  # an AR model takes no step count
    sample_script.main([f"--ckpt={ckpt}", "--length=12", *steps, "--device=cpu", "--compile=True"])
    assert len(compiled) == 1 and compiled[0].config.causal == (kind == "ar")
    assert "----------" in capsys.readouterr().out


@pytest.mark.parametrize("source, per_step", [("mask", 1), ("uniform", 2)])
def test_the_engine_reads_the_gpu_once_a_step_or_twice(source, per_step, monkeypatch):
    """On a GPU the engine reads one value on the host per step, the candidates' count (the model
    is asked only there), and under the uniform source the movers' count too; counted here on a CPU
    by the calls that would sync there, with the engine taking its GPU path."""
    from nanodfm import categorical, engine
    model = bench.random_model("student", 300, 16, SIZE)
    path = ProbPath(300, source)
    monkeypatch.setattr(categorical, "host_shortcuts", lambda device: False)
    counted = bench.syncs_per_step(model, path, 2, 16, 8)
    assert counted["syncs_per_step"] == per_step, counted
    monkeypatch.undo()  # on a CPU the engine reads more values, which are free there; the counter sees them
    assert bench.syncs_per_step(model, path, 2, 16, 8)["syncs_per_step"] > per_step
    with bench.SyncCounter() as counter:  # and the counter sees what a sync is
        x = torch.arange(4)
        x[x > 1].sum().item()
    assert counter.count == 2 and counter.calls == {"__getitem__": 1, "item": 1}


def test_out_png_without_matplotlib_is_refused_before_any_timing(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "pyplot", lambda: None)
    monkeypatch.setattr(bench, "pick_device", lambda name: pytest.fail("the benchmark started"))
    with pytest.raises(bench.UsageError, match="--out_png needs matplotlib"):
        bench.main(["--mode=study", f"--out_png={tmp_path / 'p.png'}"])
