"""train.py under DistributedDataParallel: two CPU processes (gloo) end with the same weights."""

import os
import socket

import torch
import torch.multiprocessing as mp

from conftest import ROOT, TINY_MODEL, run_script


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world_size, port, argv, out):
    # the environment torchrun would set
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import sys
    sys.path.insert(0, ROOT)
    import train
    model, ema = train.main(argv)
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    if ema is not None:
        torch.save(ema.state_dict(), os.path.join(out, f"ema{rank}.pt"))


def test_two_processes_train_the_same_weights(char_data, tmp_path):
    out = str(tmp_path / "ddp")
    argv = [f"--data_dir={char_data}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=4", "--eval_interval=2",
            "--gradient_accumulation_steps=2", "--dropout=0.1"]
    mp.spawn(worker, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    start = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert start["world_size"] == 2 and start["step"] == 4
    for key in a:  # the last checkpoint holds the final weights
        assert torch.equal(a[key], start["model"][key]), key
    # a checkpoint from two processes resumes in one
    result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=6",
                        "--eval_interval=2", "--init_from=resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["step"] == 6


def test_two_processes_distil_with_the_same_teacher(char_data, tmp_path):
    """The student's new step-size layers and its EMA teacher must agree across ranks too."""
    parent = str(tmp_path / "dfm")
    result = run_script("train.py", f"--data_dir={char_data}", f"--out_dir={parent}", *TINY_MODEL, "--max_iters=1",
                        "--eval_interval=1")
    assert result.returncode == 0, result.stderr[-2000:]
    argv = [f"--data_dir={char_data}", f"--out_dir={tmp_path / 'student'}", *TINY_MODEL, "--kind=student",
            f"--init_from={parent}/ckpt.pt", "--max_step_exponent=3", "--ema_decay=0.5", "--max_iters=3",
            "--eval_interval=3"]
    mp.spawn(worker, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    for name in ("rank", "ema"):
        a, b = (torch.load(tmp_path / f"{name}{r}.pt") for r in (0, 1))
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
