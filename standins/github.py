"""The project's own stand-in for GitHub's REST API, for the calls the GitHub connector makes.

Wire format as GitHub's: repository, contents (base64), issues and their comments (paginated with a
`Link` header), compare, pulls (one open pull request per head and base: 422 `Validation Failed`
otherwise), issue comments (created, read and deleted by id); errors `{"message": …, "documentation_url": …, "status": …}` (401 "Bad
credentials", 404 "Not Found"), and the primary rate limit as 403 with `x-ratelimit-remaining: 0`.
State lives in memory; `inject` scripts failures.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["GitHubStandIn"]

_DOCS = "https://docs.github.com/rest"


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, "documentation_url": _DOCS, "status": str(status), **extra}, status_code=status)


@dataclass
class GitHubStandIn:
    """One GitHub account's repositories; accepts one bearer token."""

    token: str = "ghp_standin"
    url: str = ""  # set by whoever serves it
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5001))
    _injected: list[tuple[str, int, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        r = "/repos/{owner}/{name}"
        self.app = Starlette(
            routes=[
                Route(r, self._repo),
                Route(r + "/contents/{path:path}", self._contents),
                Route(r + "/issues/{number:int}", self._issue),
                Route(r + "/issues/{number:int}/comments", self._comments, methods=["GET", "POST"]),
                Route(r + "/issues/comments/{comment_id:int}", self._comment_by_id, methods=["GET", "DELETE"]),
                Route(r + "/compare/{spec:path}", self._compare),
                Route(r + "/pulls", self._pulls, methods=["GET", "POST"]),
            ]
        )
        self.app.add_middleware(_Gate, standin=self)  # type: ignore[arg-type]

    # --- set-up ----------------------------------------------------------------------------------

    def add_repo(self, full_name: str, files: dict[str, str], default_branch: str = "main") -> None:
        """A repository whose default branch holds `files`."""
        self.repos[full_name] = {"default_branch": default_branch, "branches": {default_branch: dict(files)}, "issues": {}, "pulls": []}

    def add_branch(self, full_name: str, branch: str, changes: dict[str, str]) -> None:
        """A branch off the default branch with `changes` (path → new text)."""
        repo = self.repos[full_name]
        repo["branches"][branch] = {**repo["branches"][repo["default_branch"]], **changes}

    def add_issue(self, full_name: str, number: int, title: str, body: str, comments: tuple[str, ...] = ()) -> None:
        """An open issue with comments."""
        self.repos[full_name]["issues"][number] = {
            "number": number, "title": title, "body": body, "state": "open", "user": {"login": "customer"},
            "labels": [{"name": "bug"}], "comments": [self._comment(full_name, number, c, "customer") for c in comments],
        }  # fmt: skip

    def inject(self, status: int, body: dict[str, Any], *, method: str = "POST", headers: dict[str, str] | None = None) -> None:
        """Answer the next `method` request with this response (after authentication)."""
        self._injected.append((method, status, body, headers or {}))

    def _comment(self, full_name: str, number: int, body: str, login: str) -> dict[str, Any]:
        cid = next(self._ids)
        return {"id": cid, "body": body, "user": {"login": login}, "created_at": "2026-11-30T10:00:00Z",
                "html_url": f"https://github.com/{full_name}/issues/{number}#issuecomment-{cid}",
                "issue_url": f"https://api.github.com/repos/{full_name}/issues/{number}"}  # fmt: skip

    # --- the API ---------------------------------------------------------------------------------

    def _find(self, request: Request) -> tuple[str, dict[str, Any] | None]:
        name = f"{request.path_params['owner']}/{request.path_params['name']}"
        return name, self.repos.get(name)

    async def _repo(self, request: Request) -> Response:
        name, repo = self._find(request)
        if repo is None:
            return _error(404, "Not Found")
        return JSONResponse({"full_name": name, "default_branch": repo["default_branch"], "private": True})

    async def _contents(self, request: Request) -> Response:
        _, repo = self._find(request)
        if repo is None:
            return _error(404, "Not Found")
        files = repo["branches"].get(request.query_params.get("ref", repo["default_branch"]))
        path = request.path_params["path"]
        if files is None or path not in files:
            return _error(404, "Not Found")
        raw = files[path].encode()
        sha = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        return JSONResponse({"type": "file", "encoding": "base64", "size": len(raw), "name": path.rsplit("/", 1)[-1], "path": path,
                             "sha": sha, "content": base64.encodebytes(raw).decode()})  # fmt: skip

    async def _issue(self, request: Request) -> Response:
        _, repo = self._find(request)
        issue = None if repo is None else repo["issues"].get(request.path_params["number"])
        if issue is None:
            return _error(404, "Not Found")
        return JSONResponse({k: v for k, v in issue.items() if k != "comments"} | {"comments": len(issue["comments"])})

    async def _comment_by_id(self, request: Request) -> Response:
        """`GET` or `DELETE .../issues/comments/{id}` (204), or 404 when no issue of the repository has it."""
        _, repo = self._find(request)
        for issue in [] if repo is None else repo["issues"].values():
            found = [c for c in issue["comments"] if c["id"] == request.path_params["comment_id"]]
            if found and request.method == "GET":
                return JSONResponse(found[0])
            if found:
                issue["comments"].remove(found[0])
                return Response(status_code=204)
        return _error(404, "Not Found")

    async def _comments(self, request: Request) -> Response:
        name, repo = self._find(request)
        number = request.path_params["number"]
        issue = None if repo is None else repo["issues"].get(number)
        if issue is None:
            return _error(404, "Not Found")
        if request.method == "POST":
            body = (await request.json()).get("body")
            if not body:
                return _error(422, "Validation Failed", errors=[{"resource": "IssueComment", "code": "missing_field", "field": "body"}])
            made = self._comment(name, number, body, "tidegate-bot")
            issue["comments"].append(made)
            return JSONResponse(made, status_code=201)
        per_page = int(request.query_params.get("per_page", "30"))
        page = int(request.query_params.get("page", "1"))
        chunk = issue["comments"][(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(issue["comments"]):
            nxt = request.url.include_query_params(page=page + 1, per_page=per_page)
            headers["Link"] = f'<{nxt}>; rel="next"'
        return JSONResponse(chunk, headers=headers)

    async def _compare(self, request: Request) -> Response:
        _, repo = self._find(request)
        base, _, head = request.path_params["spec"].partition("...")
        if repo is None or base not in repo["branches"] or head not in repo["branches"]:
            return _error(404, "Not Found")
        old, new = repo["branches"][base], repo["branches"][head]
        changed = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
        files = [{"filename": p, "status": "added" if p not in old else "removed" if p not in new else "modified"} for p in changed]
        return JSONResponse({"status": "ahead", "ahead_by": 1 if files else 0, "files": files})

    async def _pulls(self, request: Request) -> Response:
        name, repo = self._find(request)
        if repo is None:
            return _error(404, "Not Found")
        if request.method == "GET":
            head = request.query_params.get("head", "").partition(":")[2]
            return JSONResponse([p for p in repo["pulls"] if p["state"] == "open" and (not head or p["head"]["ref"] == head)])
        doc = await request.json()
        head, base = doc.get("head"), doc.get("base")
        if head not in repo["branches"] or base not in repo["branches"]:
            return _error(422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        if any(p["head"]["ref"] == head and p["base"]["ref"] == base and p["state"] == "open" for p in repo["pulls"]):
            message = f"A pull request already exists for {name.split('/')[0]}:{head}."
            return _error(422, "Validation Failed", errors=[{"resource": "PullRequest", "code": "custom", "message": message}])
        number = len(repo["pulls"]) + 1
        pr = {"number": number, "state": "open", "title": doc.get("title"), "body": doc.get("body"), "head": {"ref": head},
              "base": {"ref": base}, "html_url": f"https://github.com/{name}/pull/{number}"}  # fmt: skip
        repo["pulls"].append(pr)
        return JSONResponse(pr, status_code=201)


class _Gate:
    """Authentication, request log and scripted failures in front of every route."""

    def __init__(self, app: Any, standin: GitHubStandIn) -> None:
        self.app = app
        self.standin = standin

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        self.standin.requests.append((request.method, request.url.path))
        if request.headers.get("authorization") != f"Bearer {self.standin.token}":
            await _error(401, "Bad credentials")(scope, receive, send)
            return
        for i, (method, status, body, headers) in enumerate(self.standin._injected):
            if method == request.method:
                del self.standin._injected[i]
                await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


if __name__ == "__main__":  # python -m standins.github: the same as python -m standins github
    from standins.__main__ import main

    main(only="github")
