"""Salesforce: read an account, contact or opportunity; add or delete a task; move an opportunity's stage; through `simple-salesforce`.

`simple-salesforce` is synchronous (requests): each call runs in a worker thread. It does not retry, so
the executor stays the one layer that does. The credential is an OAuth access token (session id) for
`connection.instance_url` (`https://<domain>.my.salesforce.com`); `connection.ca_bundle` names a CA file
for an instance behind a private CA (the stand-in's self-signed certificate in tests).
Moving a stage is gated like a financial action on the opportunity's amount: the proposal states
`amount_usd` for the policy's threshold, and the tool refuses when Salesforce records a larger amount.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, RootModel
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors._http import parse_answer
from servicekit.toolcontract import ToolContext, ToolError

__all__ = ["add_task", "delete_task", "get_record", "update_opportunity_stage"]

FIELDS = {
    "Account": ["Id", "Name", "Industry", "Type", "Website", "Description", "OwnerId"],
    "Contact": ["Id", "FirstName", "LastName", "Email", "Phone", "Title", "AccountId", "Description"],
    "Opportunity": ["Id", "Name", "StageName", "Amount", "CurrencyIsoCode", "CloseDate", "AccountId", "Description"],
}
UNTRUSTED = ["Name", "Description", "Title", "Website"]


_Shape = TypeVar("_Shape", bound=BaseModel)


class _Record(RootModel[dict[str, Any]]):
    """An account, contact or opportunity: a JSON object of its fields (Salesforce's own names)."""


class _Task(BaseModel):
    WhatId: str | None = None
    Subject: str | None = None
    Description: str | None = None


class _Opportunity(BaseModel):
    StageName: str | None = None
    Amount: float | None = None


class _Created(BaseModel):
    """What `POST .../sobjects/<Object>/` answers: the new record's id (and `success`, `errors`)."""

    id: str


@dataclass
class _Org:
    """A Salesforce client and every answer its session received, so the connector reads them through the guard."""

    sf: Salesforce
    answers: list[requests.Response] = field(default_factory=list)

    def keep(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """The session's response hook."""
        self.answers.append(response)


@contextmanager
def _sf(ctx: ToolContext) -> Iterator[_Org]:
    if not ctx.credential:
        raise ToolError("credential_missing", "no Salesforce access token for this call")
    instance = ctx.connection.get("instance_url")
    if not instance:
        raise ToolError("connection_incomplete", "the tenant's Salesforce grant has no instance_url (`--set instance_url=https://…`)")
    session = requests.Session()
    if ctx.connection.get("ca_bundle"):
        session.verify = ctx.connection["ca_bundle"]
        session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment would win over this CA
    version = ctx.connection.get("api_version", "59.0")
    try:
        org = _Org(Salesforce(instance_url=instance, session_id=ctx.credential, session=session, version=version))
        session.hooks["response"].append(org.keep)
        yield org
    finally:
        session.close()


def _detail(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list):
        return "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in content if isinstance(e, dict))[:500]
    return str(content)[:500]


def _codes(exc: SalesforceError) -> set[str]:
    return {str(e.get("errorCode")) for e in exc.content if isinstance(e, dict)} if isinstance(exc.content, list) else set()


def _call(fn: Any, *args: Any) -> None:
    """One SDK call, its failures as ToolErrors; what it answered is read by `_read`, through the guard."""
    try:
        fn(*args)
    except SalesforceExpiredSession as exc:
        raise ToolError("credential_rejected", "Salesforce refused the tenant's session (HTTP 401)") from exc
    except SalesforceRefusedRequest as exc:
        if "REQUEST_LIMIT_EXCEEDED" in _codes(exc):
            raise ToolError("rate_limited", f"Salesforce: {_detail(exc)}", retryable=True) from exc
        raise ToolError("permission_denied", f"Salesforce: {_detail(exc)}") from exc
    except SalesforceResourceNotFound as exc:
        raise ToolError("not_found", f"Salesforce: {_detail(exc)}") from exc
    except SalesforceMalformedRequest as exc:
        code = next(iter(sorted(_codes(exc))), "malformed_request").lower()
        raise ToolError(f"salesforce_{code}", f"Salesforce: {_detail(exc)}") from exc
    except SalesforceError as exc:
        # A 503 too may come from a gateway after Salesforce did the work: a create without a key is not sent again.
        raise ToolError(f"http_{exc.status}", f"Salesforce: {_detail(exc)}", retryable=exc.status >= 500, maybe_applied=True) from exc
    except requests.ConnectTimeout as exc:
        raise ToolError("unreachable", f"Salesforce: {type(exc).__name__}", retryable=True) from exc
    except requests.RequestException as exc:  # sent or not, we cannot tell
        raise ToolError("transport_error", f"Salesforce: {type(exc).__name__}", retryable=True, maybe_applied=True) from exc


def _read(org: _Org, shape: type[_Shape], fn: Any, *args: Any) -> _Shape:
    """One SDK call and its answer read as `shape`, not as the SDK decoded it: an answer that is not JSON of that shape is `bad_answer`."""

    def call() -> None:
        with suppress(requests.JSONDecodeError):  # a 2xx answer that is not JSON: parse_answer says what came instead
            fn(*args)

    _call(call)
    return parse_answer(org.answers[-1], "Salesforce", shape)


def _get_record(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    obj = args["object"]
    with _sf(ctx) as org:
        record = _read(org, _Record, getattr(org.sf, obj).get, args["record_id"]).root
    fields = {k: record.get(k) for k in FIELDS[obj] if k in record}
    return {"object": obj, "record": fields, "untrusted": [f"record.{k}" for k in UNTRUSTED if k in fields]}


def _add_task(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    task = {"WhatId": args["what_id"], "Subject": args["subject"], "Status": "Not Started", "Priority": "Normal"}
    if args.get("description"):
        task["Description"] = args["description"]
    with _sf(ctx) as org:
        made = _read(org, _Created, org.sf.Task.create, task)
    return {"task_id": made.id, "what_id": args["what_id"]}


def _delete_task(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    with _sf(ctx) as org:
        try:
            task = _read(org, _Task, org.sf.Task.get, args["task_id"])
            _call(org.sf.Task.delete, args["task_id"])
        except ToolError as exc:
            if exc.type != "not_found":
                raise
            return {"task_id": args["task_id"], "deleted": True}
    kept = {"what_id": task.WhatId, "subject": task.Subject}
    return {"task_id": args["task_id"], "deleted": True, **kept, "description": task.Description or ""}


def _update_stage(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    with _sf(ctx) as org:
        opp = _read(org, _Opportunity, org.sf.Opportunity.get, args["opportunity_id"])
        recorded = float(opp.Amount or 0)
        if recorded > float(args["amount_usd"]) + 0.005:
            raise ToolError(
                "amount_mismatch",
                f"Salesforce records {recorded:.2f} on {args['opportunity_id']}, more than the {args['amount_usd']:.2f} proposed",
            )
        _call(org.sf.Opportunity.update, args["opportunity_id"], {"StageName": args["stage"]})
    return {
        "opportunity_id": args["opportunity_id"],
        "previous_stage": opp.StageName,
        "stage": args["stage"],
        "amount_usd": recorded,
    }


async def get_record(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """An account, contact or opportunity; names and descriptions are untrusted."""
    return await asyncio.to_thread(_get_record, ctx, args)


async def add_task(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """A task (a note to follow up) on an account or opportunity."""
    return await asyncio.to_thread(_add_task, ctx, args)


async def delete_task(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Delete a task (the undo of `add_task`), returning what it said; one already gone counts as deleted."""
    return await asyncio.to_thread(_delete_task, ctx, args)


async def update_opportunity_stage(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Move an opportunity to a stage, refused when its recorded amount exceeds the amount the policy saw."""
    return await asyncio.to_thread(_update_stage, ctx, args)
