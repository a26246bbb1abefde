"""The project state machine: draft → open (prompting and voting) → closed → approved."""

from __future__ import annotations

from bot.errors import InvalidState

DRAFT, OPEN, CLOSED, APPROVED = "draft", "open", "closed", "approved"

_ALLOWED = {
    DRAFT: {OPEN},
    OPEN: {CLOSED},
    CLOSED: {OPEN, APPROVED},  # re-opening voting is allowed until the cut is approved
    APPROVED: set(),
}


def check_transition(current: str, new: str) -> None:
    """Raise ``InvalidState`` unless ``current → new`` is allowed."""
    if new not in _ALLOWED.get(current, set()):
        raise InvalidState(f"This project is {current}; it cannot go to {new}.")


def accepts_prompts(state: str) -> bool:
    return state == OPEN


def accepts_votes(state: str) -> bool:
    return state == OPEN
