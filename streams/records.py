"""Typed records for the Avro schemas in `schemas/`: what agents receive after decoding.

Field names and nesting mirror the `.avsc` files exactly (a unit test holds them together);
`record_from_datum` builds them from a decoded datum and `record_to_datum` goes back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from faust.serializers import codecs

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class Address:
    postal_code: str
    street: str
    prefecture: str | None = None
    city: str | None = None
    building: str | None = None


@dataclass(slots=True, frozen=True)
class Buyer:
    name: str
    address: Address
    customer_id: str | None = None
    name_kana: str | None = None
    email: str | None = None
    phone: str | None = None
    birth_date: str | None = None
    gender: str | None = None  # FEMALE, MALE or not given (segments only, never guessed)


@dataclass(slots=True, frozen=True)
class Shipping:
    name: str
    address: Address
    name_kana: str | None = None
    phone: str | None = None


@dataclass(slots=True, frozen=True)
class Item:
    sku: str
    category: str
    unit_price: int
    quantity: int


@dataclass(slots=True, frozen=True)
class Order:
    order_id: str
    merchant_id: str
    event_time: datetime
    amount: int
    payment_method: str
    buyer: Buyer
    currency: str = "JPY"
    shipping: Shipping | None = None
    device_id: str | None = None
    ip: str | None = None
    items: list[Item] = field(default_factory=list)


WALLET_KINDS = ("CHARGE", "PAY", "TRANSFER", "WITHDRAW")  # Payment kinds that get a decision


@dataclass(slots=True, frozen=True)
class Payment:
    payment_id: str
    event_time: datetime
    kind: str
    amount: int
    order_id: str | None = None
    account_id: str | None = None
    merchant_id: str | None = None
    status: str = "SUCCEEDED"
    card_fingerprint: str | None = None
    device_id: str | None = None
    ip: str | None = None
    counterparty_account_id: str | None = None
    channel: str | None = None


@dataclass(slots=True, frozen=True)
class Account:
    """A wallet account event (the `accounts` topic)."""

    account_id: str
    event_time: datetime
    kind: str
    kyc_level: str | None = None
    person: Buyer | None = None
    daily_limit: int | None = None
    note: str | None = None


@dataclass(slots=True, frozen=True)
class Login:
    login_id: str
    account_id: str
    event_time: datetime
    method: str
    success: bool
    device_id: str | None = None
    ip: str | None = None


@dataclass(slots=True, frozen=True)
class Outcome:
    order_id: str
    event_time: datetime
    kind: str
    source: str
    note: str | None = None
    subject: str = "ORDER"


@dataclass(slots=True, frozen=True)
class Merchant:
    merchant_id: str
    name: str
    category: str
    tier: str
    updated_at: datetime
    status: str = "ACTIVE"


@dataclass(slots=True, frozen=True)
class Decision:
    order_id: str
    merchant_id: str
    decision: str
    score: float
    reasons: list[str]
    policy_version: str
    amount: int
    event_time: datetime
    decided_at: datetime
    latency_event_ms: float
    latency_ingest_ms: float
    identity_id: str | None = None
    model_version: str | None = None
    merchant_category: str | None = None
    subject: str = "ORDER"
    payment_id: str | None = None
    payment_kind: str | None = None
    account_id: str | None = None
    payment_method: str | None = None


@dataclass(slots=True, frozen=True)
class ShadowDecision:
    policy_version: str
    decision: str
    score: float
    reasons: list[str]


@dataclass(slots=True, frozen=True)
class CreditCheck:
    score: float
    warm: bool
    band: str
    contributions: dict[str, float]
    features: dict[str, float]


@dataclass(slots=True, frozen=True)
class DecisionTrace:
    order_id: str
    decided_at: datetime
    decision: str
    score: float
    reasons: list[str]
    policy_version: str
    merchant_override: bool
    thresholds: dict[str, float]
    inputs: dict[str, float]
    fired: list[str]
    list_hits: dict[str, list[str]]
    model_version: str
    model_warm: bool
    model_score: float
    contributions: dict[str, float]
    features: dict[str, float]
    allowed_methods: list[str] | None = None
    shadow: ShadowDecision | None = None
    subject: str = "ORDER"
    payment_kind: str | None = None
    credit: CreditCheck | None = None


@dataclass(slots=True, frozen=True)
class CampaignTicket:
    campaign_id: str
    month: str
    purchase_id: str
    identity_id: str
    day: str
    action: str
    at: datetime


@dataclass(slots=True, frozen=True)
class CampaignWinner:
    campaign_id: str
    month: str
    rank: int
    identity_id: str
    tickets: int
    prize_yen: int
    drawn_at: datetime


RECORD_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Order,
        Payment,
        Account,
        Login,
        Outcome,
        Merchant,
        Decision,
        DecisionTrace,
        CampaignTicket,
        CampaignWinner,
    )
}


@cache
def _plan(cls: type) -> tuple[tuple[str, type | None, bool], ...]:
    """Per field: its name, the nested record class if any, and whether it is a list of them."""
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        origin = typing.get_origin(hint)
        nested: type | None = None
        many = False
        if dataclasses.is_dataclass(hint):
            nested = hint  # type: ignore[assignment]
        elif origin in (typing.Union, types.UnionType):
            nested = next((a for a in args if dataclasses.is_dataclass(a)), None)
        elif origin is list and args and dataclasses.is_dataclass(args[0]):
            nested, many = args[0], True
        plan.append((f.name, nested, many))
    return tuple(plan)


@cache
def _field_names(cls: type) -> tuple[frozenset[str], tuple[tuple[str, type, bool], ...]]:
    """The fields of `cls` and, apart, those holding nested records."""
    plan = _plan(cls)
    return frozenset(p[0] for p in plan), tuple(p for p in plan if p[1] is not None)  # type: ignore[misc]


def record_from_datum(cls: type[T], datum: dict[str, Any]) -> T:
    """Build `cls` from a decoded Avro datum (nested records included)."""
    names, nested_fields = _field_names(cls)
    if datum.keys() == names:  # a datum of the reader schema: only nested fields need work
        kwargs = dict(datum)
        for name, nested, many in nested_fields:
            value = kwargs[name]
            if value is not None:
                kwargs[name] = (
                    [record_from_datum(nested, v) for v in value]
                    if many
                    else record_from_datum(nested, value)
                )
        return cls(**kwargs)
    kwargs = {}
    for name, nested, many in _plan(cls):
        if name not in datum:
            continue
        value = datum[name]
        if nested is not None and value is not None:
            value = (
                [record_from_datum(nested, v) for v in value]
                if many
                else record_from_datum(nested, value)
            )
        kwargs[name] = value
    return cls(**kwargs)


def record_to_datum(record: Any) -> dict[str, Any]:
    """The Avro datum of a record (the inverse of `record_from_datum`)."""
    return dataclasses.asdict(record)


class AvroRecordCodec(codecs.Codec):
    """A Faust codec: Avro single-object (or JSON) bytes ⇄ the typed record of one schema.

    Registered as `avro-<record>` (e.g. `avro-decision`) so any Faust topic can declare
    `value_serializer="avro-decision"` and its agents receive `Decision` objects. Input topics
    keep raw bytes instead: a decode error there must become a dead letter with its offset,
    which a Faust deserializer error cannot.
    """

    def __init__(self, registry: Any, name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self.name = name

    def _loads(self, s: bytes) -> Any:
        return record_from_datum(RECORD_TYPES[self.name], self.registry.decode(self.name, s))

    def _dumps(self, obj: Any) -> bytes:
        datum = obj if isinstance(obj, dict) else record_to_datum(obj)
        return self.registry.encode(self.name, datum)


def register_codecs(registry: Any) -> list[str]:
    """Register one Faust codec per record type; returns their names."""
    names = []
    for name in RECORD_TYPES:
        codec_name = f"avro-{name.lower()}"
        codecs.register(codec_name, AvroRecordCodec(registry, name))
        names.append(codec_name)
    return names
