"""Faults and bad input, injected into the scripts on a tiny model: nothing is lost, nothing runs.

SIGKILL during training and during a checkpoint write resume bit for bit; a diverging run stops
and leaves its last checkpoint finite; planted payloads in a checkpoint or a dataset never run; an
out_dir is never silently reused; bad data and arguments end in one line, before any training step.
"""

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_MODEL, run_script
from nanodfm import checkpoint
from nanodfm.data import write_meta

# lr_decay_iters pinned: the killed runs use a large max_iters and their comparisons a small one, and
# the schedule must not follow max_iters for the two to take the same steps
FAST = [*TINY_MODEL, "--log_interval=1", "--eval_interval=3", "--dropout=0.1", "--lr_decay_iters=1000"]


def train(data_dir, out_dir, *extra, ok=True):
    result = run_script("train.py", f"--data_dir={data_dir}", f"--out_dir={out_dir}", *FAST, *extra)
    if ok:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def one_line_error(result, *fragments):
    """Exit status non-zero, no traceback, and the last line of stderr (after any progress bar) an error."""
    assert result.returncode != 0, result.stdout[-1000:]
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "\n" not in last, result.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


def losses(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def logged_step(out_dir):
    """The last training step in a running run's log, 0 if none yet."""
    try:
        return max(losses(out_dir), default=0)
    except (OSError, ValueError):  # no log yet, or a line being written
        return 0


def assert_same_state(a, b, where="checkpoint"):
    """Equal tensors, numbers and containers, recursively."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def assert_resumed_exactly(whole, resumed):
    a, b = (checkpoint.load(os.path.join(d, "ckpt.pt")) for d in (whole, resumed))
    for key in ("step", "model", "optimizer", "ema", "rng"):
        assert_same_state(a[key], b[key], key)
    assert losses(whole) == losses(resumed)


def wait_for(condition, proc, timeout=120):
    start = time.time()
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - start < timeout
        time.sleep(0.02)


def popen_train(data_dir, out_dir, *extra, wrapper=None):
    args = [f"--data_dir={data_dir}", f"--out_dir={out_dir}", *FAST, *extra]
    cmd = [sys.executable, "-c", wrapper, *args] if wrapper else [sys.executable, "train.py", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# torch.save writes half of the third checkpoint (the one at step 6), then the process is killed
KILL_IN_WRITE = """
import io, os, runpy, signal, sys, torch
save, calls = torch.save, []
def half_then_kill(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) < 3:
        return save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    save(obj, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = half_then_kill
sys.argv[0] = "train.py"
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def parent(char_data, tmp_path_factory):
    """A DFM checkpoint for the students."""
    out = tmp_path_factory.mktemp("parent")
    train(char_data, out, "--max_iters=3")
    return os.path.join(out, "ckpt.pt")


@pytest.mark.parametrize("kind,when", [("dfm", "training"), ("ar", "write"), ("student", "training"),
                                       ("student", "write")])
def test_sigkill_then_resume_is_bit_identical(char_data, parent, tmp_path, kind, when):
    model = [f"--kind={kind}"] + (["--max_step_exponent=3", "--ema_decay=0.9"] if kind == "student" else [])
    start = [f"--init_from={parent}"] if kind == "student" else []
    killed = str(tmp_path / "killed")
    if when == "training":  # killed at some step after its first checkpoints
        proc = popen_train(char_data, killed, *model, *start, "--max_iters=100000")
        wait_for(lambda: logged_step(killed) >= 5, proc)
        proc.kill()
    else:
        proc = popen_train(char_data, killed, *model, *start, "--max_iters=100000", wrapper=KILL_IN_WRITE)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    if when == "write":
        assert os.path.exists(f"{killed}/ckpt.pt.tmp")  # a half-written file beside the intact checkpoint
    step = checkpoint.load(f"{killed}/ckpt.pt")["step"]
    assert step >= 3 and step % 3 == 0
    assert os.path.exists(f"{killed}/lock")  # the killed run's lock file: the OS released its lock with the process
    resume_model = model + ["--init_from=resume"]
    train(char_data, killed, *resume_model, f"--max_iters={step + 3}")
    assert not os.path.exists(f"{killed}/ckpt.pt.tmp")
    whole = str(tmp_path / "whole")
    train(char_data, whole, *model, *start, f"--max_iters={step + 3}")
    assert_resumed_exactly(whole, killed)


def test_divergence_stops_and_keeps_the_last_checkpoint(char_data, tmp_path):
    out = str(tmp_path / "out")
    train(char_data, out, "--max_iters=3")
    before = open(f"{out}/ckpt.pt", "rb").read()
    result = train(char_data, out, "--init_from=resume", "--max_iters=40", "--learning_rate=1e4", ok=False)
    one_line_error(result, "diverged at step", f"{out}/ckpt.pt (step 3) is intact")
    assert open(f"{out}/ckpt.pt", "rb").read() == before
    ckpt = checkpoint.load(f"{out}/ckpt.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    with pytest.raises(Exception, match="NaN or infinity"):  # the last guard: save itself refuses
        checkpoint.save(f"{out}/nan.pt", {"model": {"w": torch.tensor([1.0, float("nan")])}})
    assert not os.path.exists(f"{out}/nan.pt")


class Payload:
    """Unpickling this creates a folder: the stand-in for any code a planted file could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_planted_payloads_never_run(char_data, parent, tmp_path):
    marker = str(tmp_path / "payload_ran")
    evil = str(tmp_path / "evil" / "ckpt.pt")
    os.makedirs(os.path.dirname(evil))
    torch.save({"format": checkpoint.FORMAT, "kind": "dfm", "x": Payload(marker)}, evil)
    torch.load(evil, weights_only=False)  # the payload is live: a plain load runs it
    assert os.path.isdir(marker)
    os.rmdir(marker)
    for result in (run_script("sample.py", f"--ckpt={evil}"),
                   run_script("eval.py", "--mode=elbo", f"--dfm={evil}"),
                   train(char_data, tmp_path / "student", "--kind=student", f"--init_from={evil}", ok=False),
                   train(char_data, tmp_path / "evil", "--init_from=resume", ok=False)):
        one_line_error(result, "evil/ckpt.pt was not loaded", "can run code")
    assert not os.path.exists(marker)

    data = tmp_path / "evil_data"  # a dataset whose metadata is an old-style pickle
    shutil.copytree(char_data, data)
    os.remove(data / "meta.json")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump(Payload(marker), f)
    one_line_error(train(data, tmp_path / "out", ok=False), "meta.pkl", "not read", "can run code")
    assert not os.path.exists(marker)


def test_an_old_checkpoint_is_refused_with_the_fix(tmp_path):
    old = str(tmp_path / "old.pt")  # format 1 kept numpy's RNG state, which weights_only cannot load
    torch.save({"format": "nanodfm-1", "kind": "dfm", "rng": {"numpy": np.random.get_state()}}, old)
    one_line_error(run_script("sample.py", f"--ckpt={old}"), "retrain")


def test_one_run_per_out_dir(char_data, tmp_path):
    out = str(tmp_path / "out")
    train(char_data, out, "--max_iters=3")
    before = open(f"{out}/ckpt.pt", "rb").read()
    one_line_error(train(char_data, out, "--max_iters=3", ok=False), "already holds a checkpoint",
                   "--init_from=resume", "--overwrite=True")
    assert open(f"{out}/ckpt.pt", "rb").read() == before
    train(char_data, out, "--max_iters=2", "--overwrite=True")
    assert checkpoint.load(f"{out}/ckpt.pt")["step"] == 2
    assert sorted(losses(out)) == [1, 2]  # a new run starts a new log

    busy = str(tmp_path / "busy")
    proc = popen_train(char_data, busy, "--max_iters=100000")
    try:
        wait_for(lambda: os.path.exists(f"{busy}/log.jsonl"), proc)
        one_line_error(train(char_data, busy, "--init_from=resume", ok=False),
                       f"{busy} is in use by another training run")
    finally:
        proc.kill()
        proc.communicate()


def test_out_dir_faults_keep_the_previous_checkpoint(char_data, tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("not a folder")
    one_line_error(train(char_data, afile, "--max_iters=1", ok=False), str(afile), "is a file")

    out = str(tmp_path / "out")
    train(char_data, out, "--max_iters=3")
    before = open(f"{out}/ckpt.pt", "rb").read()
    # a full disk, as the process sees it: files may not grow past 64 KiB (the checkpoint is larger)
    import resource
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))  # noqa: E731
    result = subprocess.run([sys.executable, "train.py", f"--data_dir={char_data}", f"--out_dir={out}", *FAST,
                             "--init_from=resume", "--max_iters=6"], cwd=ROOT, env=env, preexec_fn=limit,
                            capture_output=True, text=True, timeout=300)
    one_line_error(result, f"cannot write checkpoint {out}/ckpt.pt", "File too large", "intact")
    assert open(f"{out}/ckpt.pt", "rb").read() == before
    assert sorted(os.listdir(out)) == ["best.pt", "ckpt.pt", "lock", "log.jsonl"]  # no temporary left

    if os.geteuid() != 0:  # root writes into read-only folders anyway
        os.chmod(out, 0o500)
        try:
            one_line_error(train(char_data, out, "--init_from=resume", "--max_iters=6", ok=False), out,
                           "Permission denied")
        finally:
            os.chmod(out, 0o700)
        assert open(f"{out}/ckpt.pt", "rb").read() == before


def variant(char_data, tmp_path, name, edit_meta=None, train_ids=None):
    """A copy of the char dataset with its meta or its train.bin changed."""
    folder = tmp_path / name
    shutil.copytree(char_data, folder)
    if edit_meta:
        meta = json.loads((folder / "meta.json").read_text())
        edit_meta(meta)
        (folder / "meta.json").write_text(json.dumps(meta))
    if train_ids is not None:
        np.asarray(train_ids, dtype=np.uint16).tofile(folder / "train.bin")
    return folder


def test_bad_data_is_one_line_before_training(char_data, tmp_path):
    vocab = json.loads(open(os.path.join(char_data, "meta.json")).read())["vocab_size"]
    ids = np.fromfile(os.path.join(char_data, "train.bin"), dtype=np.uint16)
    empty = variant(char_data, tmp_path, "empty", train_ids=[])
    odd = variant(char_data, tmp_path, "odd")
    with open(odd / "train.bin", "ab") as f:
        f.write(b"\0")
    small_vocab = variant(char_data, tmp_path, "small_vocab", edit_meta=lambda m: m.update(vocab_size=vocab - 10))
    big_ids = ids.copy()
    big_ids[::1000] = vocab + 5  # ids the recorded maximum does not know about
    swapped_bin = variant(char_data, tmp_path, "swapped_bin", train_ids=big_ids)
    for folder, fragment in ((empty, "train.bin is empty"), (odd, "not a whole number"),
                             (small_vocab, f"is not {vocab - 10} characters with an id each"),
                             (swapped_bin, "meta.json describes (another preparation")):
        result = train(folder, tmp_path / f"out_{folder.name}", ok=False)
        one_line_error(result, fragment)
        assert not os.path.exists(tmp_path / f"out_{folder.name}" / "log.jsonl")  # no step was taken


def test_resume_checks_vocabulary_and_shape(char_data, parent, tmp_path):
    def swap_two(meta):  # as many tokens, two of them exchanged
        meta["itos"]["0"], meta["itos"]["1"] = meta["itos"]["1"], meta["itos"]["0"]
        meta["stoi"] = {ch: int(i) for i, ch in meta["itos"].items()}
    other = variant(char_data, tmp_path, "other_chars", edit_meta=swap_two)
    out = str(tmp_path / "out")
    shutil.copytree(os.path.dirname(parent), out)
    one_line_error(train(other, out, "--init_from=resume", ok=False), "another vocabulary", "tokens differ")
    one_line_error(train(other, tmp_path / "student", "--kind=student", f"--init_from={parent}", ok=False),
                   "another vocabulary")
    one_line_error(train(char_data, out, "--init_from=resume", "--n_layer=3", "--n_embd=48", ok=False),
                   "n_layer=3 (checkpoint: 2)", "n_embd=48 (checkpoint: 32)")
    assert checkpoint.load(parent)["config"]["source"] == "mask"
    one_line_error(train(char_data, out, "--init_from=resume", "--source=uniform", "--kappa_power=2.0", ok=False),
                   "source='uniform' (checkpoint: 'mask')", "kappa_power=2.0 (checkpoint: 1.0)")
    # keys left at their defaults take the checkpoint's values, and the new checkpoint records those
    result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={out}", "--device=cpu", "--batch_size=4",
                        "--block_size=32", "--eval_iters=1", "--init_from=resume", "--max_iters=4")
    assert result.returncode == 0, result.stderr[-2000:]
    config = checkpoint.load(f"{out}/ckpt.pt")["config"]
    assert (config["n_layer"], config["n_embd"], config["dropout"]) == (2, 32, 0.1)


def test_bad_arguments_are_one_line(char_data, parent, tmp_path):
    cases = [(("train.py", "--device=cuda", f"--data_dir={char_data}"), "no cuda device"),
             (("sample.py", f"--ckpt={parent}", "--device=mps"), "no mps device"),
             (("sample.py", f"--ckpt={parent}", "--num_samples=-1"), "num_samples"),
             (("sample.py", f"--ckpt={parent}", "--num_samples=0"), "num_samples"),
             (("eval.py", "--mode=elbo", f"--dfm={parent}", "--num_batches=0"), "num_batches")]
    if torch.cuda.is_available():
        cases = cases[2:]
    for args, fragment in cases:
        one_line_error(run_script(*args), fragment)


def test_an_out_dir_is_held_by_one_process_until_it_ends_however_it_ends(tmp_path):
    """The lock is the OS's: a second taker is refused, and the holder's end, even by SIGKILL, frees it."""
    from nanodfm.config import UsageError
    out = str(tmp_path / "out")
    release = checkpoint.lock_out_dir(out)
    with pytest.raises(UsageError, match=re.escape(f"{out} is in use by another training run")):
        checkpoint.lock_out_dir(out)
    release()
    hold = ("import sys, time; from nanodfm import checkpoint; checkpoint.lock_out_dir(sys.argv[1]); "
            "print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", hold, out], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UsageError, match="in use by another training run"):
            checkpoint.lock_out_dir(out)
    finally:
        holder.kill()
        holder.communicate()
    checkpoint.lock_out_dir(out)()  # the killed holder's lock went with it
    assert os.listdir(out) == ["lock"]


def test_output_files_are_whole_or_absent(tmp_path):
    import resource
    from nanodfm.config import UsageError, output_file
    path = tmp_path / "r.json"
    path.write_text("previous")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 12, hard))  # a disk that fills at 4 KiB
        with pytest.raises(UsageError, match=f"cannot write {path}: File too large"):
            with output_file(path) as f:
                f.write("x" * (1 << 14))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_text() == "previous" and os.listdir(tmp_path) == ["r.json"]
    with pytest.raises(UsageError, match="cannot write .*Not a directory"):
        with output_file(tmp_path / "r.json" / "x.json") as f:
            f.write("x")


def test_train_reports_and_logs_safely(tmp_path):
    import train as train_script
    from nanodfm.config import UsageError
    line = train_script.eval_line(5, {"train": float("nan"), "val": float("inf"), "val_elbo": 1e6})
    assert line == "step 5: train loss nan, val loss inf, val ELBO perplexity <= inf"
    assert train_script.eval_line(6, {"train": 1.0, "val": 1.0, "val_elbo": float("nan")}).endswith("<= nan")
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    f = train_script.open_log(str(log), resume_step=3)  # rows past the checkpoint, and the torn line, dropped
    f.close()
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    if os.path.exists("/dev/full"):  # a disk that is full
        full = open("/dev/full", "w")
        with pytest.raises(UsageError, match="cannot write /dev/full: No space"):
            train_script.write_log(full, {"step": 1})
        with pytest.raises(OSError):  # what it could not write is still in its buffer
            full.close()


def test_explicit_keys_of_a_config_file_contradicting_the_checkpoint_are_refused(char_data, parent, tmp_path):
    import train as train_script
    from nanodfm.config import UsageError, parse
    conf = tmp_path / "conf.py"
    conf.write_text("n_embd = 64\nsource = 'uniform'\n")
    explicit = set()
    cfg = parse(train_script.DEFAULTS, [str(conf), "--kind=student", f"--init_from={parent}"], explicit=explicit)
    start = checkpoint.load(parent)
    with pytest.raises(UsageError, match=r"n_embd=64 \(checkpoint: 32\), source='uniform' \(checkpoint: 'mask'\)"):
        train_script.model_to_train(cfg, explicit, start, parent, start["meta"], char_data)
    cfg = parse(train_script.DEFAULTS, ["--kind=student", f"--init_from={parent}", "--block_size=32"],
                explicit=(explicit := set()))
    train_script.model_to_train(cfg, explicit, start, parent, start["meta"], char_data)  # unset: the checkpoint's
    assert (cfg["n_embd"], cfg["source"]) == (32, "mask")


def test_a_student_takes_its_parents_block_size_unless_one_is_given(char_data, parent):
    """A student preset need not know its parent's context: unset, block_size is the parent's (32
    here, against train.py's default of 256); a smaller one is kept, a larger one refused in one line."""
    import train as train_script
    from nanodfm.config import UsageError, parse
    start = checkpoint.load(parent)
    def block_size(*extra):
        explicit = set()
        cfg = parse(train_script.DEFAULTS, ["--kind=student", f"--init_from={parent}", *extra], explicit=explicit)
        train_script.model_to_train(cfg, explicit, start, parent, start["meta"], char_data)
        return cfg["block_size"]
    assert train_script.DEFAULTS["block_size"] != 32 and block_size() == 32
    assert block_size("--block_size=16") == 16
    with pytest.raises(UsageError, match="block_size=64 exceeds the model's 32: drop --block_size"):
        block_size("--block_size=64")


def test_resume_repairs_a_best_pt_left_behind_by_a_kill(char_data, tmp_path):
    """A kill after ckpt.pt is written and before it is copied to best.pt leaves best.pt at an older
    step although ckpt.pt's own evaluation was the best; resuming puts ckpt.pt there."""
    out = tmp_path / "run"
    train(char_data, out, "--max_iters=4", "--eval_interval=2")
    ckpt = checkpoint.load(str(out / "ckpt.pt"))
    if ckpt["val_loss"] > ckpt["best_val_loss"]:
        pytest.skip("this tiny run's last evaluation was not its best")
    stale = {k: v for k, v in ckpt.items() if k not in ("format", "loaded_from")}
    checkpoint.save(str(out / "best.pt"), {**stale, "step": 0})  # as if the copy at step 4 never happened
    result = train(char_data, out, "--max_iters=4", "--eval_interval=2", "--init_from=resume")
    assert "best.pt was behind" in result.stdout
    assert checkpoint.load(str(out / "best.pt"))["step"] == ckpt["step"]
    os.remove(out / "best.pt")  # missing altogether: the same repair
    train(char_data, out, "--max_iters=4", "--eval_interval=2", "--init_from=resume")
    assert checkpoint.load(str(out / "best.pt"))["step"] == ckpt["step"]


def test_damaged_or_non_finite_weights_are_refused_at_load(parent, tmp_path):
    """torch.load does not check the zip's checksums: flipped weight bytes would load as other weights
    (and sample garbage with exit 0). The checksum written beside the weights catches them, and NaN
    weights written by anything else are refused too."""
    import torch
    from nanodfm.config import UsageError
    good = torch.load(parent, weights_only=True)
    tampered = {**good, "model": {k: v.clone() for k, v in good["model"].items()}}
    key = next(k for k, v in tampered["model"].items() if v.is_floating_point())
    tampered["model"][key].view(-1)[0] += 1.0  # one weight changed, the old checksum kept
    torch.save(tampered, tmp_path / "tampered.pt")
    with pytest.raises(UsageError, match="is damaged: its tensors do not match the checksum"):
        checkpoint.load(str(tmp_path / "tampered.pt"))
    raw = bytearray(open(parent, "rb").read())  # bit rot: 1 kB of the file flipped
    middle = len(raw) // 2
    raw[middle:middle + 1024] = bytes(b ^ 0xFF for b in raw[middle:middle + 1024])
    (tmp_path / "rotten.pt").write_bytes(bytes(raw))
    with pytest.raises(UsageError, match="is damaged|is not a readable checkpoint"):
        checkpoint.load(str(tmp_path / "rotten.pt"))
    nan = {**good, "model": {**good["model"], key: torch.full_like(good["model"][key], float("nan"))}}
    nan.pop("checksum")
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(UsageError, match=f"holds NaN or infinity in its weights \\(model \\({key}\\)\\)"):
        checkpoint.load(str(tmp_path / "nan.pt"))
    assert checkpoint.load(parent)["step"] == good["step"]  # the intact file loads


def test_a_dataset_that_is_two_datasets_is_refused(char_data, tmp_path):
    """A kill in prepare --overwrite between the replacement of train.bin and that of val.bin leaves the
    new text's train.bin beside the old val.bin and meta.json: every id would mean another character.
    meta.json records each file's size and sha256, so the stranger is refused, not rescanned."""
    folder = variant(char_data, tmp_path, "half_new")
    ids = np.fromfile(folder / "train.bin", dtype=np.uint16)
    np.roll(ids, 7).tofile(folder / "train.bin")  # same size, same ids, another text
    result = train(folder, tmp_path / "out", ok=False)
    one_line_error(result, "train.bin is not the file", "meta.json describes")
    assert not os.path.exists(tmp_path / "out" / "log.jsonl")


def test_a_dataset_is_invisible_while_its_files_are_replaced(char_data, tmp_path, monkeypatch):
    """prepare --overwrite: killed after the first split is in place and before meta.json is written,
    the folder holds no meta.json, so nothing trains on it until it is prepared again."""
    from nanodfm import data
    from nanodfm.config import UsageError
    folder = variant(char_data, tmp_path, "being_replaced")
    meta = data.load_meta(str(folder))
    for split in ("train", "val"):
        shutil.copy(folder / f"{split}.bin", folder / f"{split}.bin.tmp")  # staged by write_split
    real_replace, moved = os.replace, []
    def replace_then_die(src, dst):
        real_replace(src, dst)
        moved.append(dst)
        raise KeyboardInterrupt  # killed after the first file is in place
    monkeypatch.setattr(data.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        data.write_meta(str(folder), {k: meta[k] for k in ("tokenizer", "vocab_size", "itos", "stoi")})
    monkeypatch.undo()
    assert len(moved) == 1 and not (folder / "meta.json").exists()
    with pytest.raises(UsageError, match="meta.json not found"):
        data.load_meta(str(folder))


def test_sigkill_anywhere_in_prepare_never_leaves_a_dataset_that_loads_as_another(tmp_path):
    """prepare --overwrite killed at several moments: the folder is then the old dataset, the new one,
    or refused in one line (no meta.json, or a file that is not the one meta.json describes); whatever
    loads decodes to the text it was made from."""
    from nanodfm import data
    from nanodfm.config import UsageError
    rng = np.random.default_rng(0)
    texts = {name: "".join(rng.choice(list(letters), 3_000_000)) for name, letters in
             (("old", "abcdefgh \n"), ("new", "ijklmnop \n"))}
    for name, text in texts.items():
        (tmp_path / f"{name}.txt").write_text(text)
    out = tmp_path / "ds"
    prepare = lambda name: [sys.executable, os.path.join(ROOT, "data", "text", "prepare.py"),  # noqa: E731
                            f"--input={tmp_path / (name + '.txt')}", f"--out_dir={out}", "--overwrite"]
    outcomes = set()
    for delay in (0.3, 0.8, 1.3, 1.8, 2.5, 4.0):
        subprocess.run(prepare("old"), check=True, capture_output=True)
        process = subprocess.Popen(prepare("new"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        try:
            meta = data.load_meta(str(out))
            train_bin = data.split_path(str(out), "train", meta["vocab_size"])
            data.split_path(str(out), "val", meta["vocab_size"])
        except UsageError:
            outcomes.add("refused")
            continue
        head = "".join(meta["itos"][int(i)] for i in np.fromfile(train_bin, dtype=np.uint16, count=200))
        which = [name for name, text in texts.items() if text.startswith(head)]
        assert len(which) == 1, head  # the text it decodes to is one of the two, whole
        outcomes.add(which[0])
    print("outcomes:", sorted(outcomes))  # which ones depend on the machine's speed
    assert outcomes <= {"old", "new", "refused"} and outcomes



def test_ctrl_c_inside_a_checkpoint_write_is_an_interrupt_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save turns a Ctrl-C in mid-write into a RuntimeError from its zip writer (seen in a run:
    "unexpected pos"); the save is an interrupt again (the script's one line), the previous checkpoint
    stays and no temporary is left."""
    def interrupted_save(obj, f):
        f.write(b"half a checkpoint")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 241344 vs 241232")
    monkeypatch.setattr(torch, "save", interrupted_save)
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"the previous checkpoint")
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(str(path), {"model": {"w": torch.zeros(3)}})
    assert path.read_bytes() == b"the previous checkpoint" and os.listdir(tmp_path) == ["ckpt.pt"]
