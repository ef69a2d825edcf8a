"""train.py end to end on a tiny model: it trains, resumes exactly, and rejects bad input clearly."""

import ast
import json
import os
import shlex

import pytest
import torch

from conftest import TINY_MODEL, run_script
import train as train_script
from nanodfm import checkpoint


def losses(out_dir):
    """Training losses by step from the run's log."""
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def train(data_dir, out_dir, *extra):
    result = run_script("train.py", f"--data_dir={data_dir}", f"--out_dir={out_dir}", *TINY_MODEL,
                        "--log_interval=1", "--eval_interval=3", *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.parametrize("kind", ["dfm", "ar"])
def test_resume_continues_exactly(char_data, tmp_path, kind):
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    same = [f"--kind={kind}", "--dropout=0.1", "--lr_decay_iters=6"]  # the interrupted run planned 6 steps too
    train(char_data, whole, *same, "--max_iters=6")
    train(char_data, split, *same, "--max_iters=3")
    train(char_data, split, *same, "--max_iters=6", "--init_from=resume")
    a, b = losses(whole), losses(split)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert a == b  # bit for bit: model, optimiser, data order and dropout RNG all restored
    assert a[6] != a[1]
    ckpt = checkpoint.load(os.path.join(split, "ckpt.pt"))
    assert ckpt["step"] == 6 and ckpt["kind"] == kind


def test_student_resume_restores_the_ema(char_data, tmp_path):
    dfm = str(tmp_path / "dfm")
    train(char_data, dfm, "--max_iters=3")
    parent = os.path.join(dfm, "ckpt.pt")
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    same = ["--kind=student", "--max_step_exponent=3", "--ema_decay=0.9", "--lr_decay_iters=6"]
    train(char_data, whole, *same, f"--init_from={parent}", "--max_iters=6")
    train(char_data, split, *same, f"--init_from={parent}", "--max_iters=3")
    train(char_data, split, *same, "--init_from=resume", "--max_iters=6")
    assert losses(whole) == losses(split)
    a, b = (checkpoint.load(os.path.join(d, "ckpt.pt")) for d in (whole, split))
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert any(not torch.equal(a["ema"][k], a["model"][k]) for k in a["ema"])  # the EMA lags the student


def one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_one_clear_line(char_data, tmp_path):
    one_line_error(run_script("train.py", "--dataset=no_such_data"), "meta.json", "data/text/prepare.py",
                   "--name=no_such_data")
    empty = tmp_path / "only_meta"
    empty.mkdir()
    (empty / "meta.json").write_bytes(open(os.path.join(char_data, "meta.json"), "rb").read())
    one_line_error(run_script("train.py", f"--data_dir={empty}"), "train.bin", "prepare.py")
    one_line_error(run_script("train.py", "--n_layers=2"), "unknown config key 'n_layers'", "n_layer")
    one_line_error(run_script("train.py", "--max_iters=many"), "max_iters")
    one_line_error(run_script("train.py", "--source=gaussian"), "source")
    one_line_error(run_script("train.py", "no_such_config.py"), "no_such_config.py")
    one_line_error(run_script("train.py", "--kind=student"), "init_from")


@pytest.mark.parametrize("script", ["train.py", "sample.py", "eval.py"])
def test_help_gives_every_key_its_default_and_meaning(script):
    import importlib
    module = importlib.import_module(script[:-3])
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for key, value in module.DEFAULTS.items():  # the block as written, its values the defaults
        line = next(line for line in lines if line.startswith(f"  {key} = "))
        assert ast.literal_eval(line.split(" = ", 1)[1].split("  # ")[0]) == value, line
    if script == "train.py":  # the block's comments, as written above each key and beside it
        assert '  kind = "dfm"  # "dfm", "ar" or "student"' in lines
        assert "  # optimiser: AdamW, linear warmup then cosine decay to min_lr" in lines


def test_lr_decay_follows_max_iters_unless_given():
    import train
    cfg = dict(train.DEFAULTS, max_iters=300, warmup_iters=10)
    assert train.learning_rate_at(300, cfg) == pytest.approx(cfg["min_lr"])  # a shortened run still decays fully
    assert train.learning_rate_at(155, cfg) == pytest.approx((cfg["learning_rate"] + cfg["min_lr"]) / 2)
    cfg["lr_decay_iters"] = 600
    assert train.learning_rate_at(300, cfg) > (cfg["learning_rate"] + cfg["min_lr"]) / 2
    assert train.learning_rate_at(700, cfg) == cfg["min_lr"]


def test_checkpoint_kinds_and_sampling_errors(char_data, tmp_path):
    ar, dfm = str(tmp_path / "ar"), str(tmp_path / "dfm")
    train(char_data, ar, "--kind=ar", "--max_iters=1")
    train(char_data, dfm, "--max_iters=1")
    ar_ckpt, dfm_ckpt = os.path.join(ar, "ckpt.pt"), os.path.join(dfm, "ckpt.pt")
    one_line_error(run_script("train.py", f"--data_dir={char_data}", f"--out_dir={ar}", "--init_from=resume"),
                   "kind 'ar'", "dfm")
    one_line_error(run_script("train.py", f"--data_dir={char_data}", "--kind=student", f"--init_from={ar_ckpt}"),
                   "kind 'ar'")
    garbage = tmp_path / "garbage.pt"
    torch.save({"state_dict": {}}, garbage)
    one_line_error(run_script("sample.py", f"--ckpt={garbage}"), "not a nanodfm checkpoint")
    one_line_error(run_script("sample.py", f"--ckpt={tmp_path / 'missing.pt'}"), "not found")
    one_line_error(run_script("sample.py", f"--ckpt={dfm_ckpt}", "--steps=0"), "steps")
    one_line_error(run_script("sample.py", f"--ckpt={dfm_ckpt}", "--start=" + "To be or not " * 4), "prompt", "32")
    one_line_error(run_script("sample.py", f"--ckpt={dfm_ckpt}", "--start=caf\u00e9 \u65e5"), "'\u00e9'", "vocabulary")
    one_line_error(run_script("sample.py", f"--ckpt={dfm_ckpt}", "--start=FILE:/no/such/prompt.txt"), "prompt file")
    good = run_script("sample.py", f"--ckpt={dfm_ckpt}", "--steps=4", "--num_samples=1", "--start=ROMEO:")
    assert good.returncode == 0, good.stderr
    assert "ROMEO:" in good.stdout and "not distilled" in good.stderr


def test_few_step_warning_prints_a_distillation_command_that_works(char_data, tmp_path):
    dfm = str(tmp_path / "dfm")
    train(char_data, dfm, "--max_iters=1")  # block_size 32, where train.py's default is 256
    result = run_script("sample.py", f"--ckpt={dfm}/ckpt.pt", "--steps=2", "--num_samples=1", "--device=cpu")
    assert result.returncode == 0, result.stderr
    args = shlex.split(result.stderr.split("Distil it: ", 1)[1].splitlines()[0])
    assert args[:2] == ["python", "train.py"]
    # run as printed; only a shorter run is appended, ending on an evaluation so that it saves
    done = run_script(*args[1:], "--max_iters=2", "--eval_interval=2", "--eval_iters=1", "--device=cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    student = checkpoint.load(os.path.join(f"{dfm}-student", "ckpt.pt"))
    assert student["kind"] == "student" and student["step"] == 2
    assert student["config"]["data_dir"] == char_data  # the data its parent was trained on


def test_compile_compiles_the_model_its_loss_and_the_teacher(char_data, tmp_path, monkeypatch):
    """--compile=True: the student, the DFM loss and the EMA teacher are each compiled (torch's
    compiler is replaced by a recorder here: compiling itself is slow on a CPU and torch's business)."""
    import train
    dfm = str(tmp_path / "dfm")
    train.main([f"--data_dir={char_data}", f"--out_dir={dfm}", *TINY_MODEL, "--max_iters=1", "--eval_interval=1"])
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: compiled.append(fn) or fn)
    student, ema = train.main([f"--out_dir={tmp_path / 'student'}", *TINY_MODEL, "--kind=student", "--max_iters=1",
                               "--eval_interval=1", "--max_step_exponent=2", f"--init_from={dfm}/ckpt.pt", "--compile=True"])
    names = [getattr(fn, "__name__", type(fn).__name__) for fn in compiled]
    assert compiled[0] is student and compiled[2] is ema and names[1] == "loss", names


def test_flops_per_token_count_per_sequence_conditioning_once_and_the_teachers_forwards():
    """By hand for a DFM model and its student, D = 16, n_cond = 8, V = 11, 1 layer, T = 4: the
    blocks' matmuls (attention 4 D^2, MLP 8 D^2) and the head (D V) act on every token; adaLN (8 x 96
    + 96 per block, 8 x 32 + 32 before the head) and the time MLP (256 x 8 + 8 + 8 x 8 + 8) once per
    sequence; attention's scores and sums 4 D T per layer."""
    from nanodfm.distill import Recipe
    from nanodfm.model import ModelConfig, Transformer
    D, C, V, T = 16, 8, 11, 4
    dfm = Transformer(ModelConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=D, n_cond=C))
    per_token = 12 * D * D + D * V
    time_mlp = 256 * C + C + C * C + C
    per_sequence = (C * 6 * D + 6 * D) + (C * 2 * D + 2 * D) + time_mlp
    forward = 2 * per_token + 2 * per_sequence / T + 4 * D * T
    assert train_script.model_flops_per_token(dfm, T, backward=False) == forward
    assert train_script.model_flops_per_token(dfm, T) == 3 * forward
    student = train_script.student_from_dfm(dfm)
    student_forward = forward + 2 * time_mlp / T  # the step-size MLP, once per sequence
    assert train_script.model_flops_per_token(student, T, backward=False) == student_forward
    # a training iteration of a student: its forward and backward, and RK4's 4 teacher forwards on
    # the samples whose h is not the smallest (K = 2, uniform over exponents: 2/3 of them)
    cfg = {"kind": "student", "block_size": T, "teacher": "rk4", "teacher_average": "logits",
           "step_size_weighting": "uniform", "max_step_exponent": 2}
    assert Recipe.of(cfg).max_step_exponent == 2
    assert train_script.flops_per_token(student, cfg) == pytest.approx(3 * student_forward + 4 * (2 / 3) * student_forward)
    assert train_script.flops_per_token(dfm, {**cfg, "kind": "dfm"}) == 3 * forward


