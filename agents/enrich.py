"""Stage 2: attach merchant attributes (加盟店属性) to a valid order.

An unknown merchant is not an error: the order is screened with cautious defaults and the
decision says MERCHANT_UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agents import reasons
from streams.records import Merchant, Order


@dataclass(slots=True, frozen=True)
class EnrichedOrder:
    order: Order
    merchant: Merchant | None
    reasons: tuple[str, ...] = ()

    @property
    def merchant_category(self) -> str:
        return self.merchant.category if self.merchant else "UNKNOWN"

    @property
    def merchant_tier(self) -> str:
        return self.merchant.tier if self.merchant else "UNKNOWN"


def enrich_order(order: Order, merchants: Mapping[str, Merchant]) -> EnrichedOrder:
    merchant = merchants.get(order.merchant_id)
    if merchant is None:
        return EnrichedOrder(order, None, (reasons.MERCHANT_UNKNOWN,))
    return EnrichedOrder(order, merchant)
