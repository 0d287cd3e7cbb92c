"""The one error shape of the approval service's API, `{"detail": {"code", "message"}}`, whatever raised the error.

FastAPI answers a bad query or path parameter, and Starlette an unknown route or method, in shapes of their own;
these handlers answer them in the documented one. Every message is one line of at most `MAX_MESSAGE` characters,
so an error never echoes a large value (a 5 MB edited arg) back.
"""

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

__all__ = ["MAX_MESSAGE", "install_error_handlers", "one_line"]

MAX_MESSAGE = 1000  # two ids at their longest (256 characters each) and what to do still fit


def one_line(message: str) -> str:
    """`message` on one line, cut to `MAX_MESSAGE` characters (saying so)."""
    flat = " ".join(message.split())
    return flat if len(flat) <= MAX_MESSAGE else f"{flat[:MAX_MESSAGE]}… (cut, {len(flat)} characters)"


def _detail(status: int, detail: Any, request: Request) -> dict[str, Any]:
    """Our `{"code", "message"}` with its message made one line; Starlette's bare text as a code of its status."""
    if isinstance(detail, dict) and "code" in detail:
        return {**detail, "message": one_line(str(detail.get("message", "")))}
    where = f"{request.method} {request.url.path}"
    messages = {404: f"no route {request.url.path}", 405: f"{where} is not allowed (see the Allow header)"}
    return {"code": _code(status), "message": one_line(messages.get(status, f"{where}: {detail}"))}


def _code(status: int) -> str:
    """The status's name as a code: `not_found`, `method_not_allowed`…"""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return f"http_{status}"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": _detail(exc.status_code, exc.detail, request)}, status_code=exc.status_code, headers=exc.headers)


async def _invalid_param(request: Request, exc: Exception) -> JSONResponse:
    """A path or query parameter (or a declared body) that does not validate: 422, every problem in one line."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = "; ".join(f"{e['loc'][0]} parameter {'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in errors)
    code = "invalid_body" if errors and errors[0]["loc"][0] == "body" else "invalid_param"
    return JSONResponse({"detail": {"code": code, "message": one_line(problems)}}, status_code=422)


def install_error_handlers(api: FastAPI) -> None:
    """Answer parameter validation errors and every HTTP error (ours, FastAPI's, Starlette's) in the one shape."""
    api.add_exception_handler(RequestValidationError, _invalid_param)
    api.add_exception_handler(HTTPException, _http_error)
