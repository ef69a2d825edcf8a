"""Make assets/decode_order.html: a few-step student at 8 steps beside its DFM teacher at 64 steps.

    python assets/decode_order.py out-shakespeare-char-cpu/ckpt.pt out-shakespeare-char-cpu-student/ckpt.pt assets/decode_order.html

Each token is coloured by the step at which it was decoded (nanodfm/display.py); the last section
fills two holes between given lines.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from nanodfm import checkpoint  # noqa: E402
from nanodfm.display import html_page  # noqa: E402
from nanodfm.engine import sample  # noqa: E402
from nanodfm.path import ProbPath  # noqa: E402
from nanodfm.tokenizer import load_tokenizer  # noqa: E402
from sample import encode_prompt, prompt_tensor  # noqa: E402

INFILL = "ROMEO:\n____\n\nJULIET:\n____"


def main(dfm_path, student_path, out_path, seed=1337):
    sections, tokenizer = [], None
    runs = [(dfm_path, 64, ""), (student_path, 8, ""), (student_path, 8, INFILL)]
    for path, steps, start in runs:
        ck = checkpoint.load(path, kinds=("dfm", "student"))
        student = ck["kind"] == "student"
        model = checkpoint.build_model(ck, "ema" if student else "model").eval()
        tokenizer = load_tokenizer(ck["meta"])
        prompt_ids = encode_prompt(start, tokenizer, hole_len=20)
        seq_len = len(prompt_ids) if start else model.config.block_size
        x, last_change = sample(model, ProbPath.of(ck), 1, seq_len, steps, prompt=prompt_tensor(prompt_ids, seq_len),
                                generator=torch.Generator().manual_seed(seed))
        what = "FS-DFM student" if student else "DFM"
        infill = ", filling two holes (grey: given text)" if start else ""
        sections.append((f"{what}, {steps} steps{infill}", x[0].tolist(), last_change[0].tolist(), steps))
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(html_page(sections, tokenizer, title="Decode order: 64 DFM steps vs 8 student steps"))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python assets/decode_order.py DFM_CKPT STUDENT_CKPT OUT.html")
    main(*sys.argv[1:4])
