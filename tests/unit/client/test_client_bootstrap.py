"""Where the client looks for Kafka: its own setting, else the deployment's, else the default port.

A client started beside `tidegate up` with the deployment's `TIDEGATE_KAFKA_BOOTSTRAP` exported went to 127.0.0.1:19092,
another deployment's broker on a shared host.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tidegate.client import ClientSettings


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TIDEGATE_CLIENT_KAFKA_BOOTSTRAP", "TIDEGATE_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)


def test_the_deployments_bootstrap_is_taken_when_the_clients_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ClientSettings().kafka_bootstrap == "127.0.0.1:19092"
    monkeypatch.setenv("TIDEGATE_KAFKA_BOOTSTRAP", "127.0.0.1:39092")
    assert ClientSettings().kafka_options()["bootstrap_servers"] == "127.0.0.1:39092"


def test_the_clients_own_bootstrap_comes_first_then_an_explicit_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_KAFKA_BOOTSTRAP", "127.0.0.1:39092")
    monkeypatch.setenv("TIDEGATE_CLIENT_KAFKA_BOOTSTRAP", "broker:9092")
    assert ClientSettings().kafka_bootstrap == "broker:9092"
    assert ClientSettings(kafka_bootstrap="other:1").kafka_bootstrap == "other:1"
    assert ClientSettings().model_copy(update={"kafka_bootstrap": "copy:2"}).kafka_bootstrap == "copy:2"


def test_an_agent_named_as_a_service_of_the_deployment_is_refused_at_start() -> None:
    """The deployment refuses its proposals (`signer_not_allowed`); the settings say so before any is sent."""
    with pytest.raises(ValidationError, match="names the deployment's own services"):
        ClientSettings(proposer="tidegate/planner/playbook")
    assert ClientSettings(proposer="external:tidegate-helper").proposer == "external:tidegate-helper"
    with pytest.raises(ValidationError, match="names the deployment's own services"):
        ClientSettings(proposer="Tidegate\uff0fplanner")  # a fullwidth slash reads as the planner's name too
    with pytest.raises(ValidationError, match=r"mix scripts \(CYRILLIC, LATIN\)"):
        ClientSettings(proposer="t\u0456degate/planner")
