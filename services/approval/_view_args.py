"""Which args of a call an approver must read first: the ones the catalog says the policy decides on."""

from __future__ import annotations

from servicekit import ToolCatalog

__all__ = ["key_args"]


def key_args(catalog: ToolCatalog | None, tool: str) -> list[str]:
    """The top-level args the tool's catalog facts name (amount, payee, counterparties, record, important, documentation).

    In that order, each once; the page lists them before the rest, so free text an agent wrote cannot come first.
    A tool missing from the catalog has none.
    """
    if catalog is None or tool not in catalog:
        return []
    facts = catalog[tool].facts
    paths = [facts.amount, facts.payee, *facts.declared_counterparties(), facts.record, *facts.important, facts.documentation]
    return list(dict.fromkeys(path.split(".")[0] for path in paths if path))
