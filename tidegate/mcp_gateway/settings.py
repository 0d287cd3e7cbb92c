"""How the MCP gateway behaves: which tools it serves and what a call that needs a human does."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit import REPO_ROOT

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    """`TIDEGATE_MCP_*`; the connection to the bus is the client's (`TIDEGATE_CLIENT_*`)."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_MCP_", extra="ignore", frozen=True)

    tools_dir: Path = Field(default=REPO_ROOT / "catalog" / "tools", description="The catalog whose tools are served.")
    extra_tools_dirs: list[Path] = Field(
        default_factory=list,
        description="More catalog folders whose tools are served, read after `tools_dir` (as `TIDEGATE_EXTRA_TOOLS_DIRS` for the "
        "services: give both the same folders). JSON list in the environment.",
        examples=[["../my-agent/tools"]],
    )
    tools: list[str] | None = Field(
        default=None, description='Serve only these tools, a JSON list (`["tag_ticket", "get_ticket"]`; all of the catalog when unset).'
    )
    on_escalation: Literal["wait", "pending"] = Field(
        default="wait",
        description="`wait`: the call waits for the human, sending progress notifications; "
        "`pending`: it returns at once a pending result to poll with the `tidegate_action_status` tool.",
    )
    wait_limit_s: float = Field(default=3600.0, gt=0, description="Longest a waiting call waits for a human before it returns pending.")
    progress_every_s: float = Field(default=5.0, gt=0, description="Interval of progress notifications while a human decides.")
    wait_without_progress_s: float = Field(
        default=30.0,
        gt=0,
        description="A call whose host asked for no progress notifications (no `progressToken`, as the MCP Inspector's CLI, or the "
        "`mcp` SDK's `call_tool` without a `progress_callback`): how long after it came it may wait for the policy's decision and an "
        "allowed call's result together and, in `wait` mode, for a human, before it returns its pending result (the action id to "
        "poll). Nothing keeps such a host's request timer alive, and the TypeScript SDK's hosts cut a call off unanswered at 60 s "
        "by default.",
    )
    stop_grace_s: int = Field(
        default=5,
        ge=1,
        description="Streamable HTTP: on SIGTERM or SIGINT, how long open calls may take to finish before they are cut off (a call "
        "waiting for a human returns its pending result at once); the process then exits 0.",
    )
    http_host: str = Field(default="127.0.0.1", description="Streamable HTTP: address to listen on.")
    http_port: int = Field(default=8765, ge=0, le=65535, description="Streamable HTTP: port.")
    http_token: SecretStr | None = Field(
        default=None,
        description="Streamable HTTP: the bearer token every client must send (`Authorization: Bearer <token>`; 401 without it). "
        "Unset: one is made on first run and kept, readable by its owner only, in the client's state dir (`mcp-gateway.token`). "
        "Required to listen on any address but loopback.",
    )

    @field_validator("http_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if len(token) < 16:
            raise ValueError("is shorter than 16 characters: use a random one, e.g. `openssl rand -hex 32`")
        return SecretStr(token)

    @property
    def tool_dirs(self) -> tuple[Path, ...]:
        """Every folder of the catalog served, `tools_dir` first."""
        return (self.tools_dir, *self.extra_tools_dirs)
