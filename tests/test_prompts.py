from __future__ import annotations

import pytest

from bot.core.prompts import clean_prompt, validate_prompt
from bot.errors import InvalidPrompt


def check(text, **kw):
    return validate_prompt(text, max_chars=kw.pop("max_chars", 600), **kw)


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \n", None])
def test_empty_and_whitespace_only_prompts_are_refused(text):
    with pytest.raises(InvalidPrompt, match="empty"):
        check(text)


def test_zero_width_only_prompt_is_refused_as_invisible():
    with pytest.raises(InvalidPrompt, match="no visible text"):
        check("\u200b\u200c\u200d\ufeff\u2060")


def test_a_20000_character_prompt_is_refused_with_its_length_and_the_limit():
    with pytest.raises(InvalidPrompt) as e:
        check("a" * 20_000)
    assert "20,000 characters" in e.value.message and "600" in e.value.message


def test_control_and_zero_width_characters_are_removed():
    assert clean_prompt("a\x00 cat\u200b on\x1b[31m the\u202e moon\x07") == "a cat on[31m the moon"


def test_newlines_and_runs_of_spaces_collapse():
    assert check("a  neon\n\ncity\t at night ") == "a neon city at night"


def test_blocked_words_match_whole_words_case_insensitively():
    with pytest.raises(InvalidPrompt, match="does not allow"):
        check("A GORE fest", blocked_words=["gore"])
    assert check("gorecki symphony", blocked_words=["gore"]) == "gorecki symphony"


def test_blocked_words_cannot_be_smuggled_with_zero_width_characters():
    with pytest.raises(InvalidPrompt):
        check("go\u200bre", blocked_words=["gore"])


def test_length_is_counted_after_cleaning():
    assert check("x" * 10 + "\u200b" * 1000, max_chars=10) == "x" * 10
