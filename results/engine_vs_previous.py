"""The engine against the sampler it was split from (commit 48163bb), interleaved in one process.

    python results/engine_vs_previous.py results/speed/engine-vs-previous.json

Builds that commit's package from git under another name, gives both samplers the same student's
weights and seed, checks that they draw the same samples, and times them in turns (11 rounds, batch
1, one thread): the median of the per-round ratios engine / previous with its quartiles.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREVIOUS = "48163bb"


def previous_package(folder):
    os.makedirs(os.path.join(folder, "nanodfm_previous"))
    names = subprocess.run(["git", "ls-tree", "--name-only", PREVIOUS, "nanodfm/"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in names:
        text = subprocess.run(["git", "show", f"{PREVIOUS}:{name}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
        with open(os.path.join(folder, "nanodfm_previous", os.path.basename(name)), "w") as f:
            f.write(text.replace("from nanodfm import", "from nanodfm_previous import")
                    .replace("from nanodfm.", "from nanodfm_previous."))
    sys.path.insert(0, folder)


def main(out):
    torch.set_num_threads(1)
    sys.path.insert(0, ROOT)
    previous_package(tempfile.mkdtemp())
    from nanodfm_previous import sampler as previous
    from nanodfm_previous.model import ModelConfig as PreviousConfig, Transformer as PreviousTransformer
    from nanodfm import engine
    from nanodfm.model import ModelConfig, Transformer
    from nanodfm.path import ProbPath
    rows = []
    for V, L in ((65, 1024), (50257, 256)):
        for source in ("mask", "uniform"):
            for steps in (4, 8):
                cfg = dict(vocab_size=V, block_size=L, n_layer=4, n_head=4, n_embd=128, step_conditioned=True)
                torch.manual_seed(0)
                new = Transformer(ModelConfig(**cfg)).eval()
                old = PreviousTransformer(PreviousConfig(**cfg)).eval()
                old.load_state_dict(new.state_dict())
                path = ProbPath(V, source)
                run_old = lambda: previous.sample(old, 1, L, steps, source, step_size_input=True,
                                                  generator=torch.Generator().manual_seed(0))[0]
                run_new = lambda: engine.sample(new, path, 1, L, steps, generator=torch.Generator().manual_seed(0))[0]
                same = torch.equal(run_old(), run_new())
                ratios, t_old, t_new = [], [], []
                for _ in range(11):
                    start = time.perf_counter()
                    run_old()
                    t_old.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    run_new()
                    t_new.append(time.perf_counter() - start)
                    ratios.append(t_new[-1] / t_old[-1])
                ratios.sort()
                median = lambda v: sorted(v)[len(v) // 2]
                rows.append({"vocab_size": V, "length": L, "source": source, "steps": steps, "same_samples": same,
                             "previous_s": median(t_old), "engine_s": median(t_new), "engine_over_previous": median(ratios),
                             "quartiles": [ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]]})
                print(rows[-1], flush=True)
    with open(out, "w") as f:
        json.dump({"previous": PREVIOUS, "rounds": 11, "threads": 1, "batch_size": 1, "rows": rows}, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "engine-vs-previous.json")
