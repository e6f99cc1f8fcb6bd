"""Attach merchant attributes (加盟店属性) to an order, beside its identity and attributes.

An unknown merchant is not an error: the order is screened with cautious defaults and the
decision says MERCHANT_UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents import reasons
from streams.records import Merchant, Order


@dataclass(slots=True, frozen=True)
class EnrichedOrder:
    order: Order
    merchant: Merchant | None
    reasons: tuple[str, ...] = ()
    identity: Mapping[str, Any] = field(default_factory=dict)  # agents/identity.py Identity
    attributes: Mapping[str, Any] = field(default_factory=dict)  # agents/attributes.py

    @property
    def merchant_category(self) -> str:
        return self.merchant.category if self.merchant else "UNKNOWN"

    @property
    def merchant_tier(self) -> str:
        return self.merchant.tier if self.merchant else "UNKNOWN"


def enrich_order(
    order: Order,
    merchants: Mapping[str, Merchant],
    identity: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> EnrichedOrder:
    merchant = merchants.get(order.merchant_id)
    found = () if merchant is not None else (reasons.MERCHANT_UNKNOWN,)
    return EnrichedOrder(order, merchant, found, identity or {}, attributes or {})
