"""streams/records.py: the dataclasses mirror the .avsc files; datums become nested records."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams import records
from streams.records import (
    RECORD_TYPES,
    Address,
    Buyer,
    Item,
    Order,
    Shipping,
    record_from_datum,
    record_to_datum,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def avro_records(schema: Any, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every named record inside an Avro schema, by short name, with its fields by name."""
    if isinstance(schema, list):
        for branch in schema:
            avro_records(branch, found)
    elif isinstance(schema, dict) and schema["type"] == "record":
        found[schema["name"]] = {f["name"]: f for f in schema["fields"]}
        for f in schema["fields"]:
            avro_records(f["type"], found)
    elif isinstance(schema, dict) and schema["type"] == "array":
        avro_records(schema["items"], found)
    return found


ALL_AVRO_RECORDS: dict[str, dict[str, Any]] = {}
for _path in sorted(SCHEMA_DIR.glob("*.avsc")):
    avro_records(json.loads(_path.read_text(encoding="utf-8")), ALL_AVRO_RECORDS)


def dataclass_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def test_every_schema_has_a_record_type_and_back():
    top_level = {p.stem for p in SCHEMA_DIR.glob("*.avsc")}
    assert set(RECORD_TYPES) == top_level
    assert {"Buyer", "Address", "Shipping", "Item"} < set(ALL_AVRO_RECORDS)


@pytest.mark.parametrize("name", sorted(ALL_AVRO_RECORDS))
def test_dataclass_fields_are_exactly_the_avro_fields(name):
    cls = getattr(records, name)
    assert {f.name for f in dataclasses.fields(cls)} == set(ALL_AVRO_RECORDS[name])


@pytest.mark.parametrize("name", sorted(ALL_AVRO_RECORDS))
def test_dataclass_defaults_are_the_avro_defaults(name):
    avro = {k: f["default"] for k, f in ALL_AVRO_RECORDS[name].items() if "default" in f}
    fields = dataclasses.fields(getattr(records, name))
    ours = {
        f.name: dataclass_default(f)
        for f in fields
        if dataclass_default(f) is not dataclasses.MISSING
    }
    assert ours == avro


def test_record_from_datum_builds_nested_types(registry, order_json):
    order = record_from_datum(Order, registry.from_json("Order", order_json))
    assert isinstance(order.buyer, Buyer) and isinstance(order.buyer.address, Address)
    assert isinstance(order.shipping, Shipping) and isinstance(order.shipping.address, Address)
    assert [type(i) for i in order.items] == [Item]
    assert (order.buyer.address.street, order.items[0].quantity) == ("千代田1-1", 2)


def test_record_from_datum_keeps_a_null_nested_record(registry, order_json):
    order_json["shipping"] = None
    assert record_from_datum(Order, registry.from_json("Order", order_json)).shipping is None


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_record_to_datum_inverts_record_from_datum(registry, valid_json, name):
    datum = registry.from_json(name, valid_json[name])
    assert record_to_datum(record_from_datum(RECORD_TYPES[name], datum)) == datum


def test_faust_codecs_give_typed_records(registry):
    from faust.serializers import codecs

    from streams.records import Decision, register_codecs

    assert "avro-decision" in register_codecs(registry)
    decision = Decision(
        order_id="o-1",
        merchant_id="m-1",
        decision="REVIEW",
        score=0.6,
        reasons=["AMOUNT_OVER_REVIEW_LIMIT"],
        policy_version="default-x",
        amount=150_000,
        event_time=datetime(2026, 11, 1, tzinfo=UTC),
        decided_at=datetime(2026, 11, 1, tzinfo=UTC),
        latency_event_ms=1.0,
        latency_ingest_ms=2.0,
    )
    wire = codecs.dumps("avro-decision", decision)
    assert wire[:2] == b"\xc3\x01"
    assert codecs.loads("avro-decision", wire) == decision
