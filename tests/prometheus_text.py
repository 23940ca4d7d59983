"""A strict reader of the Prometheus text exposition format 0.0.4, for the metrics tests.

Independent of daemon.metrics on purpose (it is the format's reader, the daemon its writer): it
refuses anything the format does not allow (a sample before its TYPE, a repeated family, a bad
escape, a missing final newline), so a test that parses a scrape also checks its syntax.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final

Labels = frozenset[tuple[str, str]]

NAME: Final = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_COMMENT: Final = re.compile(rf"# (HELP|TYPE) ({NAME}) ?(.*)")
_SAMPLE: Final = re.compile(rf"({NAME})(?:\{{(.*)\}})? (\S+)")
_LABEL: Final = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
_NUMBER: Final = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_UNESCAPE: Final = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
KINDS: Final = ("counter", "gauge", "summary", "histogram", "untyped")


@dataclass
class ParsedFamily:
    name: str
    kind: str
    help: str = ""
    samples: dict[Labels, float] = field(default_factory=dict)

    def value(self, **labels: str) -> float:
        """The sample with exactly these labels."""
        return self.samples[frozenset(labels.items())]


def parse(text: str) -> dict[str, ParsedFamily]:
    """Every family of a scrape by name; AssertionError naming the line on anything malformed."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, ParsedFamily] = {}
    helps: dict[str, str] = {}
    current: ParsedFamily | None = None
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        comment = _COMMENT.fullmatch(line)
        if comment:
            what, name, rest = comment.groups()
            if what == "HELP":
                assert name not in helps, f"{where}: a second HELP"
                helps[name] = _unescape_help(rest)
            else:
                assert name not in families, f"{where}: a second TYPE (families must not repeat)"
                assert rest in KINDS, f"{where}: unknown type"
                current = families[name] = ParsedFamily(name, rest)
            continue
        assert not line.startswith("#"), f"{where}: a comment that is neither HELP nor TYPE"
        sample = _SAMPLE.fullmatch(line)
        assert sample, f"{where}: not a sample"
        name, label_text, value = sample.groups()
        assert current is not None, f"{where}: a sample before any TYPE"
        assert name == current.name, f"{where}: a sample outside its family's TYPE"
        labels = _labels(label_text or "", where)
        assert labels not in current.samples, f"{where}: a repeated series"
        current.samples[labels] = _value(value, where)
    for name, text_of_help in helps.items():
        assert name in families, f"HELP for {name} without its TYPE"
        families[name].help = text_of_help
    return families


def _labels(text: str, where: str) -> Labels:
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        assert match, f"{where}: bad label set at {text[position:]!r}"
        raw = match.group(2)
        value = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], raw)
        pairs.append((match.group(1), value))
        position = match.end()
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"{where}: a label repeated"
    return frozenset(pairs)


def _value(text: str, where: str) -> float:
    specials = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}
    if text in specials:
        return specials[text]
    assert _NUMBER.fullmatch(text), f"{where}: not a number"
    return float(text)


def _unescape_help(text: str) -> str:
    return re.sub(r"\\[\\n]", lambda m: _UNESCAPE[m.group(0)], text)
