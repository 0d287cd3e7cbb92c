"""What every route of the approval service's API shares: refusals as HTTP errors, bodies parsed after the checks."""

import re
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

from schemas import refuse_nul
from services.approval.domain import Refusal

__all__ = ["error", "json_body", "parse", "refuse_control_characters"]

_M = TypeVar("_M", bound=BaseModel)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode's control characters (Cc): U+0000 above all, which no database text holds


async def refuse_control_characters(request: Request) -> None:
    """Refuse an id in the path or a filter in the query that holds a control character: `422 invalid_param`, on every route.

    No id or filter of the service holds one, and PostgreSQL refuses U+0000 in any text: checked once here, before
    the credential, rather than failing on the database (a 500) in whichever route reads it.
    """
    for where, params in (("path", request.path_params.items()), ("query", request.query_params.multi_items())):
        for name, value in params:
            found = _CONTROL.search(value) if isinstance(value, str) else None
            if found is not None:
                message = f"{where} parameter {name} holds the control character U+{ord(found.group()):04X}; no id or filter holds one"
                raise HTTPException(422, detail={"code": "invalid_param", "message": message})


def error(refusal: Refusal) -> HTTPException:
    """`refusal` as the HTTP error the API answers with (`{"detail": {"code", "message"}}`)."""
    return HTTPException(status_code=refusal.status, detail={"code": refusal.code, "message": refusal.message})


def parse(model: type[_M], raw: bytes, *, optional: bool = False) -> _M:
    """The request body as `model`, parsed only once the caller is known to be allowed (422 otherwise)."""
    try:
        body = model.model_validate_json(raw or (b"{}" if optional else b""))
        refuse_nul(raw, where=())  # what it holds is kept and published: no database or event can hold U+0000
        return body
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, detail={"code": "invalid_body", "message": problems[:1000]}) from exc


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI of a body the handler parses itself (after the authorization checks)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}
