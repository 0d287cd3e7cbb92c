"""The plumbing every Tidegate service is built from.

Settings, the bus, the database, signing, tracing, the tool catalog, the tool contract and the process runner.
Imports schemas, never a service.
"""

from servicekit.authority import (
    AUTHORITY,
    SERVICES,
    Authority,
    Refusal,
    appended_ms,
    deployment_authority,
    encode_signed,
    next_sequence,
    sign_as_client,
    sign_as_operator,
    sign_as_producer,
    sign_event,
)
from servicekit.bus import Bus, Handler, Reject, once_delivered, once_delivered_together, service_bus
from servicekit.bus_auth import kafka_options
from servicekit.bus_rights import ADMIN, AGENT, OPS
from servicekit.catalog import CatalogError, ToolCatalog
from servicekit.catalog_checks import declaration_problems
from servicekit.control import ControlState
from servicekit.db import NO_FLUSH, UNFLUSHED, SchemaNotReady, apply_migrations, check_migrations, connect, create_pool
from servicekit.digests import action_digest, approval_document, approval_message, authorization_message
from servicekit.key_files import client_key, client_private_key, operator_key, service_key
from servicekit.outlet import EventOutlet, Outlet, Recorded
from servicekit.producer import Producer
from servicekit.runner import ServiceProcess, configure_logging, run_service
from servicekit.settings import EX_CONFIG, REPO_ROOT, KitSettings, settings_problems
from servicekit.signing import Keyring, SigningKey, key_id_of, load_public, rotate
from servicekit.toolcontract import Tool, ToolContext, ToolError
from servicekit.topics_admin import Dropped, TopicCheck, catalog_topic_names, check_topics, drop_prefix, ensure_topics, stale_rights
from servicekit.tracing import Attr, current_traceparent, install_tracing, span

__all__ = [
    "ADMIN",
    "AGENT",
    "AUTHORITY",
    "EX_CONFIG",
    "NO_FLUSH",
    "OPS",
    "REPO_ROOT",
    "SERVICES",
    "UNFLUSHED",
    "Attr",
    "Authority",
    "Bus",
    "CatalogError",
    "ControlState",
    "Dropped",
    "EventOutlet",
    "Handler",
    "Keyring",
    "KitSettings",
    "Outlet",
    "Producer",
    "Recorded",
    "Refusal",
    "Reject",
    "SchemaNotReady",
    "ServiceProcess",
    "SigningKey",
    "Tool",
    "ToolCatalog",
    "ToolContext",
    "ToolError",
    "TopicCheck",
    "action_digest",
    "appended_ms",
    "apply_migrations",
    "approval_document",
    "approval_message",
    "authorization_message",
    "catalog_topic_names",
    "check_migrations",
    "check_topics",
    "client_key",
    "client_private_key",
    "configure_logging",
    "connect",
    "create_pool",
    "current_traceparent",
    "declaration_problems",
    "deployment_authority",
    "drop_prefix",
    "encode_signed",
    "ensure_topics",
    "install_tracing",
    "kafka_options",
    "key_id_of",
    "load_public",
    "next_sequence",
    "once_delivered",
    "once_delivered_together",
    "operator_key",
    "rotate",
    "run_service",
    "service_bus",
    "service_key",
    "settings_problems",
    "sign_as_client",
    "sign_as_operator",
    "sign_as_producer",
    "sign_event",
    "span",
    "stale_rights",
]
