"""The bytes a signature covers, made for every check and every signature: the same bytes however they are made.

`signed_bytes` copies a parsed document and takes its signature out instead of rebuilding it key by key; what it
gives must stay the canonical JSON of the document without `signature`, and the document itself must not change
(the audit reads its fields after the check).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import canonical_json
from servicekit.authority import signed_bytes

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


def _reference(document: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


_KEYS = st.sampled_from(["id", "type", "signature", "keyid", "data", "Signature", "signature "]) | st.text(max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_KEYS, _json))
def test_the_signed_bytes_are_the_document_without_its_signature(document: dict[str, Any]) -> None:
    before = dict(document)
    assert signed_bytes(document) == _reference(document)
    assert document == before  # the caller's document keeps its signature


def test_a_mapping_that_is_not_a_plain_dict_gives_the_same_bytes() -> None:
    document = OrderedDict([("type", "t"), ("signature", "s"), ("id", "e-1")])
    assert signed_bytes(document) == b'{"id":"e-1","type":"t"}' == _reference(document)
    assert "signature" in document
