"""The simulator's data: its configuration, the people it invents and the events it emits,
shared by the order traffic (streams/tools/simulate.py) and the wallet traffic
(streams/tools/simulate_wallet.py), and what the wallet traffic takes from the order world."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

JST = timezone(timedelta(hours=9), "JST")


@dataclass(slots=True)
class SimEvent:
    """One event to publish: logical topic, natural-JSON value, and (for orders) its truth."""

    topic: str
    value: dict[str, Any]
    time: datetime
    fraud_pattern: str | None = None
    raw: bytes | None = None  # set for deliberately undecodable events
    broken: bool = False  # deliberately invalid (raw bytes or a value the worker must reject)


@dataclass
class Person:
    person_id: str
    last: tuple[str, str]  # (kanji, katakana)
    first: tuple[str, str]
    email_user: str
    email_domain: str
    phone: str
    birth_date: str
    postal_code: str
    prefecture: str
    city: str
    street: str
    building: str | None
    device_id: str
    ip: str
    orders: int = 0


@dataclass
class SimConfig:
    orders: int = 2000
    seed: int = 42
    fraud_rate: float = 0.05
    merchants: int = 40
    days: float = 30.0
    invalid_rate: float = 0.0
    end: datetime = field(default_factory=lambda: datetime.now(UTC))
    wallet_payments: int = 0  # wallet traffic beside the orders (streams/tools/simulate_wallet.py)
    wallet_fraud_rate: float = 0.03  # share of wallet activities that are fraud cases
    campaign: bool = False  # shape traffic for the お月玉 campaign (see the module docstring)
    people: int = 0  # buyers; 0: one per three orders. Fewer buyers, longer histories each


class OrderWorld(Protocol):
    """The parts of the order simulation (streams/tools/simulate.py `Simulator`) that wallet
    traffic builds on: the same people, merchants, ids and clock."""

    cfg: SimConfig
    people: list[Person]
    start: datetime
    active_merchants: list[dict[str, Any]]
    _seq: int
    _wallets: set[str]

    def _person(self, i: int) -> Person: ...

    def _buyer(self, p: Person, variant: bool = False) -> dict[str, Any]: ...

    def _next_id(self, prefix: str) -> str: ...

    def _when(self) -> datetime: ...
