"""Provenance that Tidegate computes itself: which argument values of a call came from untrusted content.

Untrusted content (a tool result the catalog marks `untrusted_output`, a task input field the client
marked untrusted) is reduced to normalised values by kind: email addresses, hosts of URLs and
domains, IBANs and account ids, phone numbers, amounts (digits or words), names, and plain words.
An argument is derived from that content when one of its own values, normalised the same way, is
among them and nothing trusted (the task's request, the tenant's directory) vouches for it. Values
compare by kind, never by substring: `45` in a body does not taint `450`, and `forty-five` does taint `45`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from schemas.tools import CounterpartyKind
from servicekit.identities import identities_of
from servicekit.instruction_passages import instruction_passages

__all__ = [
    "Finding",
    "Provenance",
    "arg_leaves",
    "excerpt",
    "locate",
    "task_input_source",
    "texts_of",
    "values_of",
    "without_paths",
]

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_URL = re.compile(r"(?:https?|ftp)://[^\s<>\"')\]]+", re.IGNORECASE)
_DOMAIN = re.compile(r"\b(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b", re.IGNORECASE)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*\d[A-Za-z0-9_\-]*")
_PHONE = re.compile(r"\+?\d[\d ()./\-]{6,}\d")
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])\d+(?:\.\d+)?")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ \-][A-Z][a-z]+)+\b")
_WORD = re.compile(r"[\w.\-']+")

_UNITS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
}
_TENS = {
    w: 10 * i for i, w in enumerate(["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]) if w != "_"
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORD = "|".join([*_UNITS, *_TENS, *_SCALES])
# A number written in words, as `_word_numbers` reads one ("four hundred and fifty", "forty-five"), to quote where it stands.
_WORDED = re.compile(rf"\b(?:{_NUMBER_WORD})\b(?:(?:[\s-]+|[\s-]+and[\s-]+)\b(?:{_NUMBER_WORD})\b)*", re.IGNORECASE)


def _word_numbers(text: str) -> Iterator[float]:
    """Numbers written in words: "four hundred and fifty" → 450."""
    total = current = 0
    seen = False
    for word in re.findall(r"[a-z]+", text.lower().replace("-", " ")):
        if word in _UNITS or word in _TENS:
            current += _UNITS.get(word, 0) + _TENS.get(word, 0)
            seen = True
        elif word in _SCALES and seen:
            if _SCALES[word] == 100:
                current *= 100
            else:
                total += current * _SCALES[word]
                current = 0
        elif word == "and" and seen:
            continue
        else:
            if seen:
                yield float(total + current)
            total = current = 0
            seen = False
    if seen:
        yield float(total + current)


def _amount(number: float) -> str:
    return f"amount:{number:.2f}"


def values_of(text: str, *, words: bool = True) -> set[str]:
    """The normalised values in a piece of text, each as `kind:value` (plain words too, with `words`)."""
    return set(_values_of(text, words))


_REMEMBERED_TEXT = 512  # the values of texts up to this length are remembered: argument values and fields recur across calls
_DIGIT = re.compile(r"\d")


def _values_of(text: str, words: bool) -> frozenset[str]:
    if len(text) <= _REMEMBERED_TEXT:
        return _short_values_of(text, words)
    return _find_values(text, words)


def _find_values(text: str, words: bool) -> frozenset[str]:
    found: set[str] = set()
    rest = text
    if "@" in text:  # each pattern is run only where the characters it needs are present
        for m in _EMAIL.finditer(text):
            found.add("email:" + m.group(0).lower())
            found.add("host:" + m.group(0).rsplit("@", 1)[1].lower())
        rest = _EMAIL.sub(" ", rest)
    if "://" in rest:
        for m in _URL.finditer(rest):
            host = re.sub(r"^[a-z]+://([^/@]*@)?", "", m.group(0).lower()).split("/")[0].split(":")[0].rstrip(".")
            if host:
                found.add("host:" + host)
        rest = _URL.sub(" ", rest)
    if "." in rest:
        for m in _DOMAIN.finditer(rest):
            if not m.group(0).replace(".", "").isdigit():
                found.add("host:" + m.group(0).lower().rstrip("."))
    if _DIGIT.search(text):
        for m in _IBAN.finditer(text):
            found.add("account:" + m.group(0).replace(" ", ""))
        for m in _ID.finditer(text):
            ident = m.group(0).strip("-_")
            if len(ident) >= 4 and (any(c.isalpha() for c in ident) or len(ident) >= 6):
                found.add("id:" + ident.lower())
        for m in _PHONE.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if 7 <= len(digits) <= 15:
                found.add("phone:" + digits)
        for m in _NUMBER.finditer(text):
            found.add(_amount(float(m.group(0).replace(",", ""))))
    found |= {_amount(n) for n in _word_numbers(text)}
    for m in _NAME.finditer(text):
        found.add("name:" + m.group(0).lower().replace("-", " "))
    for m in _WORD.finditer(text if words else ""):
        word = m.group(0).strip(".-'").lower()
        if len(word) >= 3:
            found.add("word:" + word)
    return frozenset(found)


_short_values_of = functools.lru_cache(maxsize=4096)(_find_values)


def _leaf_values(value: Any, *, words: bool = True) -> AbstractSet[str]:
    if isinstance(value, bool) or value is None:
        return set()
    if isinstance(value, int | float):
        return {_amount(float(value)), "id:" + str(value)} if abs(value) >= 100000 else {_amount(float(value))}
    return _values_of(str(value), words)


def arg_leaves(args: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar in `args` with its dot path (list items share their list's path)."""
    if isinstance(args, Mapping):
        for key, value in args.items():
            yield from arg_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(args, list | tuple):
        for value in args:
            yield from arg_leaves(value, prefix)
    else:
        yield prefix, args


