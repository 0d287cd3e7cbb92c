"""The kit's librdkafka consumer takes the options FastStream gives aiokafka's, and refuses what it cannot honour."""

from __future__ import annotations

import logging

import pytest

from servicekit.rdkafka import librdkafka_options


def test_faststreams_consumer_options_become_librdkafkas() -> None:
    config = librdkafka_options(
        {
            "bootstrap_servers": ["a:9092", "b:9092"],
            "client_id": "tidegate-policy",
            "sasl_plain_username": "policy",
            "sasl_plain_password": "secret",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "fetch_min_bytes": 65536,
            "fetch_max_wait_ms": 500,
            "auto_offset_reset": "earliest",
            "enable_auto_commit": False,
            "loop": None,  # aiokafka's own: nothing for librdkafka
            "consumer_timeout_ms": 200,
            "group_instance_id": None,  # unset: left to librdkafka
        }
    )
    assert config["bootstrap.servers"] == "a:9092,b:9092"  # a cluster's list, as aiokafka splits it
    assert (config["sasl.username"], config["sasl.mechanisms"], config["security.protocol"]) == (
        "policy",
        "SCRAM-SHA-512",
        "SASL_PLAINTEXT",
    )
    assert (config["fetch.min.bytes"], config["fetch.wait.max.ms"], config["auto.offset.reset"]) == (65536, 500, "earliest")
    assert config["enable.auto.commit"] is False  # the kit commits what is handled, never the client
    assert config["partition.assignment.strategy"] == "roundrobin"  # FastStream's aiokafka consumers' assignor
    assert isinstance(config["logger"], logging.Logger)
    assert "group.instance.id" not in config
    assert "consumer_timeout_ms" not in config


def test_an_unknown_option_or_auto_commit_is_refused() -> None:
    with pytest.raises(ValueError, match="no librdkafka option for send_buffer_bytes"):
        librdkafka_options({"send_buffer_bytes": 1 << 20})
    with pytest.raises(ValueError, match="enable_auto_commit must be off"):
        librdkafka_options({"enable_auto_commit": True})
    assert librdkafka_options({})["enable.auto.commit"] is False  # off even when nobody said
