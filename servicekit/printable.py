"""Text a person reads on one line, with what does not print shown as escapes, so a value cannot hide or reorder itself."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    r"""`text` with what does not print shown as escapes (`\n`, `\x1b`, `\u202e`).

    Not printable (`str.isprintable`): a control, format (bidi, zero-width), separator, private-use or unassigned
    character, a space but U+0020.

    A right-to-left override in a value shows what follows it reversed: "granted" read from "detnarg", an address
    `\u202eelpmaxe.live@ecnanif` as `finance@live.example`; a zero-width space hides inside an address.
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
