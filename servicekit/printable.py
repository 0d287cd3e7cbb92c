"""Text a person reads on one line, with what does not print shown as escapes, so a value cannot hide or reorder itself."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    r"""`text` with what does not print (controls, bidi and zero-width format characters) shown as escapes (`\u202e`).

    A right-to-left override in a value shows what follows it reversed: "granted" read from "detnarg", an address
    `\u202eelpmaxe.live@ecnanif` as `finance@live.example`; a zero-width space hides inside an address.
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
