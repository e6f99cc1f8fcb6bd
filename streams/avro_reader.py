"""Avro binary readers compiled from a schema: one generated function per record.

The twin of streams/avro_writer.py for the events the hot path reads: fastavro's reader walks
the schema for every event (measured: ~20 µs an Order, the largest single cost of intake).
A reader generated for one schema reads the same datum, the same dict fastavro returns (tests
check both on every schema), ~2× faster. Only for events written with the reader's own schema:
an older or newer writer still goes through fastavro's schema resolution.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from streams.avro_writer import _EPOCH, _EPOCH_ORDINAL, SourceBuilder, Unsupported


class Truncated(Exception):
    """The body ended before the datum, or went on after it."""


def varint_at(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint of more than one byte at `pos`: (value, position after it)."""
    shift, n = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise Truncated("varint longer than 10 bytes")


def _millis(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value * 1000)  # as fastavro: not fromtimestamp


def _date(value: int) -> date:
    return date.fromordinal(value + _EPOCH_ORDINAL)


class _Generator(SourceBuilder):
    """Python source reading a datum of a parsed schema from `buf` at `p`."""

    def long(self, target: str, indent: int) -> None:
        """`target` = the varint at p (one byte inline, longer ones by a call)."""
        self.emit(indent, "b = buf[p]")
        self.emit(indent, "if b < 0x80:")
        self.emit(indent + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        self.emit(indent + 1, "p += 1")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{target}, p = varint_at(buf, p)")

    def value(self, schema: Any, target: str, indent: int) -> None:
        if isinstance(schema, str):
            if schema in self.named:
                return self.value(self.named[schema], target, indent)
            return self.primitive(schema, target, indent)
        if isinstance(schema, list):
            return self.union(schema, target, indent)
        kind, logical = schema["type"], schema.get("logicalType")
        if logical == "timestamp-millis" and kind == "long":
            self.long(target, indent)
            return self.emit(indent, f"{target} = millis({target})")
        if logical == "date" and kind == "int":
            self.long(target, indent)
            return self.emit(indent, f"{target} = to_date({target})")
        if logical is not None and kind != "string":
            raise Unsupported(f"logical type {logical}")
        if kind == "record":
            return self.record(schema, target, indent)
        if kind == "enum":
            symbols = self.constant(tuple(schema["symbols"]))
            index = self.fresh("index")
            self.long(index, indent)
            return self.emit(indent, f"{target} = {symbols}[{index}]")
        if kind in ("array", "map"):
            return self.blocks(schema, target, indent)
        if isinstance(kind, (dict, list)) or kind in self.named:
            return self.value(kind, target, indent)
        return self.primitive(kind, target, indent)

    def primitive(self, kind: str, target: str, indent: int) -> None:
        if kind in ("string", "bytes"):
            size = self.fresh("size")
            self.long(size, indent)
            self.emit(indent, f"if {size} < 0: raise Truncated('negative length')")
            piece = f"buf[p : p + {size}]"
            self.emit(
                indent,
                f"{target} = {piece}.decode()" if kind == "string" else f"{target} = {piece}",
            )
            self.emit(indent, f"p += {size}")
        elif kind in ("long", "int"):
            self.long(target, indent)
        elif kind == "double":
            self.emit(indent, f"{target} = DOUBLE(buf, p)[0]")
            self.emit(indent, "p += 8")
        elif kind == "float":
            self.emit(indent, f"{target} = FLOAT(buf, p)[0]")
            self.emit(indent, "p += 4")
        elif kind == "boolean":
            self.emit(indent, f"{target} = buf[p] == 1")
            self.emit(indent, "p += 1")
        elif kind == "null":
            self.emit(indent, f"{target} = None")
        else:
            raise Unsupported(f"type {kind}")

    def union(self, branches: list[Any], target: str, indent: int) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("a union other than [null, T]")
        at_null = branches.index("null")
        index = self.fresh("index")
        self.long(index, indent)
        self.emit(indent, f"if {index} == {at_null}:")
        self.emit(indent + 1, f"{target} = None")
        self.emit(indent, f"elif {index} == {1 - at_null}:")
        self.value(branches[1 - at_null], target, indent + 1)
        self.emit(indent, "else:")
        self.emit(indent + 1, "raise Truncated('union index out of range')")

    def blocks(self, schema: Mapping[str, Any], target: str, indent: int) -> None:
        """Arrays and maps: blocks of `count` items until a count of 0 (a negative count is
        followed by the block's size in bytes)."""
        is_map = schema["type"] == "map"
        count, item = self.fresh("count"), self.fresh("item")
        self.emit(indent, f"{target} = {{}}" if is_map else f"{target} = []")
        self.emit(indent, "while True:")
        self.long(count, indent + 1)
        self.emit(indent + 1, f"if {count} == 0: break")
        self.emit(indent + 1, f"if {count} < 0:")
        self.emit(indent + 2, f"{count} = -{count}")
        self.long("_", indent + 2)
        self.emit(indent + 1, f"for _ in range({count}):")
        if is_map:
            key = self.fresh("key")
            self.primitive("string", key, indent + 2)
            self.value(schema["values"], item, indent + 2)
            self.emit(indent + 2, f"{target}[{key}] = {item}")
        else:
            self.value(schema["items"], item, indent + 2)
            self.emit(indent + 2, f"{target}.append({item})")

    def record(self, schema: Mapping[str, Any], target: str, indent: int) -> None:
        names = []
        for f in schema["fields"]:
            field = self.fresh("f")
            self.value(f["type"], field, indent)
            names.append(f"{f['name']!r}: {field}")
        self.emit(indent, f"{target} = {{{', '.join(names)}}}")


def compile_reader(parsed: Mapping[str, Any]) -> Callable[[bytes, int], dict[str, Any]] | None:
    """A function reading a datum of `parsed` from `buf` at `pos` to its end (raises Truncated,
    IndexError or ValueError on a body that is not one), or None if the schema uses something
    only fastavro reads."""
    generator = _Generator(parsed.get("__named_schemas", {}))
    try:
        generator.record(parsed, "datum", 1)
    except (Unsupported, RecursionError):
        return None
    return generator.function(
        f"reader of {parsed.get('name')}",
        "read",
        ["def read(buf, p):"],
        ["    if p != len(buf): raise Truncated('body length')", "    return datum"],
        {
            "varint_at": varint_at,
            "millis": _millis,
            "to_date": _date,
            "Truncated": Truncated,
            "DOUBLE": struct.Struct("<d").unpack_from,
            "FLOAT": struct.Struct("<f").unpack_from,
        },
    )
