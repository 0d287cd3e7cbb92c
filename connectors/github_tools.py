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

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import httpx
from pydantic import Base64Bytes, BaseModel, Discriminator, Field, RootModel, Tag

from connectors._http import detail_of, parse_answer, raise_for_answer, send
from servicekit.toolcontract import ToolContext, ToolError, retry_after_s

__all__ = ["comment", "delete_comment", "get_file", "get_issue", "open_pull_request"]

DEFAULT_BASE_URL = "https://api.github.com"
_MAX_FILE_BYTES = 200_000
_MAX_COMMENTS = 300
_Shape = TypeVar("_Shape", bound=BaseModel)


class _Entry(BaseModel):
    """What `GET .../contents/<path>` answers for a file (or a submodule or symlink, refused as not a file)."""

    type: str
    path: str
    sha: str
    size: int = 0
    encoding: str | None = None
    content: Base64Bytes = b""


def _entry_or_listing(doc: Any) -> str:
    return "listing" if isinstance(doc, list) else "entry"


class _Contents(
    RootModel[Annotated[Annotated[_Entry, Tag("entry")] | Annotated[list[Any], Tag("listing")], Discriminator(_entry_or_listing)]]
):
    """A file's entry, or a directory's listing (a list)."""


class _User(BaseModel):
    login: str | None = None


class _Label(BaseModel):
    name: str


class _Issue(BaseModel):
    number: int
    title: str | None = None
    body: str | None = None
    state: str | None = None
    user: _User | None = None
    labels: list[_Label] = Field(default_factory=list)


class _Comment(BaseModel):
    id: int
    html_url: str | None = None
    user: _User | None = None
    body: str | None = None
    created_at: str | None = None


class _IssueComment(_Comment):
    """A comment read by its id: the issue it is on is the number its `issue_url` ends with."""

    issue_url: Annotated[str, Field(pattern=r"/issues/\d+$")]


class _Comments(RootModel[list[_Comment]]):
    """One page of an issue's comments."""


class _Repo(BaseModel):
    default_branch: str


class _Changed(BaseModel):
    filename: str


class _Compare(BaseModel):
    files: list[_Changed] = Field(default_factory=list)


class _Ref(BaseModel):
    ref: str


class _Pull(BaseModel):
    number: int
    html_url: str | None = None
    head: _Ref
    base: _Ref


class _Pulls(RootModel[list[_Pull]]):
    """The open pull requests for a head and base (at most one)."""


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


