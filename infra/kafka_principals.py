"""Create the credentials and SCRAM logins of every Kafka principal (run by infra.sh up, idempotent).

    python infra/kafka_principals.py --bootstrap 127.0.0.1:19092 --credentials-dir .infra/kafka/credentials

Passwords already in `<credentials-dir>/<principal>.properties` are kept; missing ones are generated.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from servicekit import KitSettings, ToolCatalog
from servicekit.bus_admin import ensure_principals


def _catalog_topic_tools() -> list[str]:
    kit = KitSettings()
    return [t.name for t in ToolCatalog.load(*kit.tool_dirs).values() if t.kind == "topic"] if kit.tools_dir.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, make the principals, print one line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--credentials-dir", type=Path, required=True)
    parser.add_argument("--tool", action="append", default=None, help="a tool served over Kafka (default: the catalog's)")
    args = parser.parse_args(argv)
    tools = args.tool if args.tool is not None else _catalog_topic_tools()
    made = asyncio.run(ensure_principals(args.bootstrap, args.credentials_dir, tools))
    print(f"[infra] kafka: {len(made) + 1} principals (admin, {', '.join(made)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
