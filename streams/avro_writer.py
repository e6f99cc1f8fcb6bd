"""Avro binary writers compiled from a schema: one generated function per record.

fastavro walks a parsed schema for every datum, and its unions and maps cost ~1 µs a value
(measured: 26 µs a Decision, 59 µs a DecisionTrace, a quarter of the hot path's own work). A
writer generated for one schema does the same walk once, at start, as straight-line Python:
3-4× faster, and byte for byte what fastavro writes (tests/unit/test_codec.py checks both on
every schema). fastavro stays the reader and the writer of anything this does not compile
(unions other than [null, T], logical types other than timestamp-millis and date).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SMALL = 4096  # varints of 0..4095 are looked up, not computed


class Unsupported(Exception):
    """A schema feature this compiler leaves to fastavro."""


def varint(n: int) -> bytes:
    """Avro's zig-zag varint of a long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [varint(i) for i in range(_SMALL)]


def _millis(value: Any) -> int:
    if isinstance(value, datetime):
        delta = value - (_EPOCH if value.tzinfo is not None else _EPOCH_NAIVE)
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return value


def _days(value: Any) -> int:
    return value.toordinal() - _EPOCH_ORDINAL if isinstance(value, date) else value


class SourceBuilder:
    """The lines of one generated function, its constants (`C[i]`) and fresh local names;
    the writer's and the reader's generators (streams/avro_reader.py) build on it."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.constants: list[Any] = []
        self.lines: list[str] = []
        self.depth = 0

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"C[{len(self.constants) - 1}]"

    def fresh(self, stem: str) -> str:
        self.depth += 1
        return f"{stem}{self.depth}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def function(
        self, title: str, name: str, head: list[str], tail: list[str], scope: dict[str, Any]
    ) -> Callable[..., Any]:
        """Compile `head`, the emitted lines and `tail`; the function `name` they define."""
        namespace = {"C": self.constants, **scope}
        source = "\n".join([*head, *self.lines, *tail])
        exec(compile(source, f"<avro {title}>", "exec"), namespace)
        return namespace[name]  # type: ignore[no-any-return]


class _Generator(SourceBuilder):
    """Python source writing a datum of a parsed schema to `out` (a list of bytes)."""

    def varint_of(self, indent: int, expr: str) -> None:
        self.emit(indent, f"a(V[{expr}] if 0 <= {expr} < {_SMALL} else varint({expr}))")

    def value(self, schema: Any, var: str, indent: int) -> None:
        if isinstance(schema, str):
            if schema in self.named:
                return self.value(self.named[schema], var, indent)
            return self.primitive(schema, var, indent)
        if isinstance(schema, list):
            return self.union(schema, var, indent)
        kind, logical = schema["type"], schema.get("logicalType")
        if logical == "timestamp-millis" and kind == "long":
            self.emit(indent, f"if {var}.__class__ is not int: {var} = millis({var})")
            return self.varint_of(indent, var)
        if logical == "date" and kind == "int":
            self.emit(indent, f"if {var}.__class__ is not int: {var} = days({var})")
            return self.varint_of(indent, var)
        if logical is not None and kind != "string":
            raise Unsupported(f"logical type {logical}")
        if kind == "record":
            return self.record(schema, var, indent)
        if kind == "enum":
            index = {symbol: varint(i) for i, symbol in enumerate(schema["symbols"])}
            return self.emit(indent, f"a({self.constant(index)}[{var}])")
        if kind == "array":
            item = self.fresh("item")
            self.emit(indent, f"if {var}:")
            self.varint_of(indent + 1, f"len({var})")
            self.emit(indent + 1, f"for {item} in {var}:")
            self.value(schema["items"], item, indent + 2)
            return self.emit(indent, "a(b'\\x00')")
        if kind == "map":
            return self.map(schema["values"], var, indent)
        if isinstance(kind, (dict, list)) or kind in self.named:
            return self.value(kind, var, indent)
        return self.primitive(kind, var, indent)

    def primitive(self, kind: str, var: str, indent: int) -> None:
        if kind == "string":
            raw = self.fresh("raw")
            self.emit(indent, f"{raw} = {var}.encode()")
            self.varint_of(indent, f"len({raw})")
            self.emit(indent, f"a({raw})")
        elif kind in ("long", "int"):
            self.varint_of(indent, var)
        elif kind == "double":
            self.emit(indent, f"a(DOUBLE({var}))")
        elif kind == "float":
            self.emit(indent, f"a(FLOAT({var}))")
        elif kind == "boolean":
            self.emit(indent, f"a(b'\\x01' if {var} else b'\\x00')")
        elif kind == "bytes":
            self.varint_of(indent, f"len({var})")
            self.emit(indent, f"a(bytes({var}))")
        elif kind != "null":
            raise Unsupported(f"type {kind}")

    def union(self, branches: list[Any], var: str, indent: int) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("a union other than [null, T]")
        at_null = branches.index("null")
        self.emit(indent, f"if {var} is None:")
        self.emit(indent + 1, f"a({varint(at_null)!r})")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"a({varint(1 - at_null)!r})")
        self.value(branches[1 - at_null], var, indent + 1)

    def map(self, values: Any, var: str, indent: int) -> None:
        key, item = self.fresh("key"), self.fresh("item")
        self.emit(indent, f"if {var}:")
        self.varint_of(indent + 1, f"len({var})")
        self.emit(indent + 1, f"for {key}, {item} in {var}.items():")
        if values == "double":  # features, thresholds: the same few names, their bytes cached
            cache, found = self.constant({}), self.fresh("found")
            self.emit(indent + 2, f"{found} = {cache}.get({key})")
            self.emit(indent + 2, f"if {found} is None: {found} = map_key({cache}, {key})")
            self.emit(indent + 2, f"a({found})")
            self.emit(indent + 2, f"a(DOUBLE({item}))")
        else:
            self.primitive("string", key, indent + 2)
            self.value(values, item, indent + 2)
        self.emit(indent, "a(b'\\x00')")

    def record(self, schema: Mapping[str, Any], var: str, indent: int) -> None:
        for f in schema["fields"]:
            field = self.fresh("f")
            if "default" in f:
                default = f["default"]
                literal = repr(default) if default is None or isinstance(default, str) else None
                fallback = literal or self.constant(default)
                self.emit(indent, f"{field} = {var}.get({f['name']!r}, {fallback})")
            else:
                self.emit(indent, f"{field} = {var}[{f['name']!r}]")
            self.value(f["type"], field, indent)


def _map_key(cache: dict[str, bytes], key: str) -> bytes:
    raw = key.encode()
    found = varint(len(raw)) + raw
    if len(cache) < 10_000:  # map keys are names from a catalogue; never grow without bound
        cache[key] = found
    return found


def compile_writer(parsed: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A function writing a datum of `parsed` (fastavro.parse_schema) as Avro binary, or None
    if the schema uses something only fastavro writes."""
    generator = _Generator(parsed.get("__named_schemas", {}))
    try:
        generator.record(parsed, "datum", 1)
    except (Unsupported, RecursionError):  # a recursive type is fastavro's too
        return None
    return generator.function(
        f"writer of {parsed.get('name')}",
        "write",
        ["def write(datum):", "    out = []", "    a = out.append"],
        ["    return b''.join(out)"],
        {
            "V": _VARINTS,
            "varint": varint,
            "millis": _millis,
            "days": _days,
            "map_key": _map_key,
            "DOUBLE": struct.Struct("<d").pack,
            "FLOAT": struct.Struct("<f").pack,
        },
    )
