"""Bad input, tried as a hostile user would: every case ends in one line, and leaves the files as they were.

Each case is one command of a prepare script, train.py, sample.py, eval.py or bench.py with an input
that cannot work (a value out of range, a folder that cannot be written, a crafted checkpoint, token
ids outside the vocabulary, a run that diverges), the one-line error expected, and the files it must
leave alone (its own folder, and the repository's top level and data/).

Run as a script it is the harness that counts the cases by kind and verdict (one-line error,
traceback, silent exit 0), for this checkout or another one (a checkout from before a change):

    python tests/test_bad_input.py [--root=CHECKOUT] [--subprocess] [-v]

Cases run in a child forked from a process that has imported torch already (a fresh interpreter
costs about two seconds, the fork a few milliseconds); the child runs the script as __main__ and
reports an uncaught exception as the interpreter does. --subprocess (or NANODFM_TEST_SUBPROCESS=1)
runs each in a fresh interpreter instead.
"""

import atexit
import collections
import hashlib
import io
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TINY = ["--device=cpu", "--n_layer=1", "--n_head=2", "--n_embd=32", "--n_cond=16", "--block_size=32",
        "--batch_size=4", "--eval_iters=2", "--max_iters=20", "--eval_interval=10"]
SUBPROCESS = os.environ.get("NANODFM_TEST_SUBPROCESS") == "1"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only folders anyway
SHAKESPEARE = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


# ----------------------------------------------------------------------------- running a script

def run(root, script, *args, fsize=None, timeout=300):
    """Run root/script with args from root; returns (returncode, stdout, stderr).
    fsize: the largest file the process may write (RLIMIT_FSIZE), the stand-in for a full disk."""
    def limit():
        if fsize is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    path = os.path.join(root, script)
    if SUBPROCESS or not hasattr(os, "fork"):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        p = subprocess.run([sys.executable, path, *map(str, args)], cwd=root, env=env, capture_output=True,
                           text=True, timeout=timeout, preexec_fn=limit)
        return p.returncode, p.stdout, p.stderr
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
                sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
                atexit._clear()  # the parent's exit handlers are not the script's
                limit()
                _fresh_modules(root)
                os.chdir(root)
                sys.path.insert(0, str(root))
                sys.argv = [path, *map(str, args)]
                torch.set_num_threads(1)
                try:
                    runpy.run_path(path, run_name="__main__")
                    code = 0
                except SystemExit as e:  # as the interpreter does: a string is printed, and exits 1
                    if e.code is None or isinstance(e.code, int):
                        code = e.code or 0
                    else:
                        print(e.code, file=sys.stderr)
                        code = 1
                except BaseException:
                    traceback.print_exc()
                    code = 1
                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        start = time.time()
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.time() - start > timeout:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise TimeoutError(f"{script} {' '.join(map(str, args))} ran past {timeout} s")
            time.sleep(0.005)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def _fresh_modules(root):
    """The project's modules of this root: drop the parent's copies if they came from another checkout."""
    mine = lambda m: getattr(m, "__file__", None) and os.path.abspath(m.__file__).startswith(os.path.abspath(root))
    for name in [n for n in sys.modules if n.split(".")[0] in ("nanodfm", "data", "train", "sample", "eval", "bench")]:
        if not mine(sys.modules[name]):
            del sys.modules[name]


def verdict(code, stderr):
    """"one-line error", "traceback", "silent exit 0" or "other" (killed, or an error of several lines)."""
    if code == 0:
        return "silent exit 0"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    lines = [line for line in re.split(r"[\r\n]", stderr) if line.strip()]
    if lines and lines[-1].startswith("error: "):
        return "one-line error"
    return "other"


def last_line(stderr):
    lines = [line for line in re.split(r"[\r\n]", stderr) if line.strip()]
    return lines[-1] if lines else ""