@pytest.mark.parametrize("env, fragment", [
    ({"RANK": "0"}, "LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not: start several processes with torchrun"),
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500"}, "MASTER_ADDR is not"),
    ({"RANK": "abc", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}, "RANK='abc'"),
    ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}, "below WORLD_SIZE"),
])
def test_torchrun_variables_are_checked_as_a_set(env, fragment):
    from nanodfm.config import UsageError
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        train_script.torchrun_environment(env)
    full = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}
    assert train_script.torchrun_environment(full) == (1, 1, 2)


def test_rank_without_torchrun_is_one_line(char_data, tmp_path):
    result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={tmp_path / 'out'}", *TINY_MODEL,
                        env={"RANK": "0"})
    one_line_error(result, "RANK is set but LOCAL_RANK")


def test_a_checkpoint_without_its_training_state_is_refused_for_resume(char_data, tmp_path):
    out = tmp_path / "out"
    train(char_data, out, "--max_iters=3")
    ckpt = checkpoint.load(str(out / "ckpt.pt"))
    for key, value in (("optimizer", None), ("rng", None), ("rng", {"torch": ckpt["rng"]["torch"]})):
        trimmed = {k: v for k, v in ckpt.items() if k not in (key, "format", "loaded_from")}
        checkpoint.save(str(out / "ckpt.pt"), trimmed if value is None else {**trimmed, key: value})
        result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=6",
                            "--init_from=resume")
        one_line_error(result, "cannot resume a run: it lacks " + key, "another --out_dir")


