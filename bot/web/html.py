"""Escaping by default: a template's values are HTML-escaped unless they are ``Safe``.

Members write the prompts, their names and the project titles, so every value a page
shows goes through ``html.escape`` (quotes included, for attributes). Only markup this
module builds is ``Safe``; nothing a member typed ever is.
"""

from __future__ import annotations

import html
from collections.abc import Iterable


class Safe(str):
    """A string that is already HTML (made by ``h`` or ``join`` from escaped parts)."""

    __slots__ = ()

    def __add__(self, other: object) -> Safe:
        return Safe(str.__add__(self, esc(other)))


def esc(value: object) -> Safe:
    """``value`` as text in HTML: escaped, unless it is already ``Safe``."""
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


def h(template: str, **values: object) -> Safe:
    """Fill ``template`` (``str.format`` fields) with ``values``, each escaped."""
    return Safe(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Safe], sep: str = "") -> Safe:
    return Safe(sep.join(esc(p) for p in parts))


def when(condition: object, markup: Safe) -> Safe:
    return markup if condition else Safe("")