async def _response(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    response = await send(client, method, url, **kwargs)
    if response.status_code == 403 and (limited := _rate_limited(response)) is not None:
        raise limited
    raise_for_answer(response, "GitHub")
    return response


def _rate_limited(response: httpx.Response) -> ToolError | None:
    """A 403 that is one of GitHub's rate limits (not processed, worth a later retry), else None: a 403 of the credential.

    The primary limit says `x-ratelimit-remaining: 0` and when it resets; a secondary limit ("You have exceeded a secondary
    rate limit", bursts of content creation) says `retry-after` (GitHub's REST docs, "Rate limits for the REST API").
    """
    wait = retry_after_s(response.headers.get("retry-after"))
    if response.headers.get("x-ratelimit-remaining") == "0":
        reset = response.headers.get("x-ratelimit-reset", "")
        if wait is None and reset.isdigit():
            wait = max(int(reset) - time.time(), 0.0)
        return ToolError(
            "rate_limited", f"GitHub rate limit exhausted (resets at epoch {reset or '?'})", retryable=True, retry_after_s=wait
        )
    if wait is not None:
        message = f"GitHub secondary rate limit (Retry-After: {wait:g} s): {detail_of(response)}"
        return ToolError("rate_limited", message, retryable=True, retry_after_s=wait)
    return None


async def _answer(client: httpx.AsyncClient, method: str, url: str, shape: type[_Shape], **kwargs: Any) -> _Shape:
    """One call, its answer read as `shape`: an error answer, a body that is not JSON or of another shape is a ToolError."""
    return parse_answer(await _response(client, method, url, **kwargs), "GitHub", shape)


def _repo(args: dict[str, Any]) -> str:
    return f"/repos/{args['repo']}"


async def get_file(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """A file's text at a ref (the default branch when none is given)."""
    params = {"ref": args["ref"]} if args.get("ref") else {}
    async with _client(ctx) as client:
        doc = (await _answer(client, "GET", f"{_repo(args)}/contents/{args['path']}", _Contents, params=params)).root
    if not isinstance(doc, _Entry) or doc.type != "file":
        raise ToolError("not_a_file", f"{args['path']} is a directory or a submodule, not a file")
    if doc.size > _MAX_FILE_BYTES or doc.encoding != "base64":
        raise ToolError("file_too_large", f"{args['path']} is larger than {_MAX_FILE_BYTES} bytes")
    text = doc.content.decode("utf-8", errors="replace")
    return {"repo": args["repo"], "path": doc.path, "sha": doc.sha, "content": text, "untrusted": ["content"]}


async def get_issue(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """An issue and its comments (every page, by the `Link` header); title, body and comments are untrusted."""
    async with _client(ctx) as client:
        issue = await _answer(client, "GET", f"{_repo(args)}/issues/{args['number']}", _Issue)
        comments: list[dict[str, Any]] = []
        url: str | None = f"{_repo(args)}/issues/{args['number']}/comments?per_page=100"
        while url and len(comments) < _MAX_COMMENTS:
            page = await _response(client, "GET", url)
            comments += [
                {"author": c.user.login if c.user else None, "body": c.body or "", "created_at": c.created_at}
                for c in parse_answer(page, "GitHub", _Comments).root
            ]
            url = page.links.get("next", {}).get("url")
            if url and httpx.URL(url).host != client.base_url.host:
                raise ToolError("bad_pagination", f"GitHub's next page points at another host ({httpx.URL(url).host})")
    return {
        "repo": args["repo"],
        "number": issue.number,
        "title": issue.title,
        "body": issue.body or "",
        "state": issue.state,
        "author": issue.user.login if issue.user else None,
        "labels": [label.name for label in issue.labels],
        "comments": comments,
        "untrusted": ["title", "body", "comments"],
    }


async def open_pull_request(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Open a pull request from an existing branch; a repeat answers with the pull request already open for it."""
    async with _client(ctx) as client:
        default, head = (await _answer(client, "GET", _repo(args), _Repo)).default_branch, args["head"]
        base = args.get("base") or default
        if head in (default, base):
            raise ToolError("head_is_protected", f"a pull request comes from a topic branch, not from {head!r}: nothing is pushed")
        compare = await _answer(client, "GET", f"{_repo(args)}/compare/{base}...{head}", _Compare)
        changed = sorted({f.filename for f in compare.files})
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
            found = await _answer(client, "GET", f"{_repo(args)}/pulls", _Pulls, params={"head": f"{owner}:{head}", "base": base})
            if found.root:
                return _pull(args["repo"], found.root[0], changed, existing=True)
        raise_for_answer(response, "GitHub")
        return _pull(args["repo"], parse_answer(response, "GitHub", _Pull), changed, existing=False)


def _pull(repo: str, pr: _Pull, changed: list[str], *, existing: bool) -> dict[str, Any]:
    return {
        "repo": repo,
        "number": pr.number,
        "url": pr.html_url,
        "head": pr.head.ref,
        "base": pr.base.ref,
        "files": changed,
        "already_open": existing,
    }


async def comment(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Comment on an issue or a pull request."""
    async with _client(ctx) as client:
        url = f"{_repo(args)}/issues/{args['number']}/comments"
        made = await _answer(client, "POST", url, _Comment, json={"body": args["body"]})
    return {"repo": args["repo"], "number": args["number"], "comment_id": made.id, "url": made.html_url}


async def delete_comment(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Delete an issue or pull request comment (the undo of `comment`), returning its issue and text; one already gone counts as deleted."""
    url = f"{_repo(args)}/issues/comments/{args['comment_id']}"
    out: dict[str, Any] = {"repo": args["repo"], "comment_id": args["comment_id"], "deleted": True}
    async with _client(ctx) as client:
        try:
            doc = await _answer(client, "GET", url, _IssueComment)
            await _response(client, "DELETE", url)
        except ToolError as exc:
            if exc.type != "not_found":
                raise
            return out
    return out | {"number": int(doc.issue_url.rsplit("/", 1)[-1]), "body": doc.body or ""}
