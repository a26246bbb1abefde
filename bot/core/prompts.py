"""Prompt validation: what a member typed, cleaned, or refused with a specific reason."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from bot.errors import InvalidPrompt

# zero-width and invisible formatting characters that make a prompt look empty or
# smuggle text past word filters
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063"
        "\u2064\ufeff\u00ad\u180e\u202a\u202b\u202c\u202d\u202e"
        "\u2066\u2067\u2068\u2069",
    )
)
_SPACES = re.compile(r"[ \t]+")


def clean_prompt(text: str) -> str:
    """Strip invisible and control characters, normalize width forms and spaces."""
    text = unicodedata.normalize("NFKC", text or "").translate(_INVISIBLE)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\t":
            kept.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(ch)
    return _SPACES.sub(" ", "".join(kept)).strip()


def validate_prompt(text: str | None, *, max_chars: int, blocked_words: Iterable[str] = ()) -> str:
    """Return the cleaned prompt, or raise ``InvalidPrompt`` saying exactly what is wrong."""
    if text is None or not text.strip():
        raise InvalidPrompt(
            "Your prompt is empty. Describe the clip you want, "
            "for example `a neon city at night, slow dolly shot`."
        )
    cleaned = clean_prompt(text)
    if not cleaned:
        raise InvalidPrompt(
            "Your prompt has no visible text once invisible and control characters are removed."
        )
    if len(cleaned) > max_chars:
        raise InvalidPrompt(
            f"Your prompt is {len(cleaned):,} characters long; the limit is "
            f"{max_chars:,}. Shorten it and try again."
        )
    lowered = cleaned.casefold()
    for word in blocked_words:
        w = word.strip().casefold()
        if w and re.search(rf"(?<!\w){re.escape(w)}(?!\w)", lowered):
            raise InvalidPrompt(
                "Your prompt contains a word this server does not allow. Please rephrase it."
            )
    return cleaned
