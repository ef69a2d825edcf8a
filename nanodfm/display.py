"""Showing how a sample was decoded: decode-order colours, frames, an HTML page.

docs/method.md section 4: the sampler returns last_change (L,), the step in [0, S-1] at which each
position last took a new value (-1 for prompt positions); each token is coloured by it, from blue
(step 0) to yellow (step S-1), rising in lightness so that order reads even in greyscale, legible on
a dark background; the prompt is dim. A frame is the sequence part-way through sampling, a position
still MASK drawn as MASK_CHAR. Text is cut into pieces of valid UTF-8: a GPT-2 token can end inside a
character (an emoji is often 2-3 tokens), so its bytes join the next tokens' until the character is
whole, and the piece takes the latest step of its tokens.
"""

import codecs
import html

MASK_CHAR = "▒"
# (position along the ramp, RGB): blue -> teal -> green -> yellow, rising lightness
RAMP = [(0.0, (70, 110, 255)), (0.35, (30, 180, 210)), (0.7, (120, 210, 90)), (1.0, (250, 225, 40))]
RESET, DIM = "\x1b[0m", "\x1b[2m"


def step_rgb(step, steps):
    """Colour of a token last changed at `step` of `steps` (0 -> blue, steps-1 -> yellow)."""
    f = step / (steps - 1) if steps > 1 else 1.0
    (f0, c0), (f1, c1) = next(pair for pair in zip(RAMP, RAMP[1:]) if f <= pair[1][0])
    w = (f - f0) / (f1 - f0)
    return tuple(round(a + w * (b - a)) for a, b in zip(c0, c1))


def marks(steps, n=16):
    """At most n evenly spaced steps of 0..steps-1, the first and the last among them (legends, frames)."""
    n = min(n, steps)
    return sorted({round(k * (steps - 1) / (n - 1)) if n > 1 else 0 for k in range(n)})


def pieces(ids, last_change, tokenizer):
    """Cut ids (L,) into [(text, step)]: valid text per piece, the latest step of its tokens; a MASK id
    (vocab_size) becomes MASK_CHAR, bytes that never form a character U+FFFD (as in tokenizer.decode)."""
    out, pending, decoder = [], [], codecs.getincrementaldecoder("utf-8")(errors="replace")
    encoding = getattr(tokenizer, "encoding", None)  # GPT-2: tiktoken gives the bytes of one token
    token_bytes = encoding.decode_single_token_bytes if encoding else lambda i: tokenizer.decode([i]).encode()

    def flush(text):
        if text:
            out.append((text, max(pending)))
            pending.clear()

    for i, s in zip(map(int, ids), map(int, last_change)):
        mask = i >= tokenizer.vocab_size
        if mask and pending:  # the bytes before a MASK never become a character
            flush(decoder.decode(b"", final=True) or "\ufffd")
        pending.append(s)
        flush(MASK_CHAR if mask else decoder.decode(token_bytes(i)))
    if pending:
        flush(decoder.decode(b"", final=True) or "\ufffd")
    return out


def render(ids, last_change, steps, tokenizer, color=True):
    """The sequence (a sample, or a frame with MASK_CHAR dim) as terminal text, each piece coloured
    by its step; plain text if not color."""
    parts = []
    for text, s in pieces(ids, last_change, tokenizer):
        if not color:
            parts.append(text)
        elif s < 0 or text == MASK_CHAR:
            parts.append(DIM + text + RESET)
        else:
            r, g, b = step_rgb(s, steps)
            # colour each line separately so a pager or a wrapped line never bleeds colour
            parts.append("\n".join(f"\x1b[38;2;{r};{g};{b}m{line}{RESET}" if line else ""
                                   for line in text.split("\n")))
    return "".join(parts)


def legend(steps):
    """One terminal line: 'step 0 ████████ S-1', a block per evenly spaced step, and 'prompt' dim."""
    blocks = "".join("\x1b[38;2;{};{};{}m█".format(*step_rgb(s, steps)) for s in marks(steps))
    return f"decoded at step 0 {blocks}{RESET} {steps - 1}   {DIM}prompt{RESET}"


def render_codes(ids, last_change, steps, tokenizer):
    """Colourless decode order: each line of text followed by a line of step codes, one under each
    character: the step if steps <= 10, else the tenth of the run (0-9); '-' marks the prompt."""
    chars = [(ch, "-" if s < 0 else str(s if steps <= 10 else 10 * s // steps))
             for text, s in pieces(ids, last_change, tokenizer) for ch in text]
    text, codes = "".join(ch for ch, _ in chars), "".join(ch if ch == "\n" else code for ch, code in chars)
    body = "\n".join(f"{t}\n{c}" if t else "" for t, c in zip(text.split("\n"), codes.split("\n")))
    unit = "step" if steps <= 10 else f"tenth of the {steps} steps"
    return f"{body}\n(digits: the {unit} at which each character was decoded; '-': prompt)"


def _hex(step, steps):
    return "#{:02x}{:02x}{:02x}".format(*step_rgb(step, steps))


def html_page(sections, tokenizer, title="nanodfm: decode order"):
    """A standalone HTML page, inline CSS only. sections: [(caption, ids (L,), last_change (L,), steps)];
    every piece is a <span> coloured by its step, with title="step k"."""
    body = []
    for caption, ids, last_change, steps in sections:
        spans = "".join(f'<span class="prompt" title="prompt">{html.escape(text)}</span>' if s < 0 else
                        f'<span style="color:{_hex(s, steps)}" title="step {s}">{html.escape(text)}</span>'
                        for text, s in pieces(ids, last_change, tokenizer))
        keys = "".join(f'<span class="key" style="background:{_hex(s, steps)}" title="step {s}"></span>'
                       for s in marks(steps))
        body.append(f'<h2>{html.escape(caption)}</h2>\n<p class="legend">step 0 {keys} step {steps - 1} '
                    f'<span class="prompt">prompt</span></p>\n<pre>{spans}</pre>')
    style = ("body{background:#16181d;color:#d8d8d8;font-family:sans-serif;margin:24px;max-width:900px}"
             "h1{font-size:20px}h2{font-size:15px;font-weight:normal;color:#aaa;margin:20px 0 4px}"
             "pre{white-space:pre-wrap;font-family:monospace;font-size:15px;line-height:1.4;"
             "background:#0d0e11;padding:10px;border-radius:4px;margin:0}"
             ".prompt{color:#888}.legend{font-size:13px;margin:4px 0}"
             ".key{display:inline-block;width:12px;height:12px;vertical-align:middle}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
            f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p>Each token is coloured by the sampling step at which it last "
            f"changed (hover for the step).</p>\n" + "\n".join(body) + "\n</body>\n</html>\n")
