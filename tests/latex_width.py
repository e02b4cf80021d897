"""A rough width, in characters, of each line of a LaTeX formula as KaTeX renders it.

Used to keep the formulas shown in the 380 px sidebar (``st.latex``) narrow enough:
about 45 characters of rendered math fit on a line. Deliberately a little generous
(sub- and superscripts count as full characters, each relation or binary operator
as two for its spacing, 2em between two column pairs of ``aligned``), so a formula
that passes here fits there. Calibrated on the one known overflow: Adam's formula
with v and s side by side (47 here) was cut off on the right.
"""

from __future__ import annotations

import re

_ZERO_WIDTH = (r"\left", r"\right", r"\,", r"\!", r"\hat", r"\displaystyle")
_OPERATOR = re.compile(r":=|\\le|\\ge|\\in|\\cdot|[=+<>-]")


def _group(text: str, start: int) -> tuple[str, int]:
    """The contents of the brace group opening at ``text[start]``, and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i], i + 1
    raise ValueError(f"unbalanced braces in {text!r}")


def width(math: str) -> float:
    """Rendered width of one line of math (no ``\\\\`` in it)."""
    total, i = 0.0, 0
    while i < len(math):
        if math.startswith(r"\frac", i):
            numerator, i = _group(math, i + 5)
            denominator, i = _group(math, i)
            total += max(width(numerator), width(denominator))
        elif math.startswith(r"\sqrt", i):
            radicand, i = _group(math, i + 5)
            total += 1 + width(radicand)
        elif math.startswith((r"\text", r"\operatorname"), i):
            words, i = _group(math, math.index("{", i))
            total += len(words.replace("\\", ""))
        elif math.startswith(r"\quad", i):
            total, i = total + 2, i + 5
        elif any(math.startswith(command, i) for command in _ZERO_WIDTH):
            i += next(len(c) for c in _ZERO_WIDTH if math.startswith(c, i))
        elif (match := _OPERATOR.match(math, i)) is not None:
            total, i = total + 2, match.end()
        elif math[i] == "\\":  # \alpha, \beta, \varepsilon, \{, \#: one glyph
            match = re.compile(r"\\([A-Za-z]+|.)").match(math, i)
            total, i = total + 1, match.end()
        elif math[i] in "{}^_& \n":
            i += 1
        else:
            total, i = total + 1, i + 1
    return total


#: Between two column pairs of ``aligned`` (``a &= b & c &= d``) KaTeX leaves 2em.
PAIR_GAP = 4


def line_widths(formula: str) -> list[float]:
    """The rendered width of every line of ``formula`` (lines split at ``\\\\``)."""
    body = re.sub(r"\\(begin|end)\{aligned\}", "", formula)
    return [width(line) + PAIR_GAP * (line.count("&") // 2) for line in body.split(r"\\")]
