"""The GPT-2 judge path of eval.py, offline: a tiny randomly initialised GPT-2 (transformers'
GPT2Config, no download) saved to a folder, which --judge accepts, scores GPT-2-tokenised samples."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import run_script
from nanodfm import checkpoint, evaluate
from nanodfm.data import write_meta
from nanodfm.model import ModelConfig, Transformer

transformers = pytest.importorskip("transformers", reason="the GPT-2 judge needs `pip install transformers`")
GPT2_META = {"tokenizer": "gpt2", "vocab_size": 50257, "eot": 50256}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpt2_judge")
    torch.manual_seed(0)
    judge = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=16,
                                                                 n_layer=1, n_head=2))
    judge.save_pretrained(tmp / "judge")
    data = tmp / "data"
    data.mkdir()
    g = np.random.default_rng(0)
    for split, n in (("train", 4000), ("val", 2000)):
        g.integers(0, 50257, n, dtype=np.uint16).tofile(data / f"{split}.bin")
    write_meta(data, GPT2_META)
    model = Transformer(ModelConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=16, n_cond=8))
    dfm = tmp / "dfm.pt"
    checkpoint.save(str(dfm), {"kind": "dfm", "model_config": asdict(model.config), "model": model.state_dict(),
                               "ema": None, "meta": GPT2_META, "best_val_loss": 10.0,
                               "config": {"source": "mask", "kappa_power": 1.0, "dataset": "", "data_dir": str(data)}})
    return tmp, judge.eval(), data, dfm


def test_a_local_gpt2_judge_scores_gpt2_samples(world):
    tmp, judge, data, dfm = world
    assert evaluate.is_gpt2(str(tmp / "judge")) and not evaluate.is_gpt2(str(dfm))
    out = tmp / "quality.json"
    result = run_script("eval.py", "--mode=quality", f"--dfm={dfm}", f"--judge={tmp / 'judge'}", "--steps_list=1,2",
                        "--num_samples=4", "--batch_size=4", "--length=8", "--device=cpu", f"--out_json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["name"], r["steps"]) for r in rows] == [("held-out text", None), ("dfm euler", 1), ("dfm euler", 2),
                                                       ("dfm cumulative", 1), ("dfm cumulative", 2)]
    assert all(np.isfinite(r["gen_ppl"]) and r["gen_ppl"] > 1 for r in rows)
    # the held-out row is the judge's perplexity of those windows, computed here again
    ids = evaluate.real_samples(str(data / "val.bin"), 4, 8, seed=1337)
    with torch.no_grad():
        expected = evaluate.generative_perplexity(lambda x: judge(x).logits, ids).double().mean().item()
    assert rows[0]["gen_ppl"] == pytest.approx(expected, rel=1e-5)


def test_a_gpt2_judge_refuses_char_models(world, tmp_path):
    tmp, _, _, _ = world
    model = Transformer(ModelConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=16, n_cond=8))
    chars = {"tokenizer": "char", "vocab_size": 50257, "itos": {i: chr(i + 32) for i in range(50257)}}
    chars["stoi"] = {c: i for i, c in chars["itos"].items()}
    path = tmp_path / "char.pt"
    checkpoint.save(str(path), {"kind": "dfm", "model_config": asdict(model.config), "model": model.state_dict(),
                                "ema": None, "meta": chars, "config": {"source": "mask", "kappa_power": 1.0}})
    result = run_script("eval.py", "--mode=quality", f"--dfm={path}", f"--judge={tmp / 'judge'}", "--steps_list=1",
                        "--num_samples=2", "--length=8", "--device=cpu")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: the judge's vocabulary"), result.stderr
