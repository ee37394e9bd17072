"""A griffe extension for the API pages (mkdocs.yml): the docstrings are numpydoc with reST math
and roles, the site renders Markdown. Before a docstring is parsed, ``:math:`x``` becomes
``\\(x\\)`` and a ``.. math::`` block becomes ``\\[ ... \\]`` (both typeset by MathJax through
pymdownx.arithmatex), and ``:func:`~a.b```-style roles become code spans (``b``). The source
files are not changed."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _role(m: re.Match) -> str:
    target = m.group(2).strip()
    return f"`{target.rsplit('.', 1)[-1] if m.group(1) else target}`"


def _blocks(text: str) -> str:
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = _BLOCK.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = m.group("indent"), [m.group("rest")] if m.group("rest").strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i])
            i += 1
        math = textwrap.dedent("\n".join(body)).strip("\n")
        out += [
            "",
            f"{indent}\\[",
            *[f"{indent}{line}" if line else "" for line in math.split("\n")],
            f"{indent}\\]",
            "",
        ]
    return "\n".join(out)


def convert(text: str) -> str:
    """The Markdown form of a reST-flavoured docstring (math and roles only)."""
    text = _blocks(text)
    text = _INLINE_MATH.sub(lambda m: f"\\({m.group(1)}\\)", text)
    return _ROLE.sub(_role, text)


class RstMath(griffe.Extension):
    """Rewrite each object's docstring with :func:`convert` before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
