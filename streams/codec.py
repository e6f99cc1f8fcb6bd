"""Avro single-object encoding and JSON input, both checked against the schemas in `schemas/`.

Wire format (Avro spec, "Single object encoding"): `C3 01`, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's canonical form, then the binary body. The
fingerprint selects the writer schema; the body is resolved into the current (reader) schema
by Avro's rules, so producers may run an older or newer compatible schema.

JSON input ("natural" JSON: plain values, nullable fields as value or null, timestamps as epoch
milliseconds or ISO-8601 with offset) is accepted on the same topics and validated against the
same reader schema. Every failure is a `CodecError` with a bounded `reason` code (safe as a
metric label) and a detail naming the field path, never the field's value (it may be PII).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.avro_reader import compile_reader
from streams.avro_writer import compile_writer

MAGIC = b"\xc3\x01"
HEADER_BYTES = 10
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Reason codes a decode can fail with; the DLQ and its metric use exactly these.
UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA = "unknown_schema"
SCHEMA_MISMATCH = "schema_mismatch"
CORRUPT_AVRO = "corrupt_avro"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
UNKNOWN_ENUM_SYMBOL = "unknown_enum_symbol"
OVERSIZED = "oversized"


class CodecError(ValueError):
    """An event that cannot become a record of the expected schema."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def schema_fingerprint(parsed: Any) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, as the 8 little-endian bytes on the wire."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class SchemaRegistry:
    """Reader schemas by record name, writer schemas by fingerprint.

    The reader schema of a name is the one in `schemas/`; older writer versions are added with
    `register` (or dropped into `schemas/history/`) so their events still decode.
    """

    def __init__(self, schema_dir: Path) -> None:
        self._readers: dict[str, Any] = {}
        self._named: dict[str, dict[str, Any]] = {}
        self._writers: dict[bytes, tuple[str, Any]] = {}
        self._fingerprints: dict[str, bytes] = {}
        # generated writers (streams/avro_writer.py): fastavro's bytes, 3-4x faster
        self._compiled: dict[str, Callable[[Mapping[str, Any]], bytes] | None] = {}
        # and readers (streams/avro_reader.py) of events written with the current schema
        self._compiled_readers: dict[str, Callable[[bytes, int], dict[str, Any]] | None] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            self._add_reader(json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(schema_dir.glob("history/*.avsc")):
            self.register(json.loads(path.read_text(encoding="utf-8")))
        if not self._readers:
            raise FileNotFoundError(f"no *.avsc schemas in {schema_dir}")

    def _add_reader(self, schema: Mapping[str, Any]) -> None:
        named: dict[str, Any] = {}
        parsed = fastavro.parse_schema(dict(schema), named_schemas=named)
        name = parsed["name"].rsplit(".", 1)[-1]
        self._readers[name] = parsed
        self._named[name] = named
        self._fingerprints[name] = schema_fingerprint(parsed)
        self._writers[self._fingerprints[name]] = (name, parsed)
        self._compiled[name] = compile_writer(parsed)
        self._compiled_readers[name] = compile_reader(parsed)

    def register(self, schema: Mapping[str, Any]) -> bytes:
        """Accept events written with another version of a known record; returns its fingerprint."""
        parsed = fastavro.parse_schema(dict(schema), named_schemas={})
        fp = schema_fingerprint(parsed)
        self._writers[fp] = (parsed["name"].rsplit(".", 1)[-1], parsed)
        return fp

    @property
    def names(self) -> list[str]:
        return sorted(self._readers)

    def reader(self, name: str) -> Any:
        return self._readers[name]

    def fingerprint_of(self, name: str) -> bytes:
        return self._fingerprints[name]

    def encode(self, name: str, datum: Mapping[str, Any]) -> bytes:
        """Single-object encoding of `datum` with the current schema of `name`."""
        # the fingerprint is cached: computing it costs ~0.5 ms
        compiled = self._compiled[name]
        if compiled is not None:
            return MAGIC + self._fingerprints[name] + compiled(datum)
        return self._encode(self._fingerprints[name], self._readers[name], datum)

    def encode_with(self, parsed: Any, datum: Mapping[str, Any]) -> bytes:
        """Single-object encoding with an explicit (possibly older) writer schema."""
        return self._encode(schema_fingerprint(parsed), parsed, datum)

    @staticmethod
    def _encode(fp: bytes, parsed: Any, datum: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(fp)
        fastavro.schemaless_writer(buf, parsed, datum)
        return buf.getvalue()

    def decode(self, name: str, raw: bytes, max_bytes: int | None = None) -> dict[str, Any]:
        """An Avro single-object or JSON event as a dict of the current `name` schema."""
        if max_bytes is not None and len(raw) > max_bytes:
            raise CodecError(OVERSIZED, f"{len(raw)} bytes exceeds the limit of {max_bytes}")
        if raw[:2] == MAGIC:
            return self._decode_avro(name, raw)
        if raw.lstrip()[:1] == b"{":
            return self.from_json(name, raw)
        raise CodecError(UNDECODABLE, "neither Avro single-object (C3 01) nor a JSON object")

    def _decode_avro(self, name: str, raw: bytes) -> dict[str, Any]:
        writer = self._writers.get(raw[2:HEADER_BYTES])
        if writer is None:
            raise CodecError(
                UNKNOWN_SCHEMA, f"fingerprint {raw[2:HEADER_BYTES].hex()} is not known"
            )
        writer_name, writer_schema = writer
        if writer_name != name:
            raise CodecError(SCHEMA_MISMATCH, f"expected {name}, got {writer_name}")
        reader = self._readers[name]
        compiled = self._compiled_readers[name] if writer_schema is reader else None
        if compiled is not None:
            try:
                return compiled(raw, HEADER_BYTES)
            except Exception as exc:  # truncated, garbled, trailing bytes: all the same here
                raise CodecError(CORRUPT_AVRO, f"{name} body: {type(exc).__name__}") from None
        body = io.BytesIO(raw[HEADER_BYTES:])
        # written with the current schema: no resolution (it costs a third of the decode)
        try:
            datum = fastavro.schemaless_reader(
                body, writer_schema, None if writer_schema is reader else reader
            )
        except Exception as exc:  # fastavro raises many types on truncated or garbled bodies
            raise CodecError(CORRUPT_AVRO, f"{name} body: {type(exc).__name__}") from None
        if body.tell() != len(raw) - HEADER_BYTES:
            raise CodecError(CORRUPT_AVRO, f"{name} body has trailing bytes")
        return datum  # type: ignore[return-value]

    def from_json(self, name: str, raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
        """Natural JSON validated and converted to the reader schema of `name`."""
        if isinstance(raw, Mapping):
            obj: Any = raw
        else:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise CodecError(INVALID_JSON, f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise CodecError(INVALID_JSON, "top level must be a JSON object")
        return _convert(self._readers[name], obj, name, self._named[name])

    def from_json_type(self, record: str, type_name: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Natural JSON validated as a named type nested in `record` (e.g. Order's Buyer)."""
        named = self._named[record]
        return _convert(named[f"jp.shinsa.{type_name}"], obj, type_name, named)


def _convert(schema: Any, value: Any, path: str, named: dict[str, Any]) -> Any:
    """One natural-JSON value as the Avro datum of `schema`, or a CodecError naming `path`."""
    if isinstance(schema, str):
        if schema in named:
            return _convert(named[schema], value, path, named)
        return _primitive(schema, None, value, path)
    if isinstance(schema, list):
        return _union(schema, value, path, named)
    kind = schema["type"]
    if kind == "record":
        return _record(schema, value, path, named)
    if kind == "enum":
        if not isinstance(value, str):
            raise CodecError(WRONG_TYPE, f"{path}: expected one of {schema['symbols']}")
        if value not in schema["symbols"]:
            raise CodecError(UNKNOWN_ENUM_SYMBOL, f"{path}: not one of {schema['symbols']}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise CodecError(WRONG_TYPE, f"{path}: expected an array")
        return [_convert(schema["items"], v, f"{path}[{i}]", named) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise CodecError(WRONG_TYPE, f"{path}: expected an object")
        return {k: _convert(schema["values"], v, f"{path}.{k}", named) for k, v in value.items()}
    if kind == "fixed":
        raise CodecError(WRONG_TYPE, f"{path}: fixed types are not accepted as JSON")
    return _primitive(kind, schema.get("logicalType"), value, path)


def _record(schema: Any, value: Any, path: str, named: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(WRONG_TYPE, f"{path}: expected an object")
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        fname = field["name"]
        sub = f"{path}.{fname}"
        if fname in value:
            out[fname] = _convert(field["type"], value[fname], sub, named)
        elif "default" in field:
            out[fname] = _convert(field["type"], field["default"], sub, named)
        else:
            raise CodecError(MISSING_FIELD, f"{sub} is required")
    return out


def _union(branches: list[Any], value: Any, path: str, named: dict[str, Any]) -> Any:
    if value is None:
        if "null" in branches:
            return None
        raise CodecError(MISSING_FIELD, f"{path} must not be null")
    first_error: CodecError | None = None
    for branch in branches:
        if branch == "null":
            continue
        try:
            return _convert(branch, value, path, named)
        except CodecError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def _primitive(kind: str, logical: str | None, value: Any, path: str) -> Any:
    if logical in ("timestamp-millis", "timestamp-micros"):
        return _timestamp(value, path)
    ok = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31,
        "long": isinstance(value, int)
        and not isinstance(value, bool)
        and -(2**63) <= value < 2**63,
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "double": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "bytes": isinstance(value, str),
    }.get(kind, False)
    if not ok:
        raise CodecError(WRONG_TYPE, f"{path}: expected {kind}, got {_json_type(value)}")
    if kind == "bytes":
        return value.encode("utf-8")
    if kind in ("float", "double"):
        return float(value)
    return value


def _timestamp(value: Any, path: str) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return EPOCH + timedelta(milliseconds=value)  # exact: no float on the way
        except OverflowError:
            raise CodecError(WRONG_TYPE, f"{path}: epoch milliseconds out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise CodecError(WRONG_TYPE, f"{path}: not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise CodecError(WRONG_TYPE, f"{path}: timestamp needs a UTC offset (e.g. +09:00)")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise CodecError(WRONG_TYPE, f"{path}: timestamp out of range") from None
    raise CodecError(WRONG_TYPE, f"{path}: expected epoch milliseconds or ISO-8601")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object"
    )


def datum_to_json(datum: Mapping[str, Any]) -> bytes:
    """A decoded datum as natural JSON (timestamps as ISO-8601), for people and scripts."""
    return orjson.dumps(datum, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)
