"""A Python client for outside agents: propose governed tool calls, wait for humans, serve governed tools.

Imports only schemas/, aiokafka and pydantic, never a service:

    async with Tidegate() as tg:
        outcome = await tg.propose("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]})
        if isinstance(outcome, Escalated):
            outcome = await outcome.decision()
"""

from tidegate.client.client import ResultPending, Tidegate
from tidegate.client.governed import SERVE_CONCURRENCY, GovernanceError, GovernedTool, decided, governed, serve_tool, unwrap
from tidegate.client.ledger import ActionIdReused, CallLedger, MemoryLedger, MemoryProposals, ProposalLedger, SqliteLedger, SqliteProposals
from tidegate.client.limits import Unsendable
from tidegate.client.memory import MemoryTransport
from tidegate.client.outcomes import Decided, Denied, Escalated, Executed, Failed, Outcome, Rejected
from tidegate.client.progress import ANSWER_TOPICS, Progress
from tidegate.client.served import ServedCall, ToolFailed, served_call
from tidegate.client.settings import ClientSettings
from tidegate.client.signing import EnvelopeSigner, KeySigner, Signer, SigningNotWired, signer_for
from tidegate.client.sync import SyncTidegate
from tidegate.client.transport import Delivery, KafkaTransport, Position, Transport
from tidegate.client.trust import DeploymentKeys, Trust, TrustNotWired

__all__ = [
    "ANSWER_TOPICS",
    "SERVE_CONCURRENCY",
    "ActionIdReused",
    "CallLedger",
    "ClientSettings",
    "Decided",
    "Delivery",
    "Denied",
    "DeploymentKeys",
    "EnvelopeSigner",
    "Escalated",
    "Executed",
    "Failed",
    "GovernanceError",
    "GovernedTool",
    "KafkaTransport",
    "KeySigner",
    "MemoryLedger",
    "MemoryProposals",
    "MemoryTransport",
    "Outcome",
    "Position",
    "Progress",
    "ProposalLedger",
    "Rejected",
    "ResultPending",
    "ServedCall",
    "Signer",
    "SigningNotWired",
    "SqliteLedger",
    "SqliteProposals",
    "SyncTidegate",
    "Tidegate",
    "ToolFailed",
    "Transport",
    "Trust",
    "TrustNotWired",
    "Unsendable",
    "decided",
    "governed",
    "serve_tool",
    "served_call",
    "signer_for",
    "unwrap",
]
