"""agents/validate.py: domain rules Avro cannot express, and decoding that never raises."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agents.validate import Rejection, check_order, decode_event
from streams.records import Address, Buyer, Item, Order

NOW = datetime(2026, 11, 1, tzinfo=UTC)
ORDER = Order(
    order_id="o-1",
    merchant_id="m0001",
    event_time=NOW - timedelta(minutes=5),
    amount=4980,
    payment_method="CARD",
    buyer=Buyer(name="山田 太郎", address=Address(postal_code="1000001", street="千代田1-1")),
    items=[Item(sku="sku-1", category="food", unit_price=2490, quantity=2)],
)


def reason(order: Order) -> str | None:
    rejection = check_order(order, NOW)
    return rejection.reason if rejection else None


def test_a_normal_order_is_accepted():
    assert check_order(ORDER, NOW) is None


@pytest.mark.parametrize("amount", [0, -1, -4980])
def test_non_positive_amount_is_rejected(amount):
    assert reason(replace(ORDER, amount=amount)) == "amount_not_positive"


@pytest.mark.parametrize("currency", ["USD", "jpy", ""])
def test_only_jpy_is_screened(currency):
    assert reason(replace(ORDER, currency=currency)) == "unsupported_currency"


@pytest.mark.parametrize("quantity, unit_price", [(0, 100), (-1, 100), (1, -1)])
def test_bad_item_is_rejected(quantity, unit_price):
    item = Item(sku="sku-2", category="food", unit_price=unit_price, quantity=quantity)
    assert reason(replace(ORDER, items=[*ORDER.items, item])) == "invalid_item"


def test_free_item_is_accepted():
    item = Item(sku="sku-2", category="gift", unit_price=0, quantity=1)
    assert reason(replace(ORDER, items=[item])) is None


@pytest.mark.parametrize("field", ["order_id", "merchant_id"])
def test_empty_id_is_rejected(field):
    assert reason(replace(ORDER, **{field: ""})) == "empty_id"


@pytest.mark.parametrize(
    "event_time",
    [NOW + timedelta(hours=2), NOW + timedelta(days=400), datetime(1999, 12, 31, tzinfo=UTC)],
)
def test_event_time_far_in_the_future_or_before_2000_is_rejected(event_time):
    assert reason(replace(ORDER, event_time=event_time)) == "event_time_out_of_range"


@pytest.mark.parametrize(
    "event_time", [NOW + timedelta(minutes=30), datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC)]
)
def test_small_clock_skew_and_early_2000s_are_accepted(event_time):
    assert reason(replace(ORDER, event_time=event_time)) is None


def test_tombstone_is_a_rejection_not_an_exception(registry):
    assert decode_event(registry, "Order", None, 65536).reason == "undecodable"


def test_garbage_is_a_rejection_not_an_exception(registry):
    result = decode_event(registry, "Order", b"\x00\x01not-an-event\xff", 65536)
    assert isinstance(result, Rejection) and result.reason == "undecodable"


def test_oversized_event_is_a_rejection(registry, order_json):
    result = decode_event(registry, "Order", orjson.dumps(order_json), 64)
    assert isinstance(result, Rejection) and result.reason == "oversized"


def test_valid_event_decodes_to_its_record_type(registry, order_json):
    raw = registry.encode("Order", registry.from_json("Order", order_json))
    order = decode_event(registry, "Order", raw, 65536)
    assert isinstance(order, Order) and order.buyer.address.street == "千代田1-1"


def test_out_of_range_epoch_millis_is_a_rejection(registry, order_json):
    order_json["event_time"] = 10**16
    result = decode_event(registry, "Order", orjson.dumps(order_json), 65536)
    assert isinstance(result, Rejection) and result.reason == "wrong_type"
