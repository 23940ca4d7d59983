"""control.sanitize: any untrusted string becomes plainly visible text of bounded width."""

from __future__ import annotations

import unicodedata

import pytest

from control.sanitize import ELLIPSIS, NODE_MARK, node_label, terminal_safe, width

HOSTILE = [
    "\x1b[2J",  # clear the screen
    "\x1b]0;title\x07",  # retitle the window (OSC ... BEL)
    "ok\ntower-0001  online  normal  clear",  # a forged row
    "a\rb\tc\x00d\x7fe\x85f\x9bg",  # C0, DEL, C1 (NEL, CSI)
    "tow\u200ber\u200c\u200d\u2060\ufeff",  # zero-width space, non-joiner, joiner, word joiner, BOM
    "\u202aa\u202bb\u202cc\u202dd\u202ee\u2066f\u2067g\u2068h\u2069",  # bidi embeddings, isolates
    "lone \ud800 surrogate \udfff",
    "line\u2028para\u2029",
    "e\u0301\u0301\u0301",  # stacked combining marks
    "nbsp\u00a0ideographic\u3000",
]


def hidden(text: str) -> list[str]:
    """Characters of text a terminal would not show as one plain glyph."""
    return [
        c
        for c in text
        if unicodedata.category(c)[0] in "CM" or unicodedata.category(c) in ("Zl", "Zp")
    ]


class TestTerminalSafe:
    @pytest.mark.parametrize("text", HOSTILE)
    def test_nothing_hidden_survives(self, text: str) -> None:
        """Controls, bidi, zero-width, surrogates, separators and marks all become escapes."""
        safe = terminal_safe(text, 200)
        assert hidden(safe) == []
        assert "\n" not in safe
        safe.encode("utf-8")  # a lone surrogate would raise here

    def test_escapes_are_readable_and_distinct(self) -> None:
        """Each hidden character shows as its code, so two lookalikes read differently."""
        assert terminal_safe("\x1b[2J", 50) == "\\x1b[2J"
        assert terminal_safe("tow\u200ber", 50) == "tow\\u200ber"
        assert terminal_safe("\u202etower", 50) == "\\u202etower"
        assert terminal_safe("\ud800", 50) == "\\ud800"
        assert terminal_safe("a\U000e0001", 50) == "a\\U000e0001"  # a tag character

    def test_backslash_is_doubled(self) -> None:
        """Literal text `\\u200b` cannot pass for an escaped zero-width space."""
        assert terminal_safe("tow\\u200ber", 50) == "tow\\\\u200ber"
        assert terminal_safe("tow\\u200ber", 50) != terminal_safe("tow\u200ber", 50)

    def test_plain_text_is_unchanged(self) -> None:
        """Words, accents and spaces print as they are."""
        assert terminal_safe("online", 20) == "online"
        assert terminal_safe("café au lait", 20) == "café au lait"

    @pytest.mark.parametrize("max_cells", [1, 2, 5, 17])
    def test_long_text_is_cut_with_an_ellipsis(self, max_cells: int) -> None:
        """A 10 MB string comes back at most max_cells wide, ending in the ellipsis."""
        safe = terminal_safe("x" * 10_000_000, max_cells)
        assert width(safe) == max_cells
        assert safe.endswith(ELLIPSIS)

    def test_cut_never_splits_an_escape(self) -> None:
        """An escape is kept whole or dropped whole at the cut."""
        safe = terminal_safe("ab\u202ecdef", 6)
        assert safe == "ab" + ELLIPSIS
        assert width(safe) <= 6

    def test_wide_characters_count_two_cells(self) -> None:
        """Fullwidth letters take two cells each, so the bound holds on screen."""
        safe = terminal_safe("ａｂｃｄｅ", 5)
        assert safe == "ａｂ" + ELLIPSIS
        assert width(safe) == 5

    def test_text_that_fits_is_not_cut(self) -> None:
        assert terminal_safe("exactly10!", 10) == "exactly10!"

    def test_bound_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="max_cells"):
            terminal_safe("x", 0)


class TestNodeLabel:
    def test_plain_ids_are_shown_as_they_are(self) -> None:
        assert node_label("tower-0001", 40) == "tower-0001"
        assert node_label("site_3.t-9", 40) == "site_3.t-9"

    @pytest.mark.parametrize(
        ("node", "shown"),
        [
            ("tower\u200b-0001", "?tower\\u200b-0001"),
            ("\u202etower-0001", "?\\u202etower-0001"),
            ("t\u043ewer-0001", "?t\\u043ewer-0001"),  # a Cyrillic o
            ("tower 1", "?tower 1"),
            ("tower\\u200b-0001", "?tower\\\\u200b-0001"),
        ],
    )
    def test_other_ids_are_marked_and_escaped(self, node: str, shown: str) -> None:
        """Zero-width, bidi and non-ASCII letters are escaped, and the id is marked."""
        assert node_label(node, 40) == shown
        assert shown.startswith(NODE_MARK)

    def test_lookalikes_never_read_the_same(self) -> None:
        """Every lookalike of tower-0001 shows differently from it and from each other."""
        names = ["tower-0001", "tower\u200b-0001", "\u202etower-0001", "t\u043ewer-0001"]
        assert len({node_label(name, 40) for name in names}) == len(names)

    def test_long_ids_are_bounded(self) -> None:
        assert width(node_label("n" * 60_000, 40)) == 40
