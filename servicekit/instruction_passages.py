"""The instruction-like passages of untrusted text: what an approver should read besides the words around a value.

An email that opens with "ignore all previous instructions" and names the payee 2 KB further down is quoted, around the
payee, as a polite request (`provenance.excerpt`). This finds, in the same text, the passages written to steer an agent
rather than to inform a person, by a small set of patterns, each a `kind` (`KINDS`):

- `override`: an order to set aside the agent's instructions or checks ("ignore all previous instructions", "new
  instructions:", "from now on", "do not mention this", "without asking", "pre-approved");
- `role`: a claim to be, or to speak to, the system or the agent ("you are now the refunds administrator", "SYSTEM NOTE
  TO THE AI AGENT", "I am your administrator", "act as");
- `marker`: a chat transcript's turn or a prompt format's token (`system:`/`assistant:` opening a line, `<|im_start|>`,
  `[INST]`, `<<SYS>>`, `<system>`);
- `hidden`: markup a reader does not see (an HTML comment, a script or style element, text styled invisible or white,
  a markdown image or `javascript:` link, a markdown comment);
- `invisible`: characters that show as nothing or reorder the text (zero-width, bidi controls, Unicode tag characters,
  whose hidden ASCII is decoded in `hidden_text`).

Words are matched with look-alike letters (Cyrillic, Greek, fullwidth) read as Latin and invisible characters inside
them skipped, so `іgnore` and `ig\u200bnore` are found; positions are always those of the text as written. A flag is a
reason to read a passage, not a verdict: an honest email may say "don't tell my wife". Pure and bounded: linear in the
text (every pattern's repetitions are bounded), `PASSAGES_PER_SOURCE` passages of `PASSAGE_MAX` characters at most.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["KINDS", "PASSAGES_PER_SOURCE", "PASSAGE_MAX", "PASSAGE_SIDE", "instruction_passages"]

KINDS: dict[str, str] = {
    "override": "tells the agent to set aside its instructions or checks",
    "role": "claims to be, or speaks to, the system or the AI agent",
    "marker": "a chat turn or prompt marker (system:, assistant:, [INST])",
    "hidden": "markup a reader does not see (comment, script, invisible style)",
    "invisible": "characters that show as nothing or reorder the text",
}

PASSAGES_PER_SOURCE = 6  # passages signed for one source at most, the first in the text first (`found` counts them all)
PASSAGE_SIDE = 80  # characters of context each side of a flagged span at most, cut at a line or sentence end
PASSAGE_MAX = 320  # characters of one passage at most
MARKS_PER_PASSAGE = 12  # flagged spans listed in one passage at most
MATCHES_PER_PATTERN = 1000  # spans one pattern finds in a source at most: 256 KiB of `\u200ba` is 131,072 of them
_HIDDEN_TEXT_MAX = 200  # characters decoded from a run of tag characters at most

_I = re.IGNORECASE
_M = re.IGNORECASE | re.MULTILINE
_GAP = r"[^\n.!?]{0,40}?"  # a few words between the parts of a phrase, within one sentence
_AGENT = r"(?:ai|a\.i\.|agent|assistant|llm|language model|model|bot|chatbot|gpt|copilot|automation)"
_AUTHORITY = (
    r"(?:admin|administrator|system|developer|ceo|cfo|owner|operator|supervisor|manager|security team|it department|root|"
    r"authority|approver)"
)

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "override",
        re.compile(
            rf"\b(?:ignore|disregard|forget|override|bypass|skip|abandon)\b{_GAP}\b(?:previous|prior|above|earlier|preceding|"
            rf"original|all|any|every|your|the|these|those|other|system)\b{_GAP}\b(?:instructions?|rules?|prompts?|directions?|"
            rf"directives?|guidelines?|polic(?:y|ies)|checks?|restrictions?|approvals?|constraints?|safeguards?|context)\b",
            _I,
        ),
    ),
    ("override", re.compile(r"\b(?:new|updated|real|actual|hidden|secret)\s+(?:instructions?|orders|directives?|task)\b", _I)),
    ("override", re.compile(r"\bfrom now on\b|\binstead,?\s+you\s+(?:must|should|will)\b", _I)),
    (
        "override",
        re.compile(
            r"\b(?:do not|don't|dont|never|must not)\s+(?:tell|mention|inform|notify|reveal|disclose|report|flag|escalate|"
            r"log|alert|verify|check)\b",
            _I,
        ),
    ),
    (
        "override",
        re.compile(r"\bwithout\s+(?:asking|approval|confirmation|confirming|verification|verifying|checking|review|telling)\b", _I),
    ),
    ("override", re.compile(r"\b(?:pre-?approved|pre-?authori[sz]ed|already\s+(?:approved|authori[sz]ed|verified|cleared))\b", _I)),
    (
        "role",
        re.compile(
            rf"\b(?:you are now|you're now|from now on you are|act as (?:an?|the|my|your)|pretend (?:to be|you are)|roleplay as"
            rf"|you will now act)\b"
            rf"|\b(?:system|admin|administrator|developer|security)\s+(?:note|message|notice|override|prompt|instruction|alert)\b"
            rf"|\b(?:note|message|instructions?|attention)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?{_AGENT}s?\b"
            rf"|\b(?:dear|hey|hello|hi)\s+(?:the\s+)?{_AGENT}\b"
            rf"|\bas an?\s+(?:ai|a\.i\.)\s+(?:agent|assistant|language model|model)\b"
            rf"|\b(?:i am|i'm|this is)\s+your\s+{_AUTHORITY}\b"
            rf"|\b(?:i am|i'm|this is)\s+(?:the|an?)\s+(?:system|admin|administrator|developer|operator|root)\b"
            rf"|\byou(?:\s+are|'re)\s+(?:now\s+)?(?:the|an?|my|our)\s+(?:[a-z\-]{{1,20}}\s+){{0,2}}{_AUTHORITY}\b"
            rf"|\b(?:message|note|email|request)\s+(?:is\s+)?from\s+(?:the|your)\s+{_AUTHORITY}\b",
            _I,
        ),
    ),
    (
        "marker",
        re.compile(
            r"^[ \t>#*\-\[(<]{0,6}(?:system|assistant|user|developer|tool|human|ai|bot|instructions?)\s{0,3}[:\]>|]"
            r"|<\|[a-z_]{1,20}\|>|\[/?INST\]|<</?SYS>>|</?(?:system|instructions?|assistant|user|prompt)>"
            r"|^\s{0,3}#{1,6}\s{0,3}(?:system|instructions?|assistant|prompt)\b",
            _M,
        ),
    ),
    (
        "hidden",
        re.compile(
            r"<!--(?:(?!-->)[\s\S]){0,300}(?:-->)?"  # a comment: its first 300 characters
            r"|<\s{0,3}(?:script|style|iframe|object|embed|template|noscript)\b[^>]{0,200}>?"
            r"|\b(?:display\s{0,3}:\s{0,3}none|visibility\s{0,3}:\s{0,3}hidden|font-size\s{0,3}:\s{0,3}0(?:\.0+)?(?:px|pt|em|rem|%)?"
            r"(?![\d.])|opacity\s{0,3}:\s{0,3}0(?:\.0+)?(?![\d.])|color\s{0,3}:\s{0,3}(?:#fff(?:fff)?\b|white\b|transparent\b))"
            r"|<[a-z][a-z0-9]{0,10}\b[^<>]{0,200}\shidden\b"
            r"|!\[[^\]\n]{0,200}\]\([^)\n]{0,300}\)"  # a markdown image: fetched, and its address can carry data out
            r"|\]\(\s{0,3}(?:javascript|data|vbscript):"
            r"|^\[//\]:\s{0,3}#",
            _M,
        ),
    ),
)

_INVISIBLE_CHARS = "\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f"
_INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]+")
_INVISIBLE_SET = frozenset(
    chr(c)
    for lo, hi in ((0xAD, 0xAD), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x2069),
                   (0xFEFF, 0xFEFF), (0xE0000, 0xE007F))
    for c in range(lo, hi + 1)
)  # fmt: skip

# Look-alikes read as the Latin letter they imitate (one character for one, so positions stay): Cyrillic, Greek, fullwidth.
_FOLD = str.maketrans(
    "аеорсухіјѕԁһԛԝаАВЕКМНОРСТХІЈЅԌοαιρνκτυχεΑΒΕΗΙΚΜΝΟΡΤΥΧΖ",
    "aeopcyxijsdhqwaABEKMHOPCTXIJSGoaipvktuxeABEHIKMNOPTYXZ",
)
_FOLD.update({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)})  # fullwidth ASCII

_BOUNDARY = re.compile(r"\n|[.!?](?=\s)")


def _searchable(text: str) -> tuple[str, list[int] | None]:
    """`text` folded for matching, without its invisible characters; and where each kept character stands in `text`."""
    folded = text.translate(_FOLD)
    if not _INVISIBLE.search(folded):
        return folded, None
    kept = [i for i, c in enumerate(folded) if c not in _INVISIBLE_SET]
    return "".join(folded[i] for i in kept), kept


def _decoded(run: str) -> str:
    """The ASCII that Unicode tag characters spell (U+E0041 is `A`): text an agent reads and a person never sees."""
    return "".join(chr(ord(c) - 0xE0000) for c in run if 0xE0020 <= ord(c) <= 0xE007E)[:_HIDDEN_TEXT_MAX]


@functools.lru_cache(maxsize=64)  # a task's calls quote the same few sources again and again
def _marks(text: str) -> tuple[tuple[str, int, int, str], ...]:
    """Every flagged span of `text`: (kind, start, end, hidden text), by start."""
    found: list[tuple[str, int, int, str]] = []
    for m in itertools.islice(_INVISIBLE.finditer(text), MATCHES_PER_PATTERN):
        found.append(("invisible", m.start(), m.end(), _decoded(m.group(0))))
    searchable, kept = _searchable(text)
    for kind, pattern in _PATTERNS:
        for m in itertools.islice(pattern.finditer(searchable), MATCHES_PER_PATTERN):
            if m.end() == m.start():
                continue
            start, end = (m.start(), m.end()) if kept is None else (kept[m.start()], kept[m.end() - 1] + 1)
            found.append((kind, start, end, ""))
    return tuple(sorted(found, key=lambda f: (f[1], f[2])))


def _window(text: str, start: int, end: int) -> tuple[int, int]:
    """A flagged span with its context: to the line or sentence around it, `PASSAGE_SIDE` characters each side at most."""
    lo = max(0, start - PASSAGE_SIDE)
    ends = [m.end() for m in _BOUNDARY.finditer(text, lo, start)]
    first = ends[-1] if ends else lo
    hi = min(len(text), end + PASSAGE_SIDE)
    stop = _BOUNDARY.search(text, end, hi)
    return first, (stop.end() if stop else hi)


def _passages(field: str, text: str) -> tuple[int, list[dict[str, Any]]]:
    marks = _marks(text)
    out: list[dict[str, Any]] = []
    for kind, start, end, hidden in marks:
        first, last = _window(text, start, end)
        current = out[-1] if out else None
        if current is not None and first <= current["_end"] and min(last, start + PASSAGE_MAX) - current["at"] <= PASSAGE_MAX:
            current["_end"] = max(current["_end"], last)
        elif len(out) < PASSAGES_PER_SOURCE:
            if current is not None:  # the passages do not overlap: this one starts where the last ended, or at its span
                first = max(first, min(current["_end"], start))
            current = {"field": field, "at": first, "_end": min(last, first + PASSAGE_MAX), "length": len(text), "marks": []}
            out.append(current)
        else:
            continue
        if len(current["marks"]) < MARKS_PER_PASSAGE:
            mark: dict[str, Any] = {"kind": kind, "at": start, "length": end - start}
            if hidden:
                mark["hidden_text"] = hidden
            current["marks"].append(mark)
    for p in out:
        end = min(p.pop("_end"), p["at"] + PASSAGE_MAX)
        p["text"] = text[p["at"] : end]
        p["kinds"] = sorted({m["kind"] for m in p["marks"]})
    return len(marks), out


def instruction_passages(texts: Mapping[str, str]) -> dict[str, Any] | None:
    """The instruction-like passages of one untrusted source (field → text, as `provenance.texts_of` keeps it); None: none.

    `found` counts the flagged spans in the source (`MATCHES_PER_PATTERN` a pattern at most); `passages` are the first
    `PASSAGES_PER_SOURCE` stretches of text around them, each `{field, at, length, text, kinds, marks}`: `at` where the
    passage starts in its field, `length` the field's length, `text` the passage as written (markup and invisible
    characters included: a reader shows it as text, revealed), `marks` the flagged spans in it (`kind`, `at`, `length` in
    the field; `hidden_text` of tag characters).
    """
    found, passages = 0, list[dict[str, Any]]()
    for field, text in texts.items():
        n, those = _passages(field, text)
        found += n
        passages.extend(those[: PASSAGES_PER_SOURCE - len(passages)])
    return {"found": found, "passages": passages} if found else None