def test_resume_refuses_another_dataset(char_data, tmp_path):
    out = tmp_path / "out"
    train(char_data, out, "--max_iters=3")
    result = run_script("train.py", "--dataset=other_text", f"--out_dir={out}", *TINY_MODEL, "--max_iters=6",
                        "--init_from=resume")
    one_line_error(result, "was trained on dataset", "'other_text'", "drop --dataset")


def test_ctrl_c_ends_training_in_one_line_that_says_how_to_resume(char_data, tmp_path):
    """SIGINT mid-run: one line naming the intact checkpoint's step and the command that continues it,
    which does."""
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "out"
    args = [f"--data_dir={char_data}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=100000", "--eval_interval=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=train_script.__file__.rsplit("/", 1)[0],
                               stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "ckpt.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    last = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()][-1]
    assert process.returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert last.startswith("interrupted at step ") and "is intact; continue with python train.py" in last, last
    assert last.endswith("--init_from=resume")
    step = checkpoint.load(str(out / "ckpt.pt"))["step"]
    assert f"(step {step}) is intact" in last
    command = shlex.split(last.split("continue with ", 1)[1])
    assert command[:2] == ["python", "train.py"] and "--max_iters=100000" in command
    assert run_script(*command[1:], f"--max_iters={step + 2}").returncode == 0  # it continues (here to 2 steps more)
    assert checkpoint.load(str(out / "ckpt.pt"))["step"] == step + 2


def test_ctrl_c_just_after_a_checkpoint_landed_names_that_checkpoint(char_data, tmp_path, monkeypatch):
    """The race of the test above made certain: Ctrl-C arrives once the new ckpt.pt is in place, before
    the run has noted it; the line names the step on disk, not the one before."""
    save, saves = checkpoint.save, []

    def save_then_interrupt(path, state):
        save(path, state)
        saves.append(state["step"])
        if len(saves) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(train_script.checkpoint, "save", save_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        train_script.main([f"--data_dir={char_data}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=10",
                           "--eval_interval=2"])
    assert saves == [0, 2] and checkpoint.load(str(out / "ckpt.pt"))["step"] == 2
    assert f"{out / 'ckpt.pt'} (step 2) is intact" in str(stop.value), stop.value


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.update(vocab_size="65"), "vocab_size '65' is not a whole number"),
    (lambda m: m.update(vocab_size=m["vocab_size"] + 0.5), "is not a whole number"),
    (lambda m: m.pop("stoi"), "char vocabulary"),
    (lambda m: m["itos"].popitem(), "char vocabulary"),
    (lambda m: m.update(vocab_size=m["vocab_size"] + 1), "char vocabulary"),
    (lambda m: m.update(tokenizer="bytes"), "tokenizer is 'bytes'"),
])
def test_a_meta_json_that_no_checkpoint_could_carry_is_refused_before_training(char_data, tmp_path, change, fragment):
    """The rules checkpoint.load applies to a checkpoint's meta are meta.json's too, applied when the data
    is read: a run never trains to the end on data whose checkpoints it could not read back."""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    meta = json.loads((data / "meta.json").read_text())
    change(meta)
    (data / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    result = run_script("train.py", f"--data_dir={data}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=2")
    one_line_error(result, "meta.json", fragment)
    assert not (out / "ckpt.pt").exists()


def test_write_meta_refuses_what_load_would_refuse(tmp_path):
    from nanodfm.config import UsageError
    from nanodfm.data import write_meta
    (tmp_path / "train.bin").write_bytes(bytes(4))
    (tmp_path / "val.bin").write_bytes(bytes(4))
    with pytest.raises(UsageError, match="not writing .*meta.json: its char vocabulary"):
        write_meta(tmp_path, {"tokenizer": "char", "vocab_size": 2, "itos": {0: "a"}, "stoi": {"a": 0}})
    assert not (tmp_path / "meta.json").exists()


@pytest.mark.parametrize("kind, key", [("dfm", "--teacher=rk2"), ("ar", "--source=uniform"), ("dfm", "--ema_decay=0.9")])
def test_a_key_this_kind_of_model_ignores_is_refused(char_data, tmp_path, kind, key):
    result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={tmp_path / 'out'}", *TINY_MODEL,
                        f"--kind={kind}", key, "--max_iters=1")
    one_line_error(result, f"{key[2:].split('=')[0]} does not apply to kind={kind}", "drop it")
