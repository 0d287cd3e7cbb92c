"""The GitHub connector reading answers it cannot use (an HTML page, another shape): `bad_answer` naming the path, not a parse error."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx

from connectors import github_tools as gh
from servicekit.toolcontract import ToolContext

Respond = Callable[[httpx.Request], httpx.Response]
HTML = "<html><body>Sign in to continue</body></html>"
COMMENT = {
    "id": 11, "body": "+1", "user": {"login": "ana"}, "created_at": "2026-01-01T00:00:00Z",
    "html_url": "https://github.test/acme/web/issues/7#issuecomment-11", "issue_url": "https://api.github.test/repos/acme/web/issues/7",
}  # fmt: skip
PR_ARGS = {"repo": "acme/web", "head": "fix/typo", "title": "Fix", "files": ["README.md"]}


def _ctx() -> ToolContext:
    return ToolContext(
        pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1", attempt=1,
        credential="ghp_tok", connection={"base_url": "https://api.github.test"},
    )  # fmt: skip


def _by_path(answers: dict[str, Any], status: int = 200) -> Respond:
    """Answer each `METHOD path` with its JSON document, or with its text as an HTML page when it is a string."""

    def respond(request: httpx.Request) -> httpx.Response:
        doc = answers[f"{request.method} {request.url.path}"]
        code = 201 if request.method == "POST" else status
        if isinstance(doc, str):
            return httpx.Response(code, text=doc, headers={"content-type": "text/html; charset=utf-8"})
        return httpx.Response(code, json=doc)

    return respond


def _pull_request_answers(**more: Any) -> dict[str, Any]:
    return {
        "GET /repos/acme/web": {"full_name": "acme/web", "default_branch": "main"},
        "GET /repos/acme/web/compare/main...fix/typo": {"status": "ahead", "files": [{"filename": "README.md"}]},
        "POST /repos/acme/web/pulls": {"number": 3, "head": {"ref": "fix/typo"}, "base": {"ref": "main"}, "html_url": "u"},
    } | more


async def test_an_html_page_instead_of_json_is_a_bad_answer_naming_the_path_status_and_first_bytes(answer: Any, refused: Any) -> None:
    answer(_by_path({"GET /repos/acme/web/contents/README.md": HTML}))
    error = await refused(gh.get_file, _ctx(), {"repo": "acme/web", "path": "README.md"})
    assert (error.type, error.retryable, error.maybe_applied) == ("bad_answer", True, True)
    assert "GitHub answered GET api.github.test/repos/acme/web/contents/README.md with HTTP 200 (text/html; charset=utf-8)" in error.message
    assert "Invalid JSON" in error.message
    assert "it starts b'<html><body>Sign in to continue" in error.message


async def test_reads_of_another_shape_name_the_first_broken_field(answer: Any, refused: Any) -> None:
    file = {"repo": "acme/web", "path": "README.md"}
    answer(_by_path({"GET /repos/acme/web/contents/README.md": {"type": "file", "path": "README.md", "encoding": "base64", "content": ""}}))
    assert "(entry.sha: Field required)" in (await refused(gh.get_file, _ctx(), file)).message
    entry = {"type": "file", "path": "README.md", "sha": "s", "encoding": "base64", "content": "bm90IGJhc2U2NA"}
    answer(_by_path({"GET /repos/acme/web/contents/README.md": entry}))
    assert "(entry.content: Base64 decoding error" in (await refused(gh.get_file, _ctx(), file)).message

    issue = {"repo": "acme/web", "number": 7}
    answer(_by_path({"GET /repos/acme/web/issues/7": [{"number": 7}]}))
    error = await refused(gh.get_issue, _ctx(), issue)
    assert error.type == "bad_answer"
    assert "GitHub answered GET api.github.test/repos/acme/web/issues/7 with HTTP 200" in error.message
    answer(_by_path({"GET /repos/acme/web/issues/7": {"number": 7, "labels": ["bug"]}, "GET /repos/acme/web/issues/7/comments": []}))
    assert "(labels.0: Input should be an object)" in (await refused(gh.get_issue, _ctx(), issue)).message
    answer(_by_path({"GET /repos/acme/web/issues/7": {"number": 7}, "GET /repos/acme/web/issues/7/comments": {"comments": [COMMENT]}}))
    error = await refused(gh.get_issue, _ctx(), issue)
    assert "GET api.github.test/repos/acme/web/issues/7/comments with HTTP 200" in error.message
    assert "cannot be read (Input should be a valid array)" in error.message

    answer(_by_path(_pull_request_answers(**{"GET /repos/acme/web": {"full_name": "acme/web"}})))
    assert "(default_branch: Field required)" in (await refused(gh.open_pull_request, _ctx(), PR_ARGS)).message
    answer(_by_path(_pull_request_answers(**{"GET /repos/acme/web/compare/main...fix/typo": {"files": [{"name": "README.md"}]}})))
    assert "(files.0.filename: Field required)" in (await refused(gh.open_pull_request, _ctx(), PR_ARGS)).message


async def test_writes_answered_with_another_shape_are_bad_answers_that_may_have_been_applied(answer: Any, refused: Any) -> None:
    answer(_by_path({"POST /repos/acme/web/issues/7/comments": HTML}))
    error = await refused(gh.comment, _ctx(), {"repo": "acme/web", "number": 7, "body": "hi"})
    assert (error.type, error.maybe_applied) == ("bad_answer", True)  # the comment may be there: a write without a key is not retried
    assert "GitHub answered POST api.github.test/repos/acme/web/issues/7/comments with HTTP 201 (text/html" in error.message
    answer(_by_path({"POST /repos/acme/web/issues/7/comments": {"body": "hi"}}))
    assert "(id: Field required)" in (await refused(gh.comment, _ctx(), {"repo": "acme/web", "number": 7, "body": "hi"})).message

    answer(_by_path(_pull_request_answers(**{"POST /repos/acme/web/pulls": [{"number": 3}]})))
    error = await refused(gh.open_pull_request, _ctx(), PR_ARGS)
    assert error.type == "bad_answer"
    assert "GitHub answered POST api.github.test/repos/acme/web/pulls with HTTP 201" in error.message

    sent: list[str] = []
    comment = {"GET /repos/acme/web/issues/comments/11": COMMENT | {"issue_url": "https://api.github.test/repos/acme/web"}}
    respond = _by_path(comment | {"DELETE /repos/acme/web/issues/comments/11": {}})
    answer(lambda request: sent.append(request.method) or respond(request))  # type: ignore[func-returns-value]
    error = await refused(gh.delete_comment, _ctx(), {"repo": "acme/web", "comment_id": 11})
    assert "(issue_url: String should match pattern" in error.message
    assert sent == ["GET"]  # an answer that cannot be read stops the tool before it deletes anything


async def test_a_directory_is_still_not_a_file(answer: Any, refused: Any) -> None:
    answer(_by_path({"GET /repos/acme/web/contents/src": [{"type": "file", "name": "app.py", "path": "src/app.py", "sha": "s"}]}))
    assert (await refused(gh.get_file, _ctx(), {"repo": "acme/web", "path": "src"})).type == "not_a_file"


async def test_well_formed_answers_still_read_as_before(answer: Any) -> None:
    content = base64.encodebytes(b"# Web\n").decode()
    second = "https://api.github.test/repos/acme/web/issues/7/comments?per_page=100&page=2"

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json=[COMMENT | {"id": 12, "body": None, "user": {"login": "bo"}}])
        if request.url.path.endswith("/comments") and request.method == "GET":
            return httpx.Response(200, json=[COMMENT], headers={"link": f'<{second}>; rel="next"'})
        return _by_path({
            "GET /repos/acme/web/contents/README.md": {"type": "file", "encoding": "base64", "size": 6, "name": "README.md",
                                                       "path": "README.md", "sha": "abc", "content": content},
            "GET /repos/acme/web/issues/7": {"number": 7, "title": "Typo", "body": None, "state": "open", "user": {"login": "ana"},
                                             "labels": [{"name": "bug", "color": "red"}], "comments": 2},
            "POST /repos/acme/web/issues/7/comments": COMMENT,
            "GET /repos/acme/web/issues/comments/11": COMMENT,
            "DELETE /repos/acme/web/issues/comments/11": {},
        } | _pull_request_answers())(request)  # fmt: skip

    answer(respond)
    file = await gh.get_file(_ctx(), {"repo": "acme/web", "path": "README.md"})
    assert file == {"repo": "acme/web", "path": "README.md", "sha": "abc", "content": "# Web\n", "untrusted": ["content"]}
    issue = await gh.get_issue(_ctx(), {"repo": "acme/web", "number": 7})
    assert (issue["number"], issue["title"], issue["body"], issue["author"], issue["labels"]) == (7, "Typo", "", "ana", ["bug"])
    assert issue["comments"] == [
        {"author": "ana", "body": "+1", "created_at": "2026-01-01T00:00:00Z"},
        {"author": "bo", "body": "", "created_at": "2026-01-01T00:00:00Z"},
    ]
    pull = await gh.open_pull_request(_ctx(), PR_ARGS)
    assert pull == {"repo": "acme/web", "number": 3, "url": "u", "head": "fix/typo", "base": "main", "files": ["README.md"],
                    "already_open": False}  # fmt: skip
    made = await gh.comment(_ctx(), {"repo": "acme/web", "number": 7, "body": "+1"})
    assert made == {"repo": "acme/web", "number": 7, "comment_id": 11, "url": COMMENT["html_url"]}
    deleted = await gh.delete_comment(_ctx(), {"repo": "acme/web", "comment_id": 11})
    assert deleted == {"repo": "acme/web", "comment_id": 11, "deleted": True, "number": 7, "body": "+1"}


async def test_an_error_answer_that_is_not_json_still_reads_as_its_status(answer: Any, refused: Any) -> None:
    file = {"repo": "acme/web", "path": "README.md"}
    answer(lambda request: httpx.Response(502, text=HTML, headers={"content-type": "text/html"}))
    error = await refused(gh.get_file, _ctx(), file)
    assert (error.type, error.retryable, error.message) == ("http_502", True, f"GitHub: {HTML}")
    answer(lambda request: httpx.Response(500, content=b"[" * 100_000, headers={"content-type": "application/json"}))
    error = await refused(gh.get_file, _ctx(), file)  # deeper than json reads: its text, not a RecursionError
    assert (error.type, error.message) == ("http_500", "GitHub: " + "[" * 300)
    answer(lambda request: httpx.Response(503, content=b"\xff\xfe\x00{", headers={"content-type": "application/json"}))
    assert (await refused(gh.get_file, _ctx(), file)).type == "http_503"
