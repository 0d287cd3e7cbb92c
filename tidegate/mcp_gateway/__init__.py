"""The MCP gateway: Tidegate's catalog served as an MCP server, and upstream MCP servers imported into it."""

from tidegate.mcp_gateway.importer import PLACEHOLDER_RISK, catalog_entry, import_upstream, list_upstream
from tidegate.mcp_gateway.server import IDEMPOTENCY_META, STATUS_TOOL, build_server, result_of
from tidegate.mcp_gateway.sessions import SESSION_META
from tidegate.mcp_gateway.settings import GatewaySettings

__all__ = [
    "IDEMPOTENCY_META",
    "PLACEHOLDER_RISK",
    "SESSION_META",
    "STATUS_TOOL",
    "GatewaySettings",
    "build_server",
    "catalog_entry",
    "import_upstream",
    "list_upstream",
    "result_of",
]