def snapshot(*paths):
    """{path: content hash, or the names in a folder}, recursively; what a failed run must not change."""
    out = {}
    for path in map(Path, paths):
        if path.is_dir():
            out[str(path)] = sorted(p.name for p in path.iterdir())
            for p in path.iterdir():
                out.update(snapshot(p))
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path)] = None
    return out


def top_level(root):
    """The names at the repository's top and in data/ (a --name of .. would write there)."""
    skip = lambda name: name.startswith(".") or name in ("__pycache__", "out")
    return {where: sorted(n for n in os.listdir(os.path.join(root, where)) if not skip(n)) for where in ("", "data")}


# ----------------------------------------------------------------------------- the world the cases run in

def tiny_text(root):
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")[:60000]
    return Path(root, "nanodfm", "path.py").read_text(encoding="utf-8") * 4


def write_dataset(folder, ids_train, ids_val, meta):
    """A dataset in the prepare scripts' format (meta.json as nanodfm.data.write_meta writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.asarray(ids_train, dtype=np.uint16).tofile(folder / "train.bin")
    np.asarray(ids_val, dtype=np.uint16).tofile(folder / "val.bin")
    meta = {**meta, "tokens": {"train": len(ids_train), "val": len(ids_val)},
            "max_token_id": {"train": int(max(ids_train)), "val": int(max(ids_val))}}
    (folder / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))
    return folder


def swap_two(meta):
    """The same vocabulary size, two tokens exchanged: another vocabulary."""
    itos = {str(i): c for i, c in meta["itos"].items()}
    itos["0"], itos["1"] = itos["1"], itos["0"]
    return {**meta, "itos": itos, "stoi": {c: int(i) for i, c in itos.items()}}


def build_env(root, tmp):
    """The datasets and tiny checkpoints the cases start from, in tmp."""
    root, tmp = Path(root), Path(tmp)
    text = tiny_text(root)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    meta = {"tokenizer": "char", "vocab_size": len(chars), "itos": {str(i): c for i, c in enumerate(chars)},
            "stoi": stoi}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    env = SimpleNamespace(root=root, tmp=tmp, vocab=len(chars), text_file=tmp / "text.txt")
    tmp.mkdir(parents=True, exist_ok=True)
    env.text_file.write_text(text, encoding="utf-8")
    env.data = write_dataset(tmp / "data", ids[:n], ids[n:], meta)
    # token ids outside the vocabulary where a sample of the file would not look: a large train.bin,
    # one bad id in the gap between the first two runs of a 64-run sample
    big = np.tile(ids[:n], -(-600_000 // n))[:600_000]
    env.oov_train = write_dataset(tmp / "oov_train", big, ids[n:], meta)
    big[4096 + 100] = len(chars) + 3
    big.tofile(env.oov_train / "train.bin")
    bad_val = ids[n:].copy()
    bad_val[::50] = len(chars) + 3
    env.oov_val = write_dataset(tmp / "oov_val", ids[:n], ids[n:], meta)
    bad_val.tofile(env.oov_val / "val.bin")
    env.other_vocab = write_dataset(tmp / "other_vocab", ids[:n], ids[n:], swap_two(meta))
    env.non_utf8 = tmp / "latin1.txt"
    env.non_utf8.write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 50)
    for kind in ("dfm", "ar"):
        code, _, err = run(root, "train.py", f"--data_dir={env.data}", f"--out_dir={tmp / kind}", *TINY,
                           f"--kind={kind}", "--max_iters=2", "--eval_interval=2")
        assert code == 0, err[-2000:]
        setattr(env, kind, tmp / kind / "ckpt.pt")
    code, _, err = run(root, "train.py", f"--data_dir={env.data}", f"--out_dir={tmp / 'student'}", "--kind=student",
                       f"--init_from={env.dfm}", "--batch_size=4", "--block_size=32", "--eval_iters=1",
                       "--max_iters=1", "--max_step_exponent=2", "--device=cpu")
    assert code == 0, err[-2000:]
    env.student = tmp / "student" / "ckpt.pt"
    ck = torch.load(env.ar, weights_only=True)
    ck["meta"] = swap_two(ck["meta"])
    env.other_judge = tmp / "other_judge.pt"
    torch.save(ck, env.other_judge)
    return env


# ----------------------------------------------------------------------------- the cases

Case = collections.namedtuple("Case", "kind name script args expect setup post fsize skip", defaults=(None,) * 4)


def crafted(edit):
    """setup: work/crafted.pt, the DFM checkpoint changed by edit(ckpt)."""
    def setup(env, work):
        ck = torch.load(env.dfm, weights_only=True)
        edit(ck)
        torch.save(ck, work / "crafted.pt")
    return setup


def a_file(name):
    def setup(env, work):
        (work / name).write_text("a file, not a folder")
    return setup


def read_only(name):
    def setup(env, work):
        (work / name).mkdir()
        os.chmod(work / name, 0o500)
    return setup


def config_file(text):
    def setup(env, work):
        (work / "conf.py").write_text(text)
    return setup


def out_dir_in_use(env, work):
    """work/out, locked as a running training locks it (by this process, until it exits)."""
    import fcntl
    (work / "out").mkdir()
    fcntl.flock(os.open(work / "out" / "lock", os.O_RDWR | os.O_CREAT), fcntl.LOCK_EX)


def diverged(env, work):
    """ckpt.pt is absent, or finite: a diverging run never saves a checkpoint that is not."""
    path = work / "out" / "ckpt.pt"
    if path.exists():
        ck = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
        assert ck["val_loss"] == ck["val_loss"] and abs(ck["val_loss"]) != float("inf")
    assert not (work / "out" / "ckpt.pt.tmp").exists()


def no_partial(*names):
    def post(env, work):
        left = [n for n in names if (work / n).exists() and (work / n).is_dir() and any((work / n).iterdir())]
        assert not left, f"files left in {left}"
    return post


def _cases():
    D = lambda env, work: f"--data_dir={env.data}"  # noqa: E731
    O = lambda env, work: f"--out_dir={work / 'out'}"  # noqa: E731
    train = lambda *extra, data=D: (data, O, *TINY, *extra)  # noqa: E731
    student = lambda *extra: (D, O, *TINY, "--kind=student", lambda env, work: f"--init_from={env.dfm}", *extra)  # noqa
    INPUT = lambda env, work: f"--input={env.text_file}"  # noqa: E731
    TEXT_OUT = lambda env, work: f"--out_dir={work / 'ds'}"  # noqa: E731
    ckpt = lambda which: lambda env, work: f"--ckpt={getattr(env, which)}"  # noqa: E731
    dfm = lambda env, work: f"--dfm={env.dfm}"  # noqa: E731
    c = []
    # prepare scripts: outputs that cannot be written, input that is not text, names that are not folders
    for script, extra in (("data/text/prepare.py", ()), ("data/shakespeare_char/prepare.py", ())):
        c += [Case("prepare", f"{script} out_dir is a file", script, (INPUT, lambda e, w: f"--out_dir={w / 'afile'}"),
                   r"afile", setup=a_file("afile")),
              Case("prepare", f"{script} out_dir read-only", script, (INPUT, lambda e, w: f"--out_dir={w / 'ro'}"),
                   r"ro.*Permission denied", setup=read_only("ro"), skip="root ignores permissions" if IS_ROOT else None),
              Case("prepare", f"{script} disk full", script, (INPUT, TEXT_OUT), r"cannot write .*ds.*File too large",
                   post=no_partial("ds"), fsize=16384)]
    for script in ("data/shakespeare_char/prepare.py", "data/shakespeare/prepare.py", "data/text/prepare.py"):
        c.append(Case("prepare", f"{script} input not UTF-8", script,
                      (lambda env, work: f"--input={env.non_utf8}", TEXT_OUT), r"latin1.txt.* not UTF-8"))
    for name in ("..", ".", "a/b", ".hidden"):
        c.append(Case("prepare", f"text --name={name}", "data/text/prepare.py", (INPUT, f"--name={name}"), r"--name"))
    OWT = "data/openwebtext/prepare.py"
    c += [Case("prepare", "openwebtext --num_proc=0", OWT, ("--input", lambda e, w: e.text_file, "--num_proc=0",
                                                            "--out_dir", lambda e, w: w / "ds"), r"num_proc"),
          Case("prepare", "openwebtext --batch_mb=0", OWT, ("--input", lambda e, w: e.text_file, "--batch_mb=0",
                                                            "--out_dir", lambda e, w: w / "ds"), r"batch_mb"),
          Case("prepare", "openwebtext --val_fraction=2", OWT, ("--input", lambda e, w: e.text_file,
                                                                "--val_fraction=2", "--out_dir", lambda e, w: w / "ds"),
               r"val_fraction"),
          Case("prepare", "openwebtext out_dir is a file", OWT, ("--input", lambda e, w: e.text_file, "--out_dir",
                                                                  lambda e, w: w / "afile"), r"afile",
               setup=a_file("afile"))]
    # train.py: values that reach torch or an assert, and counts below one
    for arg, expect in (("--learning_rate=-1", "learning_rate"), ("--learning_rate=1e400", "learning_rate"),
                        ("--dropout=1.5", "dropout"), ("--n_head=3", "n_head"), ("--n_head=0", "n_head"),
                        ("--seed=-1", "seed"), ("--n_layer=0", "n_layer"), ("--n_embd=0", "n_embd"),
                        ("--n_cond=0", "n_cond"), ("--warmup_iters=-10", "warmup_iters"),
                        ("--kappa_power=0", "kappa_power"), ("--kappa_power=-2", "kappa_power"),
                        ("--min_lr=-1", "min_lr"), ("--beta2=1.5", "beta2"), ("--grad_clip=-1", "grad_clip"),
                        ("--weight_decay=-0.1", "weight_decay"), ("--lr_decay_iters=-5", "lr_decay_iters"),
                        ("--peak_flops=-1", "peak_flops"),
                        ("--decay_lr=None", "decay_lr cannot be None: give True or False"),
                        ("--batch_size=None", "batch_size cannot be None: give a whole number"),
                        ("--n_embd=1200000000000", r"needs about .* GB .* make the model, batch_size or block_size"),
                        ("--batch_size=100000000", r"needs about .* GB")):
        c.append(Case("train", f"train {arg}", "train.py", train(arg), expect))
    for arg, expect in (("--max_step_exponent=-1", "max_step_exponent"), ("--ema_decay=2.0", "ema_decay")):
        c.append(Case("train", f"student {arg}", "train.py", student(arg), expect))
    c += [Case("train", "config file with a syntax error", "train.py", (lambda e, w: w / "conf.py", *train()),
               r"conf.py.*line 1", setup=config_file("n_layer = = 2\n")),
          Case("train", "config file that raises", "train.py", (lambda e, w: w / "conf.py", *train()),
               r"conf.py.*ZeroDivisionError", setup=config_file("n_layer = 1 // 0\n")),
          Case("train", "train.bin ids outside the vocabulary, between sampled runs", "train.py",
               train(data=lambda env, work: f"--data_dir={env.oov_train}"), r"oov_train/train.bin.* token id"),
          Case("train", "an out_dir another run holds", "train.py", train("--max_iters=1"),
               r"out is in use by another training run", setup=out_dir_in_use)]
    for source in ("mask", "uniform"):
        c.append(Case("train", f"divergence, {source} source", "train.py",
                      train(f"--source={source}", "--learning_rate=1e4", "--eval_interval=1", "--warmup_iters=0"),
                      r"training diverged", post=diverged))
    # sample.py: crafted checkpoints, prompts, temperatures
    CRAFTED = lambda env, work: f"--ckpt={work / 'crafted.pt'}"  # noqa: E731

    def drop(key):
        return lambda ck: ck.pop(key)
    c += [Case("sample", "checkpoint without kind", "sample.py", (CRAFTED,),
               r"crafted.pt.*not a readable checkpoint", setup=crafted(drop("kind"))),
          Case("sample", "checkpoint without model_config", "sample.py", (CRAFTED,),
               r"crafted.pt.*not a readable checkpoint", setup=crafted(drop("model_config"))),
          Case("sample", "checkpoint without weights", "sample.py", (CRAFTED,),
               r"crafted.pt.*not a readable checkpoint", setup=crafted(drop("model"))),
          Case("sample", "checkpoint without config", "sample.py", (CRAFTED,),
               r"crafted.pt.*not a readable checkpoint", setup=crafted(drop("config"))),
          Case("sample", "checkpoint whose shapes do not match its weights", "sample.py",
               (CRAFTED,), r"crafted.pt.*not a readable checkpoint",
               setup=crafted(lambda ck: ck["model_config"].update(n_embd=48))),
          Case("sample", "checkpoint with n_head not dividing n_embd", "sample.py",
               (CRAFTED,), r"crafted.pt.*not a readable checkpoint",
               setup=crafted(lambda ck: ck["model_config"].update(n_head=3))),
          Case("sample", "checkpoint meta without stoi", "sample.py", (CRAFTED,),
               r"crafted.pt.*not a readable checkpoint", setup=crafted(lambda ck: ck["meta"].pop("stoi"))),
          Case("sample", "checkpoint with an extra model_config key", "sample.py",
               (CRAFTED,), r"crafted.pt.*not a readable checkpoint",
               setup=crafted(lambda ck: ck["model_config"].update(n_experts=4))),
          Case("sample", "checkpoint with a kind that is not a string", "sample.py",
               (CRAFTED,), r"crafted.pt.*not a readable checkpoint",
               setup=crafted(lambda ck: ck.update(kind=["dfm"]))),
          Case("sample", "--start=FILE: not UTF-8", "sample.py",
               (ckpt("dfm"), lambda e, w: f"--start=FILE:{e.non_utf8}"), r"latin1.txt.*UTF-8"),
          Case("sample", "--temperature=1e400", "sample.py", (ckpt("dfm"), "--temperature=1e400"), r"temperature"),
          Case("sample", "--temperature=1e-40 (AR)", "sample.py", (ckpt("ar"), "--temperature=1e-40"),
               r"temperature must be a finite number of at least 0.0001 \(the greedy limit\)"),
          Case("sample", "--first_temperature=1e-30", "sample.py", (ckpt("dfm"), "--first_temperature=1e-30"),
               r"first_temperature must be 0 \(off\) or"),
          Case("sample", "--top_k=-1 (AR)", "sample.py", (ckpt("ar"), "--top_k=-1"), r"top_k"),
          Case("sample", "--seed=-1", "sample.py", (ckpt("dfm"), "--seed=-1"), r"seed"),
          Case("sample", "--num_samples=1e9 at once", "sample.py", (ckpt("dfm"), "--num_samples=1000000000"),
               r"samples of \d+ tokens need about .* GB .*: draw fewer at once"),
          Case("sample", "--html at the checkpoint itself", "sample.py", (ckpt("dfm"), lambda e, w: f"--html={e.dfm}"),
               r"holds something other than a html report, which is not replaced"),
          Case("sample", "--schedule and --steps disagree", "sample.py", (ckpt("dfm"), "--schedule=1/2,1/2", "--steps=4"),
               r"--schedule has 2 step sizes but --steps=4"),
          Case("sample", "--schedule not summing to 1", "sample.py", (ckpt("dfm"), "--schedule=1/2,1/4"),
               r"summing to 1"),
          Case("sample", "--schedule with a zero step", "sample.py", (ckpt("dfm"), "--schedule=1,0"), r"in \(0, 1\]"),
          Case("sample", "--schedule not numbers", "sample.py", (ckpt("dfm"), "--schedule=half,half"), r"step sizes"),
          Case("sample", "--schedule=coarse-to-fine at 64 steps", "sample.py", (ckpt("dfm"), "--schedule=coarse-to-fine"),
               r"coarse-to-fine is defined for --steps=4, 8 or 16"),
          Case("sample", "--html in a missing folder", "sample.py", (ckpt("dfm"), lambda e, w: f"--html={w}/no/x.html"),
               r"html")]
    # eval.py: outputs checked at start, held-out data and judges of another vocabulary
    elbo = lambda *extra: ("--mode=elbo", dfm, "--num_batches=1", "--batch_size=2", "--device=cpu", *extra)  # noqa
    quality = lambda *extra: ("--mode=quality", dfm, "--steps_list=1", "--num_samples=2", "--batch_size=2",  # noqa
                              "--length=8", "--device=cpu", *extra)
    c += [Case("eval", "--out_json in a missing folder", "eval.py", elbo(lambda e, w: f"--out_json={w}/no/r.json"),
               r"out_json"),
          Case("eval", "--out_json under a file", "eval.py", elbo(lambda e, w: f"--out_json={w}/afile/r.json"),
               r"out_json", setup=a_file("afile")),
          Case("eval", "--out_json in a read-only folder", "eval.py", elbo(lambda e, w: f"--out_json={w}/ro/r.json"),
               r"out_json.*Permission denied", setup=read_only("ro"),
               skip="root ignores permissions" if IS_ROOT else None),
          Case("eval", "--out_png in a missing folder", "eval.py",
               quality(lambda e, w: f"--judge={e.ar}", lambda e, w: f"--out_png={w}/no/p.png"), r"out_png"),
          Case("eval", "val.bin ids outside the vocabulary", "eval.py", elbo(lambda e, w: f"--data_dir={e.oov_val}"),
               r"oov_val/val.bin.* token id"),
          Case("eval", "--data_dir of another vocabulary of the same size", "eval.py",
               elbo(lambda e, w: f"--data_dir={e.other_vocab}"), r"vocabulary"),
          Case("eval", "a judge of another vocabulary of the same size", "eval.py",
               quality(lambda e, w: f"--judge={e.other_judge}"), r"vocabulary"),
          Case("eval", "--temperature=1e400", "eval.py", quality(lambda e, w: f"--judge={e.ar}", "--temperature=1e400"),
               r"temperature"),
          Case("eval", "--seed=-1", "eval.py", elbo("--seed=-1"), r"seed"),
          Case("eval", "--previous a JSON list", "eval.py",
               quality(lambda e, w: f"--judge={e.ar}", lambda e, w: f"--previous={w}/list.json"),
               r"list.json is not a quality evaluation", setup=lambda e, w: (w / "list.json").write_text("[1, 2]")),
          Case("eval", "--out_json at a checkpoint", "eval.py", elbo(lambda e, w: f"--out_json={e.dfm}"),
               r"json report, which is not replaced: pick another path, or replace it with --overwrite=True"),
          Case("eval", "--out_png at a meta.json", "eval.py",
               quality(lambda e, w: f"--judge={e.ar}", lambda e, w: f"--out_png={w}/meta.json"),
               r"holds something other than a png report", setup=lambda e, w: (w / "meta.json").write_text("{}")),
          Case("eval", "--num_samples with --mode=elbo", "eval.py", elbo("--num_samples=64"),
               r"--num_samples only apply to --mode=quality, not --mode=elbo"),
          Case("eval", "--student=,", "eval.py", quality(lambda e, w: f"--judge={e.ar}", "--student=,"),
               r"--student=, has an empty entry")]
    # bench.py
    bench = lambda mode, *extra: (f"--mode={mode}", "--device=cpu", "--repeats=1", "--warmup=0",  # noqa: E731
                                  "--overhead_cases=5:8", "--student_steps=2", *extra)
    c += [Case("bench", "--n_head=3", "bench.py", bench("syncs", "--n_head=3"), r"n_head"),
          Case("bench", "--large_n_head=5", "bench.py", bench("study", "--large_n_head=5"), r"large_n_head"),
          Case("bench", "--threads=-1", "bench.py", bench("study", "--threads=-1"), r"threads"),
          Case("bench", "--out_json under a file", "bench.py",
               bench("study", lambda e, w: f"--out_json={w}/afile/r.json"), r"out_json", setup=a_file("afile")),
          Case("bench", "--overhead_cases=0:0", "bench.py", bench("syncs", "--overhead_cases=0:0"),
               r"overhead_cases"),
          Case("bench", "--vocab_size=0", "bench.py", bench("study", "--vocab_size=0"), r"vocab_size")]
    return c


CASES = _cases()


def run_case(env, case, work):
    """(verdict, last stderr line, problems): the case run in its own folder work."""
    work.mkdir(parents=True)
    if case.setup:
        case.setup(env, work)
    args = [a(env, work) if callable(a) else a for a in case.args]
    before, repo_before = snapshot(work), top_level(env.root)
    try:
        code, _, err = run(env.root, case.script, *args, fsize=case.fsize)
    finally:
        for ro in work.glob("ro"):
            os.chmod(ro, 0o700)
    problems = []
    if top_level(env.root) != repo_before:
        problems.append("the repository's top level or data/ changed")
    if case.post:
        try:
            case.post(env, work)
        except AssertionError as e:
            problems.append(f"post-check: {e}")
    elif snapshot(work) != before:
        problems.append("files changed")
    return verdict(code, err), last_line(err), problems, err


# ----------------------------------------------------------------------------- pytest

try:
    import pytest
except ImportError:  # the harness runs without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="module")
    def env(tmp_path_factory):
        return build_env(HERE.parent, tmp_path_factory.mktemp("bad_input"))

    @pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.name}" for c in CASES])
    def test_bad_input_is_one_line_and_changes_nothing(env, case, tmp_path):
        if case.skip:
            pytest.skip(case.skip)
        kind, line, problems, err = run_case(env, case, tmp_path / "work")
        assert kind == "one-line error", err[-3000:]
        assert re.search(case.expect, line), line
        assert not problems, (problems, line)


# ----------------------------------------------------------------------------- the harness

def main(argv):
    global SUBPROCESS
    root = next((a.split("=", 1)[1] for a in argv if a.startswith("--root=")), str(HERE.parent))
    SUBPROCESS = SUBPROCESS or "--subprocess" in argv
    verbose = "-v" in argv
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    counts = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        # a copy of the checkout: a case that fails the old way (--name=..) writes into the repository
        checkout = Path(tmp) / "checkout"
        shutil.copytree(root, checkout, ignore=shutil.ignore_patterns(".git", "*.bin", "out*", "__pycache__"))
        env = build_env(checkout, Path(tmp) / "env")
        for i, case in enumerate(CASES):
            if case.skip:
                counts[case.kind, "skipped"] += 1
                continue
            kind, line, problems, _ = run_case(env, case, Path(tmp) / f"case{i}")
            if kind == "one-line error" and not re.search(case.expect, line):
                problems.append(f"not the expected error ({case.expect})")
            counts[case.kind, kind] += 1
            counts[case.kind, "files or message wrong"] += bool(problems) and kind == "one-line error"
            if verbose or kind != "one-line error" or problems:
                print(f"{case.kind:8} {kind:15} {case.name}: {line[:150]}{' | ' + '; '.join(problems) if problems else ''}")
    kinds = list(dict.fromkeys(c.kind for c in CASES))
    verdicts = ["one-line error", "traceback", "silent exit 0", "other", "skipped", "files or message wrong"]
    print(f"\n{root} (copied): {len(CASES)} cases in {time.time() - start:.0f} s ({'subprocess' if SUBPROCESS else 'fork'})")
    print("| kind | " + " | ".join(verdicts) + " |\n|" + "---|" * (len(verdicts) + 1))
    for k in kinds + ["all"]:
        row = [sum(counts[kk, v] for kk in (kinds if k == "all" else [k])) for v in verdicts]
        print(f"| {k} | " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
