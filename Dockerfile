# syntax=docker/dockerfile:1
# One image for every Tidegate service and the CLI (docker-compose.yml runs
# `tidegate service run <name>` and `tidegate topics ensure` from it).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# pg_dump for `tidegate db backup` (Debian bookworm's client is PostgreSQL 15's, the server's version).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

# Third-party dependencies first, in their own layer, at the exact versions the project is tested
# with: rebuilt only when requirements.lock changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The project itself. Only the package directories are copied (the build context also holds
# .infra/ and .venv/, which must not end up in the image).
COPY connectors ./connectors
COPY schemas ./schemas
COPY servicekit ./servicekit
COPY services ./services
COPY standins ./standins
COPY systems ./systems
COPY tidegate ./tidegate
COPY pyproject.toml README.m[d] ./
# With the services' extra (the CLI, the services, the MCP gateway), held to the lock: all in the layer above already.
RUN pip install -c requirements.lock '.[services]'

# Data read at run time: the tool catalog and the policy pack (globs, so a missing directory
# does not break the build).
COPY catalo[g] ./catalog/
COPY polici[e]s ./policies/

RUN useradd --system --uid 10001 --home-dir /var/lib/tidegate --shell /usr/sbin/nologin tidegate \
 && mkdir -p /var/lib/tidegate/keys /var/lib/tidegate/db \
 && chown -R tidegate:tidegate /var/lib/tidegate \
 && chmod 0700 /var/lib/tidegate/keys /var/lib/tidegate/db

# The commit the image was built from, for `tidegate --version`, start lines and /health (the image has no .git):
# docker-compose passes it from the shell (`TIDEGATE_COMMIT=$(git rev-parse --short=12 HEAD) docker compose build`).
ARG TIDEGATE_COMMIT=
ENV TIDEGATE_COMMIT=$TIDEGATE_COMMIT

ENV TIDEGATE_KEYS_DIR=/var/lib/tidegate/keys \
    TIDEGATE_TOOLS_DIR=/app/catalog/tools \
    TIDEGATE_POLICY_DIR=/app/policies/default

USER tidegate
ENTRYPOINT ["tidegate"]
CMD ["--help"]
