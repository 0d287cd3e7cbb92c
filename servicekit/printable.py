"""Text a person reads on one line, with what does not print shown as escapes, so a value cannot hide or reorder itself."""

from __future__ import annotations

import logging
from types import TracebackType

__all__ = ["OneLineFormatter", "printable"]


def printable(text: str) -> str:
    r"""`text` with what does not print shown as escapes (`\n`, `\x1b`, `\u202e`).

    Not printable (`str.isprintable`): a control, format (bidi, zero-width), separator, private-use or unassigned
    character, a space but U+0020.

    A right-to-left override in a value shows what follows it reversed: "granted" read from "detnarg", an address
    `\u202eelpmaxe.live@ecnanif` as `finance@live.example`; a zero-width space hides inside an address.
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class OneLineFormatter(logging.Formatter):
    """Log lines of text in which a record is one line: its message, and each exception's message in its traceback, escaped.

    A log line names what events say (an action id, a tenant, a task id, a refusal that quotes them), and those are an
    agent's to choose, any character but U+0000: a newline and a whole line after it would otherwise read as a record no
    service wrote (`... INFO policy: killswitch cleared`), an escape sequence would rewrite the operator's terminal. The
    traceback's own lines (files, code) stay as Python writes them, below the record.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's message with what does not print escaped."""
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]) -> str:
        """The traceback as Python writes it, with each exception's message in it escaped."""
        text = super().formatException(ei)
        seen: set[int] = set()
        exc = ei[1]
        while exc is not None and id(exc) not in seen:  # the exception, and those it was raised from or during
            seen.add(id(exc))
            try:
                said = str(exc)
            except Exception:  # a message that cannot be made is not in the text either
                said = ""
            if said and not said.isprintable():
                text = text.replace(said, printable(said))
            exc = exc.__cause__ or exc.__context__
        return text