def without_paths(content: Any, paths: Iterable[str]) -> Any:
    """`content` without the values at the dot paths (lists walked at any depth); a copy where anything is taken out."""
    for path in paths:
        content = _without(content, path.split("."))
    return content


def _without(content: Any, parts: list[str]) -> Any:
    if isinstance(content, list | tuple):
        return [_without(item, parts) for item in content]
    if not isinstance(content, Mapping) or parts[0] not in content:
        return content
    if len(parts) == 1:
        return {k: v for k, v in content.items() if k != parts[0]}
    return {**content, parts[0]: _without(content[parts[0]], parts[1:])}


_PER_ARG = 5  # findings recorded per argument (one is enough to taint it; a few explain it)
_IDENTITY_PREFIX = {"email": "email:", "url": "host:", "chat_user": "word:", "chat_channel": "word:", "organisation": "name:"}


def _identity_values(kind: CounterpartyKind, value: str) -> set[str]:
    """A counterparty's own normalised value as a `kind:value` (a one-word organisation is also a word)."""
    if kind == "payee":
        return {"account:" + value.upper(), "id:" + value.lower(), "word:" + value.lower()}
    if kind == "path":
        return set()
    if kind == "repository":  # its owner, a login: read in text as a plain word ("evil-org/leak" holds `evil-org`)
        return {"word:" + value}
    out = {_IDENTITY_PREFIX[kind] + value}
    if kind == "organisation" and " " not in value:
        out.add("word:" + value)
    return out


KEPT_TEXT = 256 * 1024  # characters of one untrusted source kept to quote from (its values are all learned, whatever its length)
EXCERPT_SIDE = 160  # characters quoted on each side of the value found
EXCERPT_VALUE = 200  # characters of the value itself quoted at most
EXCERPTS_PER_CALL = 4  # excerpts a decision carries at most: one per (arg, source), the first findings first


_TASK_INPUT = "the task input's untrusted field "


def task_input_source(key: str) -> str:
    """The source of an untrusted field of a task's request: each field is one (`the task input's untrusted field 'body'`)."""
    return f"{_TASK_INPUT}{key!r}"


