"""The demo code host (schema `code`): pull requests, and direct pushes that policy should never allow."""

from __future__ import annotations

import hashlib
from typing import Any

from servicekit.toolcontract import ToolContext
from systems._db import insert_once

__all__ = ["open_pull_request", "push_commit"]


async def open_pull_request(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Open a pull request for review; one pull request per idempotency key."""
    async with ctx.pool.acquire() as conn:
        pr_id, created = await insert_once(
            conn,
            "code.pull_requests",
            "pr_id",
            {
                "repo": args["repo"],
                "title": args["title"],
                "files": list(args["files"]),
                "target_branch": args.get("target_branch", "main"),
            },
            ctx.idempotency_key,
            ctx.tenant_id,
        )
    return {"pr_id": pr_id, "repo": args["repo"], "status": "open", "created": created}


async def push_commit(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Push a commit straight to a branch. Takes no idempotency key: every call pushes a new commit."""
    sha = hashlib.sha1(
        f"{ctx.tenant_id}:{args['repo']}:{args['branch']}:{ctx.action_id}:{ctx.attempt}".encode(), usedforsecurity=False
    ).hexdigest()
    async with ctx.pool.acquire() as conn:
        commit_id = await conn.fetchval(
            "INSERT INTO code.commits (tenant_id, repo, branch, files, sha) VALUES ($1, $2, $3, $4, $5) RETURNING commit_id",
            ctx.tenant_id,
            args["repo"],
            args["branch"],
            list(args["files"]),
            sha,
        )
    return {"commit_id": commit_id, "sha": sha, "branch": args["branch"]}
