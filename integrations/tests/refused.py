"""Args the client refuses before anything is proposed, as a model may give them (a scraped page's U+0000, a pasted file)."""

from __future__ import annotations

__all__ = ["REFUSED_PAYEES", "refused_text_of"]

# (the payee_id the model gives, the start of why the model is told)
REFUSED_PAYEES = [
    ("cus_1\x00", "args.payee_id: Strings should hold no U+0000 character"),
    ("x" * 1_100_000, "the call is too large: its proposal is"),
]


def refused_text_of(said: str, why: str) -> bool:
    """Whether `said` is the adapters' refusal of a call, giving `why`."""
    return said.startswith(f"Tidegate cannot take this call: {why}") and said.endswith(
        "Nothing was proposed and it did not run; call again with args that fit."
    )