def texts_of(content: Any) -> dict[str, str]:
    """The text of untrusted content by field path (list items `path (2)`, …), to quote from: `KEPT_TEXT` characters in all."""
    out: dict[str, str] = {}
    left = KEPT_TEXT
    for path, leaf in arg_leaves(content):
        if isinstance(leaf, bool) or leaf is None or left <= 0:
            continue
        key, n = path, 2
        while key in out:
            key, n = f"{path} ({n})", n + 1
        out[key] = str(leaf)[:left]
        left -= len(out[key])
    return out


def _first(pattern: re.Pattern[str], text: str, same: Callable[[str], bool]) -> tuple[int, int] | None:
    return next(((m.start(), m.end()) for m in pattern.finditer(text) if same(m.group(0))), None)


def locate(text: str, value: str) -> tuple[int, int] | None:
    """Where a normalised value (`kind:value`, as `values_of` gives it) first stands in `text`; None when not found as written.

    An amount is found written in digits or in words ("four hundred and fifty").
    """
    kind, _, v = value.partition(":")
    if kind == "account":
        return _first(_IBAN, text, lambda m: m.replace(" ", "") == v)
    if kind == "phone":
        return _first(_PHONE, text, lambda m: re.sub(r"\D", "", m) == v)
    if kind == "amount":
        found = _first(_NUMBER, text, lambda m: _amount(float(m.replace(",", ""))) == value)
        return found or _first(_WORDED, text, lambda m: _amount(next(_word_numbers(m), -1.0)) == value)
    if kind not in ("email", "host", "id", "name", "word") or not v:
        return None
    pattern = r"[ \-]".join(re.escape(part) for part in v.split(" ")) if kind == "name" else re.escape(v)
    m = re.search(rf"(?<![\w.@-]){pattern}(?![\w@-])", text, re.IGNORECASE) or re.search(pattern, text, re.IGNORECASE)
    return (m.start(), m.end()) if m else None


def excerpt(texts: Mapping[str, str], value: str) -> dict[str, Any] | None:
    """The untrusted text around where `value` first stands in `texts` (field → text): bounded, as text, never markup.

    `field` is where it was found (`body`, `messages.text`), `before`/`match`/`after` the quoted text (`EXCERPT_SIDE`
    characters each side, the match cut at `EXCERPT_VALUE`), `at` the match's offset in the field and `length` the field's
    length (as kept: `KEPT_TEXT` at most), so a reader sees how much was left out on each side.
    """
    for name, text in texts.items():
        if (span := locate(text, value)) is None:
            continue
        start, end = span[0], min(span[1], span[0] + EXCERPT_VALUE)
        first, last = max(0, start - EXCERPT_SIDE), min(len(text), end + EXCERPT_SIDE)
        return {
            "field": name,
            "before": text[first:start],
            "match": text[start:end],
            "after": text[end:last],
            "at": start,
            "length": len(text),
        }
    return None


@dataclass(frozen=True)
class Finding:
    """An argument whose value came from untrusted content: which arg, which value, where it was read (and what it said there)."""

    arg: str
    value: str
    source: str
    excerpt: Mapping[str, Any] | None = field(default=None, compare=False)  # the source's text around the value (`excerpt`)
    # Not found in `source`: counted tainted only because `source` (what the task read) was not seen when it was decided.
    unseen: bool = field(default=False, compare=False)

    def record(self) -> dict[str, Any]:
        """JSON-ready, for a decision's facts; `excerpt` only when the source's text was at hand and the value found in it.

        `why` is for a person: the value as it reads (`cus_1001`), not its normalised kind (`id:cus_1001`, `word:cus_1001`),
        which `value` keeps (the quote probe F2: an approver read `id:` and `word:` as two different things). An `unseen`
        finding says its origin is not known, never that the value was read there (leftovers22 #5).
        """
        value = self.value.partition(":")[2] or self.value
        why = f"{value}: where it came from is not known ({self.source})" if self.unseen else f"{value} was read in {self.source}"
        doc: dict[str, Any] = {"arg": self.arg, "value": self.value, "source": self.source, "why": why}
        if self.excerpt is not None:
            doc["excerpt"] = dict(self.excerpt)
        return doc


