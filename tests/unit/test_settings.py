"""Settings: every variable documented, derived local defaults, bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text(encoding="utf-8")
    missing = [n for n in Settings.model_fields if f"`SHINSA_{n.upper()}`" not in text]
    assert missing == []


def test_local_addresses_follow_the_ports(monkeypatch):
    monkeypatch.setenv("SHINSA_KAFKA_PORT", "19092")
    monkeypatch.setenv("SHINSA_REDIS_PORT", "16379")
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.redis_url == "redis://127.0.0.1:16379/0"


def test_topic_prefix_applies_to_every_topic(monkeypatch):
    monkeypatch.setenv("SHINSA_TOPIC_PREFIX", "prod.")
    assert load_settings().topic("orders") == "prod.orders"


def test_a_bad_value_is_refused(monkeypatch):
    monkeypatch.setenv("SHINSA_PARTITIONS", "zero")
    with pytest.raises(ValidationError):
        load_settings()


def test_a_missing_tool_skips_a_test_on_a_laptop_and_fails_it_in_ci(monkeypatch):
    from tests.unit import conftest

    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="nosuchtool missing"):
        conftest.require("nosuchtool", False, "apt-get install it")
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="under CI=true a missing tool fails"):
        conftest.require("nosuchtool", False, "apt-get install it")
    conftest.require("present", True, "")  # a tool that is there: nothing happens
