"""What every route of the approval service's API shares: refusals as HTTP errors, bodies parsed after the checks."""

from typing import Any, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel, ValidationError

from schemas import refuse_nul
from services.approval.domain import Refusal

__all__ = ["error", "json_body", "parse"]

_M = TypeVar("_M", bound=BaseModel)


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
