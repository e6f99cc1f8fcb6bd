"""streams/codec.py: Avro single-object encoding, schema evolution, natural JSON, error reasons."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.codec import CodecError, SchemaRegistry, schema_fingerprint
from streams.records import RECORD_TYPES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
NULL_FINGERPRINT = 7195948357588979594  # Avro spec: CRC-64-AVRO of the schema "null"
PHONE = "090-1234-5678"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

VALID_ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "merchant_id": "m0001",
    "event_time": 0,
    "amount": 1,
    "payment_method": "CARD",
    "buyer": {"name": "", "address": {"postal_code": "1000001", "street": "千代田1-1"}},
}


def order_schema(drop: tuple[str, ...] = (), extra: tuple[dict, ...] = ()) -> dict[str, Any]:
    """Another writer version of Order: the current schema minus `drop`, plus `extra` fields."""
    schema = json.loads((SCHEMA_DIR / "Order.avsc").read_text(encoding="utf-8"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in drop] + list(extra)
    return schema


def parsed(schema: dict[str, Any]) -> Any:
    return fastavro.parse_schema(schema, named_schemas={})


def reason_of(registry: SchemaRegistry, name: str, raw: Any, **kw: Any) -> CodecError:
    with pytest.raises(CodecError) as info:
        registry.decode(name, raw, **kw) if isinstance(raw, bytes) else registry.from_json(
            name, raw
        )
    return info.value


def put(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


# ------------------------------------------------------------ wire format


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_every_record_type_round_trips_through_avro(registry, valid_json, name):
    datum = registry.from_json(name, valid_json[name])
    assert registry.decode(name, registry.encode(name, datum)) == datum


def test_json_bytes_decode_like_from_json(registry, order_json):
    raw = b"  " + orjson.dumps(order_json)
    assert registry.decode("Order", raw) == registry.from_json("Order", order_json)


def test_fingerprint_of_null_is_the_avro_spec_value():
    fp = schema_fingerprint("null")
    assert int.from_bytes(fp, "little") == NULL_FINGERPRINT
    assert fp.hex() == "8a8f25cce724dd63"


def test_wire_header_is_magic_then_little_endian_fingerprint(registry):
    assert registry.encode_with("null", None) == b"\xc3\x01" + bytes.fromhex("8a8f25cce724dd63")


def test_encoded_event_names_its_writer_schema(registry, order_json):
    raw = registry.encode("Order", registry.from_json("Order", order_json))
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == schema_fingerprint(registry.reader("Order"))
    assert raw[2:10] == registry.fingerprint_of("Order")


# ------------------------------------------------------------ schema evolution


def test_older_writer_decodes_with_reader_defaults(order_json):
    registry, old = SchemaRegistry(SCHEMA_DIR), order_schema(drop=("items", "device_id"))
    registry.register(old)
    datum = registry.from_json("Order", {**order_json, "device_id": "dev-1"})
    old_datum = {k: v for k, v in datum.items() if k not in ("items", "device_id")}
    decoded = registry.decode("Order", registry.encode_with(parsed(old), old_datum))
    assert decoded == {**datum, "items": [], "device_id": None}


def test_newer_writer_field_is_ignored_by_the_reader(order_json):
    new = order_schema(extra=({"name": "loyalty_points", "type": "long", "default": 0},))
    registry = SchemaRegistry(SCHEMA_DIR)
    registry.register(new)
    datum = registry.from_json("Order", order_json)
    raw = registry.encode_with(parsed(new), {**datum, "loyalty_points": 7})
    assert registry.decode("Order", raw) == datum


def test_unregistered_writer_version_is_unknown_schema(registry, order_json):
    datum = registry.from_json("Order", order_json)
    raw = registry.encode_with(parsed(order_schema(drop=("items",))), datum)
    assert reason_of(registry, "Order", raw).reason == "unknown_schema"


# ------------------------------------------------------------ decode errors


def test_garbage_is_undecodable(registry):
    assert reason_of(registry, "Order", b"\x00\x01not-an-event\xff").reason == "undecodable"


def test_unknown_fingerprint_is_unknown_schema(registry):
    raw = b"\xc3\x01" + bytes(8) + b"\x02x"
    assert reason_of(registry, "Order", raw).reason == "unknown_schema"


def test_order_decoded_as_payment_is_schema_mismatch(registry, order_json):
    raw = registry.encode("Order", registry.from_json("Order", order_json))
    assert reason_of(registry, "Payment", raw).reason == "schema_mismatch"


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_avro_body_is_corrupt(registry, order_json, cut):
    raw = registry.encode("Order", registry.from_json("Order", order_json))
    assert reason_of(registry, "Order", raw[:-cut]).reason == "corrupt_avro"


def test_trailing_bytes_after_avro_body_are_corrupt(registry, order_json):
    raw = registry.encode("Order", registry.from_json("Order", order_json))
    assert reason_of(registry, "Order", raw + b"\x00").reason == "corrupt_avro"


def test_invalid_json_text(registry):
    assert reason_of(registry, "Order", b'{"order_id": "o-1",').reason == "invalid_json"


def test_missing_field_names_its_path(registry, order_json):
    del order_json["buyer"]["address"]["street"]
    err = reason_of(registry, "Order", order_json)
    assert err.reason == "missing_field"
    assert "Order.buyer.address.street" in err.detail


def test_wrong_type_names_its_path(registry, order_json):
    order_json["amount"] = "4980"
    err = reason_of(registry, "Order", order_json)
    assert err.reason == "wrong_type"
    assert "Order.amount" in err.detail


def test_unknown_enum_symbol(registry, order_json):
    order_json["payment_method"] = "BITCOIN"
    assert reason_of(registry, "Order", order_json).reason == "unknown_enum_symbol"


def test_oversized_event_is_rejected_before_decoding(registry, order_json):
    raw = registry.encode("Order", registry.from_json("Order", order_json))
    assert reason_of(registry, "Order", raw, max_bytes=len(raw) - 1).reason == "oversized"
    assert registry.decode("Order", raw, max_bytes=len(raw))["order_id"] == "o-1"


@pytest.mark.parametrize(
    "path, reason",
    [
        (("amount",), "wrong_type"),
        (("payment_method",), "unknown_enum_symbol"),
        (("event_time",), "wrong_type"),
        (("items", 0, "quantity"), "wrong_type"),
        (("buyer", "address"), "wrong_type"),
    ],
)
def test_error_detail_never_contains_the_value(registry, order_json, path, reason):
    put(order_json, path, PHONE)
    err = reason_of(registry, "Order", order_json)
    assert err.reason == reason
    assert PHONE not in str(err)


# ------------------------------------------------------------ JSON timestamps


def test_epoch_millis_and_iso_with_offset_are_the_same_instant(registry, order_json):
    as_iso = registry.from_json("Order", {**order_json, "event_time": "2026-10-01T12:00:00+09:00"})
    as_ms = registry.from_json("Order", {**order_json, "event_time": 1790823600000})
    assert as_iso["event_time"] == as_ms["event_time"] == datetime(2026, 10, 1, 3, tzinfo=UTC)


def test_naive_iso_timestamp_is_rejected(registry, order_json):
    order_json["event_time"] = "2026-10-01T12:00:00"
    assert reason_of(registry, "Order", order_json).reason == "wrong_type"


@pytest.mark.parametrize(
    "stamp", [10**16, -(10**16), "0001-01-01T00:00:00+09:00", "9999-12-31T23:59:59-09:00"]
)
def test_out_of_range_timestamp_is_a_codec_error(registry, order_json, stamp):
    order_json["event_time"] = stamp
    assert reason_of(registry, "Order", order_json).reason == "wrong_type"


def test_far_epoch_millis_keep_every_millisecond(registry, order_json):
    order_json["event_time"] = 203716219437219
    datum = registry.from_json("Order", order_json)
    decoded = registry.decode("Order", registry.encode("Order", datum))
    assert decoded["event_time"] == EPOCH + timedelta(milliseconds=203716219437219)


# ------------------------------------------------------------ property


@given(
    amount=st.integers(min_value=1, max_value=2**63 - 1),
    name=st.text(),
    email=st.none() | st.emails(),
    millis=st.integers(min_value=946684800000, max_value=4102444800000),
)
def test_json_to_avro_and_back_is_identity(registry, amount, name, email, millis):
    order = {**VALID_ORDER, "amount": amount, "event_time": millis}
    order["buyer"] = {**VALID_ORDER["buyer"], "name": name, "email": email}
    datum = registry.from_json("Order", order)
    assert registry.decode("Order", registry.encode("Order", datum)) == datum
    buyer = datum["buyer"]
    assert (datum["amount"], buyer["name"], buyer["email"]) == (amount, name, email)


# ------------------------------------------------------------ the wallet's evolution (v1 → v2)


@pytest.mark.parametrize("name", ["Payment", "Outcome", "Decision", "DecisionTrace"])
def test_events_written_before_the_wallet_still_decode(registry, valid_json, name):
    """Old producers keep working: an event of the schema in schemas/history decodes, the new
    fields at their defaults (subject ORDER, no counterparty, no channel)."""
    old = json.loads((SCHEMA_DIR / "history" / f"{name}.v1.avsc").read_text(encoding="utf-8"))
    datum = {**valid_json.get(name, {})} or old_datum(registry, name)
    raw = registry.encode_with(parsed(old), registry.from_json(name, datum))
    decoded = registry.decode(name, raw)
    defaults = {
        "Payment": {"counterparty_account_id": None, "channel": None},
        "Outcome": {"subject": "ORDER"},
        "Decision": {"subject": "ORDER", "payment_id": None, "payment_kind": None},
        "DecisionTrace": {"subject": "ORDER", "payment_kind": None},
    }[name]
    assert {k: decoded[k] for k in defaults} == defaults


@pytest.mark.parametrize("name", ["Payment", "Outcome", "Decision", "DecisionTrace"])
def test_events_of_the_wallet_decode_with_the_old_schema(registry, valid_json, name):
    """Old consumers keep working: a new event read with the v1 schema drops the new fields."""
    old = parsed(
        json.loads((SCHEMA_DIR / "history" / f"{name}.v1.avsc").read_text(encoding="utf-8"))
    )
    new_values = {
        "Payment": {"kind": "WITHDRAW", "account_id": "a-1", "channel": "ATM"},
        "Outcome": {"subject": "PAYMENT"},
        "Decision": {"subject": "PAYMENT", "payment_id": "o-1", "payment_kind": "TRANSFER"},
        "DecisionTrace": {"subject": "PAYMENT", "payment_kind": "TRANSFER"},
    }[name]
    datum = {**valid_json.get(name, {})} or old_datum(registry, name)
    datum = registry.from_json(name, datum | new_values)
    raw = registry.encode(name, datum)
    body = io.BytesIO(raw[10:])
    decoded = fastavro.schemaless_reader(body, registry.reader(name), old)
    assert set(decoded) == {f["name"] for f in old["fields"]}
    assert decoded[next(iter(decoded))] == datum[next(iter(decoded))]


def old_datum(registry: SchemaRegistry, name: str) -> dict[str, Any]:
    """A valid Decision or DecisionTrace (valid_json has only the input events)."""
    base = {
        "order_id": "o-1",
        "decided_at": 1790000000000,
        "decision": "APPROVE",
        "score": 0.1,
        "reasons": ["SCORE_RULES_ONLY"],
        "policy_version": "default-00000000",
    }
    if name == "Decision":
        return base | {
            "merchant_id": "m0001",
            "amount": 100,
            "event_time": 1790000000000,
            "latency_event_ms": 1.0,
            "latency_ingest_ms": 1.0,
        }
    return base | {
        "merchant_override": False,
        "thresholds": {},
        "inputs": {},
        "fired": [],
        "list_hits": {},
        "model_version": "logreg-v0",
        "model_warm": False,
        "model_score": 0.0,
        "contributions": {},
        "features": {},
    }


# ------------------------------------------------------------ the buyer's gender (segments)


def test_orders_without_gender_decode_and_old_readers_drop_it(registry, valid_json):
    """Buyer.gender is optional: an order of the schema before it decodes with no gender, and a
    consumer still on that schema reads an order with a gender, without it."""
    old = parsed(json.loads((SCHEMA_DIR / "history" / "Order.v1.avsc").read_text(encoding="utf-8")))
    datum = registry.from_json("Order", valid_json["Order"])
    assert registry.decode("Order", registry.encode_with(old, datum))["buyer"]["gender"] is None
    with_gender = registry.from_json(
        "Order", valid_json["Order"] | {"buyer": valid_json["Order"]["buyer"] | {"gender": "MALE"}}
    )
    assert with_gender["buyer"]["gender"] == "MALE"
    body = io.BytesIO(registry.encode("Order", with_gender)[10:])
    decoded = fastavro.schemaless_reader(body, registry.reader("Order"), old)
    assert "gender" not in decoded["buyer"]
    with pytest.raises(CodecError):
        registry.from_json(
            "Order", valid_json["Order"] | {"buyer": valid_json["Order"]["buyer"] | {"gender": "M"}}
        )


def test_decisions_before_payment_method_decode_and_old_readers_drop_it(registry):
    """Decision.payment_method (campaigns) is optional: v2 decisions decode without it."""
    old = parsed(
        json.loads((SCHEMA_DIR / "history" / "Decision.v2.avsc").read_text(encoding="utf-8"))
    )
    datum = registry.from_json("Decision", old_datum(registry, "Decision"))
    assert registry.decode("Decision", registry.encode_with(old, datum))["payment_method"] is None
    datum["payment_method"] = "CARD"
    body = io.BytesIO(registry.encode("Decision", datum)[10:])
    decoded = fastavro.schemaless_reader(body, registry.reader("Decision"), old)
    assert "payment_method" not in decoded and decoded["order_id"] == datum["order_id"]


def test_a_cancelled_outcome_is_read_and_older_outcomes_still_decode(registry, valid_json):
    """CANCELLED (campaigns revoke a cancelled purchase's ticket) is the v3 Outcome's symbol;
    an outcome written with v2 decodes as before."""
    old = parsed(
        json.loads((SCHEMA_DIR / "history" / "Outcome.v2.avsc").read_text(encoding="utf-8"))
    )
    datum = registry.from_json("Outcome", valid_json["Outcome"])
    assert registry.decode("Outcome", registry.encode_with(old, datum)) == datum
    cancelled = registry.from_json("Outcome", valid_json["Outcome"] | {"kind": "CANCELLED"})
    assert registry.decode("Outcome", registry.encode("Outcome", cancelled))["kind"] == "CANCELLED"


# ---------------------------------------------------------------- generated writers


def datum_of(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any valid datum of a parsed schema, edge values included (for the generated writers)."""
    if isinstance(schema, str):
        if schema in named:
            return datum_of(named[schema], named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
            "string": st.text(max_size=40),
            "bytes": st.binary(max_size=40),
        }[schema]
    if isinstance(schema, list):
        return st.one_of([datum_of(branch, named) for branch in schema])
    kind, logical = schema["type"], schema.get("logicalType")
    if logical == "timestamp-millis":
        moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))
        return st.one_of(moments.map(lambda d: d.replace(tzinfo=UTC)), st.integers(0, 2**45))
    if logical == "date":
        return st.dates()
    if kind == "record":
        fields = {f["name"]: datum_of(f["type"], named) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(datum_of(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=12), datum_of(schema["values"], named), max_size=6)
    return datum_of(kind, named)


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_the_generated_writer_writes_fastavro_s_bytes(registry, name):
    """Events are written by a writer generated per schema (streams/avro_writer.py), read by
    fastavro: for any datum of any schema, the bytes are fastavro's own."""
    parsed = registry.reader(name)
    named = parsed.get("__named_schemas", {})

    @given(datum_of(parsed, named))
    def check(datum: dict[str, Any]) -> None:
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, parsed, datum)
        assert registry.encode(name, datum)[10:] == expected.getvalue()

    check()


