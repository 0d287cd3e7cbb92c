"""GitHub: read files and issues, open a pull request from a branch, comment; over the REST API with httpx.

REST with httpx rather than PyGithub: PyGithub is synchronous and retries on its own (urllib3), which would
block the executor's loop and hide attempts from the one layer that retries. The credential is a token
(fine-grained personal access token or GitHub App installation token), sent as a bearer token to
`connection.base_url` (`https://api.github.com`, or `https://<host>/api/v3` for GitHub Enterprise Server).

A pull request is the only way code changes: the tool never pushes, refuses a head that is the default
branch, and refuses a branch that changes a file the proposal did not declare in `files`, so the
policy's sensitive-path check sees every path that changes. File contents and issue bodies are untrusted.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from connectors._http import raise_for_answer, send
from servicekit.toolcontract import ToolContext, ToolError

__all__ = ["comment", "delete_comment", "get_file", "get_issue", "open_pull_request"]

DEFAULT_BASE_URL = "https://api.github.com"
_MAX_FILE_BYTES = 200_000
_MAX_COMMENTS = 300


@asynccontextmanager
async def _client(ctx: ToolContext) -> AsyncIterator[httpx.AsyncClient]:
    if not ctx.credential:
        raise ToolError("credential_missing", "no GitHub token for this call")
    headers = {
        "Authorization": f"Bearer {ctx.credential}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    async with httpx.AsyncClient(base_url=ctx.connection.get("base_url", DEFAULT_BASE_URL).rstrip("/"), headers=headers, timeout=30) as c:
        yield c


async def _answer(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    response = await send(client, method, url, **kwargs)
    if response.status_code == 403 and response.headers.get("x-ratelimit-remaining") == "0":
        # GitHub's primary rate limit answers 403, not 429: not processed, worth a later retry.
        reset = response.headers.get("x-ratelimit-reset", "?")
        raise ToolError("rate_limited", f"GitHub rate limit exhausted (resets at epoch {reset})", retryable=True)
    raise_for_answer(response, "GitHub")
    return response


def _repo(args: dict[str, Any]) -> str:
    return f"/repos/{args['repo']}"


async def get_file(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """A file's text at a ref (the default branch when none is given)."""
    params = {"ref": args["ref"]} if args.get("ref") else {}
    async with _client(ctx) as client:
        doc = (await _answer(client, "GET", f"{_repo(args)}/contents/{args['path']}", params=params)).json()
    if not isinstance(doc, dict) or doc.get("type") != "file":
        raise ToolError("not_a_file", f"{args['path']} is a directory or a submodule, not a file")
    if doc.get("size", 0) > _MAX_FILE_BYTES or doc.get("encoding") != "base64":
        raise ToolError("file_too_large", f"{args['path']} is larger than {_MAX_FILE_BYTES} bytes")
    text = base64.b64decode(doc["content"]).decode("utf-8", errors="replace")
    return {"repo": args["repo"], "path": doc["path"], "sha": doc["sha"], "content": text, "untrusted": ["content"]}


async def get_issue(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """An issue and its comments (every page, by the `Link` header); title, body and comments are untrusted."""
    async with _client(ctx) as client:
        issue = (await _answer(client, "GET", f"{_repo(args)}/issues/{args['number']}")).json()
        comments: list[dict[str, Any]] = []
        url: str | None = f"{_repo(args)}/issues/{args['number']}/comments?per_page=100"
        while url and len(comments) < _MAX_COMMENTS:
            page = await _answer(client, "GET", url)
            comments += [
                {"author": c["user"]["login"], "body": c.get("body") or "", "created_at": c.get("created_at")} for c in page.json()
            ]
            url = page.links.get("next", {}).get("url")
            if url and httpx.URL(url).host != client.base_url.host:
                raise ToolError("bad_pagination", f"GitHub's next page points at another host ({httpx.URL(url).host})")
    return {
        "repo": args["repo"],
        "number": issue["number"],
        "title": issue.get("title"),
        "body": issue.get("body") or "",
        "state": issue.get("state"),
        "author": (issue.get("user") or {}).get("login"),
        "labels": [label["name"] for label in issue.get("labels", [])],
        "comments": comments,
        "untrusted": ["title", "body", "comments"],
    }


async def open_pull_request(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Open a pull request from an existing branch; a repeat answers with the pull request already open for it."""
    async with _client(ctx) as client:
        repo = (await _answer(client, "GET", _repo(args))).json()
        default, head = repo["default_branch"], args["head"]
        base = args.get("base") or default
        if head in (default, base):
            raise ToolError("head_is_protected", f"a pull request comes from a topic branch, not from {head!r}: nothing is pushed")
        compare = (await _answer(client, "GET", f"{_repo(args)}/compare/{base}...{head}")).json()
        changed = sorted({f["filename"] for f in compare.get("files", [])})
        undeclared = sorted(set(changed) - set(args["files"]))
        if undeclared:
            raise ToolError("undeclared_paths", f"branch {head} changes files the proposal did not declare: {', '.join(undeclared)[:500]}")
        if not changed:
            raise ToolError("nothing_to_merge", f"branch {head} has no change against {base}")
        body = {"title": args["title"], "head": head, "base": base, "body": args.get("body", ""), "maintainer_can_modify": False}
        response = await send(client, "POST", f"{_repo(args)}/pulls", json=body)
        if response.status_code == 422 and "already exists" in response.text:
            # GitHub allows one open pull request per head and base: a retry finds the first one.
            owner = args["repo"].split("/")[0]
            found = (await _answer(client, "GET", f"{_repo(args)}/pulls", params={"head": f"{owner}:{head}", "base": base})).json()
            if found:
                return _pull(args["repo"], found[0], changed, existing=True)
        raise_for_answer(response, "GitHub")
        return _pull(args["repo"], response.json(), changed, existing=False)


def _pull(repo: str, pr: dict[str, Any], changed: list[str], *, existing: bool) -> dict[str, Any]:
    return {
        "repo": repo,
        "number": pr["number"],
        "url": pr.get("html_url"),
        "head": pr["head"]["ref"],
        "base": pr["base"]["ref"],
        "files": changed,
        "already_open": existing,
    }


async def comment(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Comment on an issue or a pull request."""
    async with _client(ctx) as client:
        doc = (await _answer(client, "POST", f"{_repo(args)}/issues/{args['number']}/comments", json={"body": args["body"]})).json()
    return {"repo": args["repo"], "number": args["number"], "comment_id": doc["id"], "url": doc.get("html_url")}


async def delete_comment(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Delete an issue or pull request comment (the undo of `comment`), returning its issue and text; one already gone counts as deleted."""
    url = f"{_repo(args)}/issues/comments/{args['comment_id']}"
    out: dict[str, Any] = {"repo": args["repo"], "comment_id": args["comment_id"], "deleted": True}
    async with _client(ctx) as client:
        try:
            doc = (await _answer(client, "GET", url)).json()
            await _answer(client, "DELETE", url)
        except ToolError as exc:
            if exc.type != "not_found":
                raise
            return out
    return out | {"number": int(str(doc["issue_url"]).rsplit("/", 1)[-1]), "body": doc.get("body", "")}
