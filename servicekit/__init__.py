"""The plumbing every Tidegate service is built from.

Settings, the bus, the database, signing, tracing, the tool catalog and the process runner.
Imports schemas, never a service.
"""

from servicekit.bus import Bus, Handler, Reject, make_broker
from servicekit.bus_auth import kafka_options
from servicekit.bus_rights import ADMIN, AGENT, OPS
from servicekit.catalog import CatalogError, ToolCatalog
from servicekit.control import ControlState
from servicekit.db import SchemaNotReady, apply_migrations, check_migrations, create_pool
from servicekit.digests import action_digest, approval_message, authorization_message
from servicekit.runner import ServiceProcess, configure_logging
from servicekit.settings import REPO_ROOT, KitSettings
from servicekit.signing import Keyring, SigningKey
from servicekit.topics_admin import catalog_topic_names, ensure_topics
from servicekit.tracing import Attr, current_traceparent, install_tracing, span

__all__ = [
    "ADMIN",
    "AGENT",
    "OPS",
    "REPO_ROOT",
    "Attr",
    "Bus",
    "CatalogError",
    "ControlState",
    "Handler",
    "Keyring",
    "KitSettings",
    "Reject",
    "SchemaNotReady",
    "ServiceProcess",
    "SigningKey",
    "ToolCatalog",
    "action_digest",
    "apply_migrations",
    "approval_message",
    "authorization_message",
    "catalog_topic_names",
    "check_migrations",
    "configure_logging",
    "create_pool",
    "current_traceparent",
    "ensure_topics",
    "install_tracing",
    "kafka_options",
    "make_broker",
    "span",
]
