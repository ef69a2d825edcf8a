"""Decode order, frames and the HTML page: what they record is what the sampler did."""

import html.parser
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
import torch

from nanodfm.config import UsageError
from nanodfm.display import MASK_CHAR, html_page, pieces, render, render_codes
from nanodfm.path import ProbPath
from nanodfm.sampler import sample
from nanodfm.tokenizer import CharTokenizer, GPT2Tokenizer

CHARS = "\n !&',/<>\"?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def char_tokenizer(chars=CHARS):
    return CharTokenizer({c: i for i, c in enumerate(chars)}, {i: c for i, c in enumerate(chars)})


def gpt2_tokenizer():
    try:
        return GPT2Tokenizer()
    except UsageError as e:
        pytest.skip(str(e))


class FakeDenoiser(torch.nn.Module):
    """Fixed random logits per position: a deterministic stand-in for a trained model."""

    def __init__(self, vocab_size, block_size, seed=0):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size, block_size=block_size, step_conditioned=False)
        self.logits = torch.randn(block_size, vocab_size, generator=torch.Generator().manual_seed(seed)) * 3

    def forward(self, x, t, h=None, positions=None):
        logits = self.logits[: x.shape[1]].expand(x.shape[0], -1, -1)  # (B, L, V)
        return logits if positions is None else logits[positions]


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("steps", [1, 8, 64])
def test_last_change_is_a_step(source, steps):
    model = FakeDenoiser(len(CHARS), 48)
    x, last_change = sample(model, ProbPath(len(CHARS), source), 3, 48, steps, generator=torch.Generator().manual_seed(1))
    assert last_change.min() >= 0 and last_change.max() <= steps - 1
    assert (x < len(CHARS)).all()


@pytest.mark.parametrize("method", ["cumulative", "euler"])
def test_mask_source_decodes_each_position_exactly_once(method):
    V, L, steps = len(CHARS), 64, 16
    frames = []
    x, last_change = sample(FakeDenoiser(V, L), ProbPath(V, "mask"), 4, L, steps, method,
                            generator=torch.Generator().manual_seed(2), on_step=lambda s, x, last_change: frames.append(x.clone()))
    assert len(frames) == steps
    history = torch.stack([torch.full_like(x, ProbPath(V).mask_id)] + frames)  # (S + 1, B, L)
    changes = history[1:] != history[:-1]
    assert (changes.sum(0) == 1).all()  # once, from MASK to its final token
    assert torch.equal(changes.int().argmax(0), last_change)  # ...at the recorded step
    assert torch.equal(frames[-1], x)


def test_pieces_of_chars_are_one_per_token():
    tok = char_tokenizer()
    ids = tok.encode("Hi <&>\n'ok'")
    got = pieces(ids, range(len(ids)), tok)
    assert [t for t, _ in got] == list("Hi <&>\n'ok'") and [s for _, s in got] == list(range(len(ids)))


def test_gpt2_pieces_are_valid_text_and_take_the_latest_step():
    tok = gpt2_tokenizer()
    text = "naïve café 🙂 日本語 <b>&amp;</b>\n\tok"
    ids = tok.encode(text)
    got = pieces(ids, range(len(ids)), tok)
    assert "".join(t for t, _ in got) == text and "\ufffd" not in text
    emoji = [(t, s) for t, s in got if "🙂" in t]
    assert len(emoji) == 1
    # the emoji spans several tokens: its piece is coloured by the last of them
    last_emoji_token = max(i for i in range(len(ids)) if "🙂" in tok.decode(ids[: i + 1]) and
                           "🙂" not in tok.decode(ids[:i]))
    assert emoji[0][1] == last_emoji_token
    # any ids at all (half characters included) concatenate to exactly what decode gives
    rand = torch.randint(0, tok.vocab_size, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    assert "".join(t for t, _ in pieces(rand, [0] * 200, tok)) == tok.decode(rand)


def test_frame_draws_one_placeholder_per_masked_token():
    for tok in (char_tokenizer(), gpt2_tokenizer()):
        ids = tok.encode("To be, or not") + [ProbPath(tok.vocab_size).mask_id] * 3 + tok.encode(" to be")
        frame = render(ids, [0] * len(ids), 4, tok, color=False)
        assert frame == "To be, or not" + MASK_CHAR * 3 + " to be"


def test_render_colours_by_step_and_dims_the_prompt():
    tok = char_tokenizer()
    ids = tok.encode("AB\nC")
    out = render(ids, [-1, 0, 3, 3], 4, tok, color=True)
    assert "\x1b[2mA" in out and "\x1b[38;2;70;110;255mB" in out and "\x1b[38;2;250;225;40mC" in out
    assert render_codes(ids, [-1, 0, 3, 3], 4, tok).splitlines()[:4] == ["AB", "-0", "C", "3"]


class TagChecker(html.parser.HTMLParser):
    """Collects the text inside <pre> and every <span title>, and checks that tags nest."""

    VOID = {"meta", "br"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.pre_text, self.titles = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag == "span" and "pre" in self.stack:
            self.titles.append(dict(attrs)["title"])

    def handle_startendtag(self, tag, attrs):  # <meta .../>: opened and closed at once
        pass

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        if "pre" in self.stack:
            self.pre_text.append(data)


def test_html_is_well_formed_and_holds_every_character():
    tok = char_tokenizer()
    V, L, steps = tok.vocab_size, 40, 8
    x, last_change = sample(FakeDenoiser(V, L, seed=3), ProbPath(V, "mask"), 1, L, steps, generator=torch.Generator().manual_seed(0))
    prompt_text = "<b>\"Tom & Jerry's\"</b>\n"
    prompt = torch.tensor(tok.encode(prompt_text))
    ids = torch.cat([prompt, x[0]]).tolist()
    lc = [-1] * len(prompt) + last_change[0].tolist()
    page = html_page([("a <caption> & more", ids, lc, steps)], tok, title="t <&>")
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    assert "".join(checker.pre_text) == tok.decode(ids)  # every character, in order, unescaped
    assert checker.titles.count("prompt") == len(prompt)
    assert sorted(checker.titles[len(prompt):]) == sorted(f"step {s}" for s in last_change[0].tolist())
    root = ET.fromstring(page.split("\n", 1)[1])  # also well-formed XML (after the doctype line)
    assert "".join(root.find("body/pre").itertext()) == tok.decode(ids)
    assert "white-space:pre-wrap" in page and "<script" not in page and "http" not in page