def test_the_generated_writer_fills_defaults_like_fastavro(registry, order_json):
    """A datum without its optional fields (a producer on an older schema) is written with the
    schema's defaults, as fastavro writes it."""
    order = registry.from_json("Order", order_json)
    decision = {
        "order_id": order["order_id"],
        "merchant_id": order["merchant_id"],
        "decision": "APPROVE",
        "score": 0.1,
        "reasons": [],
        "policy_version": "p1",
        "amount": 100,
        "event_time": datetime(2026, 11, 30, tzinfo=UTC),
        "decided_at": datetime(2026, 11, 30, 0, 0, 1, tzinfo=UTC),
        "latency_event_ms": 1000.0,
        "latency_ingest_ms": 5.0,
    }
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, registry.reader("Decision"), decision)
    assert registry.encode("Decision", decision)[10:] == expected.getvalue()
    assert registry.decode("Decision", registry.encode("Decision", decision))["subject"] == "ORDER"


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_the_generated_reader_reads_what_fastavro_reads(registry, name):
    """Events written with the current schema are read by a reader generated per schema
    (streams/avro_reader.py): for any datum of any schema, the same dict as fastavro's."""
    parsed = registry.reader(name)
    named = parsed.get("__named_schemas", {})

    @given(datum_of(parsed, named))
    def check(datum: dict[str, Any]) -> None:
        raw = registry.encode(name, datum)
        expected = fastavro.schemaless_reader(io.BytesIO(raw[10:]), parsed, None)
        assert registry.decode(name, raw) == expected

    check()


@given(st.binary(max_size=300))
def test_any_body_decodes_or_is_refused_as_corrupt(registry, body):
    """Garbage after a valid header is an Order or a clear CodecError, never another error."""
    header = b"\xc3\x01" + registry.fingerprint_of("Order")
    try:
        registry.decode("Order", header + body)
    except CodecError as exc:
        assert exc.reason == "corrupt_avro"
