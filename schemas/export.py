"""Generate the committed contract documents: JSON Schema per event type and one AsyncAPI 3 document.

Run `python -m schemas.export docs/contract` (or `make contract`); a test fails when they drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.envelope import Envelope
from schemas.reasons import ReasonCode
from schemas.tools import ToolSpec
from schemas.topics import DEFAULT_PREFIX, TOPICS, topic_spec

__all__ = ["JSON_SCHEMA_DIALECT", "asyncapi_document", "event_schemas", "render", "write"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_TOOL_TOPICS = ("tools.{tool}.requests", "tools.{tool}.replies")


def _event_type(model: type[Envelope]) -> str:
    return str(model.model_fields["type"].default)


def event_schemas() -> dict[str, dict[str, Any]]:
    """Event type → JSON Schema of its whole envelope."""
    models: dict[str, type[Envelope]] = {}
    for spec in [*TOPICS.values(), topic_spec("tools.x.requests"), topic_spec("tools.x.replies")]:
        for model in spec.events:
            models[_event_type(model)] = model
    return {
        name: {"$schema": JSON_SCHEMA_DIALECT, **TypeAdapter(model).json_schema(mode="serialization")}
        for name, model in sorted(models.items())
    }


def asyncapi_document() -> dict[str, Any]:
    """One AsyncAPI 3.0 document describing every topic, its messages and who sends and receives."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    specs = [*TOPICS.values(), topic_spec("tools.x.requests"), topic_spec("tools.x.replies")]
    for spec in specs:
        name = spec.name.replace("tools.x.", "tools.{tool}.")
        channel_id = name.replace(".", "_").replace("{tool}", "tool")
        refs = {}
        for model in spec.events:
            etype = _event_type(model)
            msg_id = etype.removeprefix("tidegate.").replace(".", "_")
            schema = TypeAdapter(model).json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
            for def_name, definition in schema.pop("$defs", {}).items():
                schemas[def_name] = definition
            schemas[model.__name__] = schema
            messages[msg_id] = {
                "name": etype,
                "title": model.__name__,
                "summary": (model.__doc__ or "").strip().splitlines()[0],
                "contentType": "application/cloudevents+json",
                "headers": {
                    "type": "object",
                    "properties": {
                        "content-type": {"type": "string", "const": "application/cloudevents+json"},
                        "traceparent": {"type": "string", "description": "W3C trace context."},
                    },
                },
                "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
                "bindings": {
                    "kafka": {"key": {"type": "string", "description": "task_id (UTF-8) for task-scoped events; the scope for control."}}
                },
            }
            refs[msg_id] = {"$ref": f"#/components/messages/{msg_id}"}
        channels[channel_id] = {
            "address": DEFAULT_PREFIX + name,
            "description": f"{spec.description} Producers: {', '.join(spec.producers)}. Consumers: {', '.join(spec.consumers)}.",
            "messages": refs,
            "bindings": {
                "kafka": {
                    "topic": DEFAULT_PREFIX + name,
                    "partitions": spec.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": [spec.kafka_config()["cleanup.policy"]],
                        "retention.ms": spec.retention_ms,
                        "message.timestamp.type": spec.kafka_config()["message.timestamp.type"],  # stamped by the broker
                    },
                }
            },
        }
        operations[f"send_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Produced by {', '.join(spec.producers)}.",
        }
        operations[f"receive_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Consumed by {', '.join(spec.consumers)}.",
        }
    schemas["ReasonCode"] = {"type": "string", "enum": [c.value for c in ReasonCode]}
    tool_schema = ToolSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    for def_name, definition in tool_schema.pop("$defs", {}).items():
        schemas[def_name] = definition
    schemas["ToolSpec"] = tool_schema
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tidegate events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 (structured JSON mode) on Kafka. Topic names carry a prefix, `tidegate.` by default. "
            "No string of an event may hold U+0000 (JSON's `\\u0000`): consumers refuse such an event as `invalid_event`.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def render() -> dict[str, str]:
    """Relative path → file content of every generated contract document."""
    files = {f"jsonschema/{name}.json": json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in event_schemas().items()}
    tool_spec = {"$schema": JSON_SCHEMA_DIALECT, **ToolSpec.model_json_schema()}
    files["jsonschema/tool-spec.json"] = json.dumps(tool_spec, indent=2, sort_keys=True) + "\n"
    files["asyncapi.json"] = json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n"
    return files


def write(out: Path) -> list[Path]:
    """Write every generated document under `out` and return their paths."""
    written = []
    for rel, content in render().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/contract")
    for p in write(target):
        print(p)