@dataclass
class Provenance:
    """What one task has read: untrusted values (with where each was first read) and values its trusted request vouches for."""

    untrusted: dict[str, str] = field(default_factory=dict)
    trusted: set[str] = field(default_factory=set)
    # The text of untrusted sources (source → field → text, `texts_of`), those the service loaded to quote in findings.
    texts: dict[str, dict[str, str]] = field(default_factory=dict)

    def learn(self, content: Any, source: str, *, trusted: bool = False) -> dict[str, str]:
        """Add every value in `content`; returns the values new to this task (value → source)."""
        new: dict[str, str] = {}
        for _, leaf in arg_leaves(content):
            for value in _leaf_values(leaf):
                if trusted:
                    if value not in self.trusted:
                        self.trusted.add(value)
                        new[value] = source
                elif value not in self.untrusted:
                    self.untrusted[value] = new[value] = source
        return new

    def findings(
        self,
        args: Mapping[str, Any],
        counterparties: Mapping[str, CounterpartyKind],
        vouched: Callable[[str], bool] = lambda _: False,
    ) -> list[Finding]:
        """Every (arg, value) of `args` derived from untrusted content and vouched for by nothing trusted, at any depth."""
        if not self.untrusted:
            return []
        by_arg: dict[str, set[str]] = {}
        for path, leaf in arg_leaves(args):
            # Plain words of an argument are not compared (a reply quoting a ticket shares words with it);
            # a counterparty's whole value is, below, as what it is.
            by_arg.setdefault(path, set()).update(_leaf_values(leaf, words=False))
        for identity in identities_of(args, counterparties):
            by_arg.setdefault(identity.arg, set()).update(_identity_values(identity.kind, identity.value))
        found: list[Finding] = []
        quoted: set[tuple[str, str]] = set()
        for path, values in by_arg.items():
            hits = [v for v in sorted(values) if v in self.untrusted and v not in self.trusted and not vouched(v)]
            for v in hits[:_PER_ARG]:
                source = self.untrusted[v]
                quote = None
                if source in self.texts and (path, source) not in quoted and len(quoted) < EXCERPTS_PER_CALL:
                    quote = excerpt(self.texts[source], v)
                    quoted.update([(path, source)] if quote is not None else [])
                found.append(Finding(path, v, source, quote))
        return found

    def passages(self, findings: Iterable[Finding]) -> list[dict[str, Any]]:
        """The instruction-like passages of each source the findings were read in whose text is at hand (`instruction_passages`).

        `EXCERPTS_PER_CALL` sources at most, in the findings' order: `{"source", "found", "passages"}` each, beside the
        findings' excerpts, so the approver reads "ignore all previous instructions" at the top of the email that names
        the payee 2 KB further down.
        """
        out: list[dict[str, Any]] = []
        for source in self._with_siblings(dict.fromkeys(f.source for f in findings)):
            if len(out) < EXCERPTS_PER_CALL and source in self.texts and (found := instruction_passages(self.texts[source])):
                out.append({"source": source, **found})
        return out

    def _with_siblings(self, sources: Iterable[str]) -> list[str]:
        """`sources`, then, when one is a field of the task's request, its other untrusted fields: one ticket, one email.

        The injection may stand in the subject and the payee in the body: the passages of both are the approver's to read.
        """
        sources = list(sources)
        if not any(s.startswith(_TASK_INPUT) for s in sources):
            return sources
        return sources + sorted({s for s in self.untrusted.values() if s.startswith(_TASK_INPUT)} - set(sources))

    def sources_of(self, args: Mapping[str, Any], counterparties: Mapping[str, CounterpartyKind]) -> set[str]:
        """The sources whose text findings on `args` may quote or flag passages of (`passages`), not loaded yet.

        Those of every untrusted value in them, vouched for or not, and the other untrusted fields of the task's request.
        """
        return set(self._with_siblings(dict.fromkeys(f.source for f in self.findings(args, counterparties)))) - self.texts.keys()

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, bool]]) -> Provenance:
        """From stored (value, source, trusted) rows."""
        prov = cls()
        for value, source, trusted in rows:
            if trusted:
                prov.trusted.add(value)
            else:
                prov.untrusted.setdefault(value, source)
        return prov
