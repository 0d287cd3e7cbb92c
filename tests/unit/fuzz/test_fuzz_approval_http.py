"""Every HTTP endpoint of the approval service, fuzzed: a clear 4xx (or a 2xx read), never a 500, nothing approved.

The API runs over the in-memory repository through httpx's ASGI transport (no sockets). One request
is pending; the fuzzer sends hostile path segments, query strings, JSON bodies and headers, with no
token, a forged one, or a real approver's, to every route the app declares (so a new route is fuzzed
with no change here). It is never told the pending action's digest, so no grant may come of it.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi.routing import APIRoute
from fuzz_inputs import HOSTILE_STRINGS, JSON_VALUES
from hypothesis import given
from hypothesis import strategies as st

from schemas import ActionDecidedData, Reason
from servicekit import REPO_ROOT, EventOutlet, SigningKey, ToolCatalog, action_digest
from services.approval import auth
from services.approval.api import create_api
from services.approval.domain import GroupsConfig
from services.approval.ratelimit import ApiRateLimits
from services.approval.repository import InMemoryApprovalRepository
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
ARGS = {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"}
KEYS = Path(tempfile.mkdtemp(prefix="tidegate-fuzz-keys-"))


class Published:
    def __init__(self) -> None:
        self.types: list[str] = []

    async def publish(self, topic: str, event: Any) -> None:
        self.types.append(event.type)


class NoWebhooks:
    async def send(self, url: str, headers: dict[str, str], body: bytes) -> Any:
        raise AssertionError("no webhook is configured")


def approval_service(repo: InMemoryApprovalRepository, published: Published) -> ApprovalService:
    return ApprovalService(
        repo=repo,
        publisher=EventOutlet(published.publish),
        key=SigningKey.load_or_create(KEYS, "approval"),
        groups=GroupsConfig(),
        settings=ApprovalSettings(),
        catalog=CATALOG,
        sender=NoWebhooks(),  # type: ignore[arg-type]
        base_url=lambda: "http://approvals.test",
    )


ROUTES = [
    (method, route.path)
    for route in create_api(
        approval_service(InMemoryApprovalRepository(), Published()), ApiRateLimits(per_token="1/minute", per_ip="1/minute")
    ).routes
    if isinstance(route, APIRoute)
    for method in sorted(route.methods)
]

HEADERS = st.sampled_from(["none", "forged", "approver", "garbage"])
BODIES = st.one_of(
    st.none(),
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "action_digest": HOSTILE_STRINGS,
            "comment": HOSTILE_STRINGS,
            "edited_args": JSON_VALUES,
            "url": HOSTILE_STRINGS,
            "approvers": JSON_VALUES,
            "tenant_id": HOSTILE_STRINGS,
        },
    ),
    st.binary(max_size=300),
)


def as_url(text: str) -> str:
    """`text` percent-encoded as UTF-8 bytes (a lone surrogate too: a client can send any bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


async def exchange(
    method: str, path: str, segment: str, real_id: bool, params: dict[str, str], body: Any, who: str
) -> tuple[int, list[str], str]:
    """Send one request to a fresh service holding one pending request; the status, what it published, the record's status."""
    repo = InMemoryApprovalRepository()
    published = Published()
    service = approval_service(repo, published)
    decided = ActionDecidedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund", args=ARGS,
        action_digest=action_digest("acme", "issue_refund", ARGS), outcome="escalate",
        reasons=[Reason(code="needs_human_approval", policy_id="refund-threshold")], policy_version="v", risk="financial",
        latency_ms=0.1, requested_by="alice@acme.example",
    )  # fmt: skip
    record = await service.on_decided(decided, event_id="e1", at=datetime.now(UTC))
    assert record is not None
    token = auth.new_token()
    await repo.add_token(auth.hash_token(token), "bob@acme.example", "acme", ["finance"])
    headers = {
        "none": {},
        "forged": {"Authorization": f"Bearer {auth.new_token()}"},
        "approver": {"Authorization": f"Bearer {token}"},
        "garbage": {"Authorization": "Bearer \x7f' OR 1=1 --", "Content-Type": "application/json; charset=utf-7"},
    }[who]
    segment = record.approval_id if real_id else as_url(segment)
    url = path.replace("{approval_id}", segment).replace("{endpoint_id}", segment)
    if params:
        url += "?" + "&".join(f"{as_url(k)}={as_url(v)}" for k, v in params.items())
    content = body if isinstance(body, bytes) else (json.dumps(body).encode("utf-8", "surrogatepass") if body is not None else None)
    api = create_api(service, ApiRateLimits(per_token="100000/minute", per_ip="100000/minute"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api, raise_app_exceptions=False), base_url="http://approvals.test"
    ) as client:
        response = await client.request(method, url, content=content, headers=headers)
    after = await repo.get(record.approval_id)
    assert after is not None
    return response.status_code, published.types, after.status


@given(
    route=st.sampled_from(ROUTES),
    segment=HOSTILE_STRINGS.filter(lambda s: len(s) < 5000),
    real_id=st.booleans(),
    params=st.dictionaries(
        st.sampled_from(["status", "tenant", "limit", "offset", "since", "tool", "q"]),
        HOSTILE_STRINGS.filter(lambda s: len(s) < 2000),
        max_size=3,
    ),
    body=BODIES,
    who=HEADERS,
)
def test_every_endpoint_answers_hostile_input_without_a_500_and_approves_nothing(
    route: tuple[str, str], segment: str, real_id: bool, params: dict[str, str], body: Any, who: str
) -> None:
    method, path = route
    status, published, record_status = asyncio.run(exchange(method, path, segment, real_id, params, body, who))
    assert status < 500, f"{method} {path} answered {status}"
    assert "tidegate.approval.granted" not in published
    assert record_status != "granted"
