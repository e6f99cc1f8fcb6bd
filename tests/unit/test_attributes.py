"""agents/attributes.py: bounded, PII-free external attributes of an order."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest

from agents.attributes import (
    MISSING,
    NAME_SCRIPTS,
    address_attributes,
    address_matches_postal_code,
    name_script,
    order_attributes,
    postal_area,
    shipping_differs,
)
from agents.normalize import EMAIL_CLASSES, PHONE_KINDS, normalize_address
from streams.records import Address, Order, record_from_datum
from streams.tools.simulate import SimConfig, Simulator

END = datetime(2026, 11, 1, tzinfo=UTC)

# ------------------------------------------------------------------ postal code look-ups


def test_postal_area():
    area = postal_area("〒100-0001")
    assert area is not None
    assert (area.prefecture, area.prefecture_code, area.city, area.town) == (
        "東京都",
        "13",
        "千代田区",
        "千代田",
    )
    assert postal_area("999-9999") is None
    assert postal_area("not a code") is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("100-0001", "東京都", "千代田区", "千代田1-1", None), True),
        (("100-0001", "東京", "千代田区", "千代田1-1", None), True),
        (("100-0001", None, None, "千代田1-1", None), True),  # filled from the code itself
        (("530-0001", "大阪府", "大阪市", "梅田1-1", None), True),  # city without its ward
        (("530-0001", "大阪府", "北区", "梅田1-1", None), True),  # ward without its city
        (("198-0212", "東京都", "奥多摩町", "氷川1", None), True),  # town without its county
        (("060-8621", "北海道", "札幌市中央区", "北1条西6-1-2", None), True),  # office code
        (("100-0001", "大阪府", "千代田区", "千代田1-1", None), False),
        (("100-0001", "東京都", "港区", "千代田1-1", None), False),
        (("100-0001", None, "大阪市北区", "梅田1-1", None), False),
        (("999-9999", "東京都", "千代田区", "千代田1-1", None), None),
        (("12", "東京都", "千代田区", "千代田1-1", None), None),
    ],
)
def test_address_matches_postal_code(args, expected):
    assert address_matches_postal_code(normalize_address(*args)) is expected


@pytest.mark.parametrize(
    ("buyer", "shipping", "differs"),
    [
        (
            ("100-0001", "東京都", "千代田区", "千代田1丁目2番3号", None),
            ("〒1000001", None, None, "千代田１－２－３", None),
            False,
        ),
        (
            ("530-0001", "大阪府", "大阪市北区", "梅田1-2-3 梅田ビル305号室", None),
            ("5300001", None, None, "梅田一丁目二番三号", "梅田ビル　３０５"),
            False,
        ),
        (
            ("530-0001", "大阪府", "大阪市北区", "梅田1-2-3 梅田ビル305号室", None),
            ("5300001", None, None, "梅田1-2-3", "梅田ビル306"),
            True,
        ),
        (
            ("100-0001", "東京都", "千代田区", "千代田1-2-3", None),
            ("100-0001", "東京都", "千代田区", "千代田1-2-4", None),
            True,
        ),
        (
            ("100-0001", "東京都", "千代田区", "千代田1-2-3", None),
            ("100-0002", "東京都", "千代田区", "千代田1-2-3", None),
            True,
        ),
    ],
)
def test_shipping_differs(buyer, shipping, differs):
    assert shipping_differs(normalize_address(*buyer), normalize_address(*shipping)) is differs


@pytest.mark.parametrize(
    ("name", "script"),
    [
        ("山田 太郎", "kanji"),
        ("山田 あすか", "kanji"),
        ("ヤマダ タロウ", "kana"),
        ("やまだ　たろう", "kana"),
        ("ﾔﾏﾀﾞ ﾀﾛｳ", "kana"),
        ("ユーコ", "kana"),
        ("Taro Yamada", "latin"),
        ("ＴＡＲＯ", "latin"),
        ("Ταρο", "other"),
        ("", "other"),
    ],
)
def test_name_script(name, script):
    assert name_script(name) == script


# ------------------------------------------------------------------ order_attributes


ALLOWED: dict[str, set] = {
    "phone_kind": {*PHONE_KINDS, MISSING},
    "phone_personal": {True, False},
    "email_domain_class": {*EMAIL_CLASSES, MISSING},
    "email_plus_tag": {True, False},
    "birth_date_status": {"valid", "invalid", MISSING},
    "name_script": set(NAME_SCRIPTS),
    "name_is_kana_reading": {True, False, None},
    "postal_code_valid": {True, False},
    "postal_code_known": {True, False},
    "address_matches_postal_code": {True, False, None},
    "prefecture_code": {f"{i:02d}" for i in range(1, 48)} | {None},
    "ship_to_other": {True, False},
    "ship_name_differs": {True, False},
    "ship_phone_differs": {True, False, None},
    "ship_postal_code_known": {True, False, None},
    "ship_address_matches_postal_code": {True, False, None},
    "ship_prefecture_code": {f"{i:02d}" for i in range(1, 48)} | {None},
    "ship_prefecture_differs": {True, False, None},
}


def _order(registry, value) -> Order:
    return record_from_datum(Order, registry.from_json("Order", value))


def test_order_attributes_of_the_sample_order(registry, order_json):
    attrs = order_attributes(_order(registry, order_json))
    assert attrs == {
        "phone_kind": "mobile",
        "phone_personal": True,
        "email_domain_class": "corporate",
        "email_plus_tag": False,
        "birth_date_status": MISSING,
        "name_script": "kanji",
        "name_is_kana_reading": None,
        "postal_code_valid": True,
        "postal_code_known": True,
        "address_matches_postal_code": True,
        "prefecture_code": "13",
        "ship_to_other": True,
        "ship_name_differs": True,
        "ship_phone_differs": None,
        "ship_postal_code_known": True,
        "ship_address_matches_postal_code": True,
        "ship_prefecture_code": "27",
        "ship_prefecture_differs": True,
    }


def test_order_attributes_without_shipping_and_with_variations(registry, order_json):
    buyer = order_json["buyer"]
    buyer |= {
        "name": "やまだ　たろう",
        "name_kana": "ﾔﾏﾀﾞ ﾀﾛｳ",
        "email": "Taro.Yamada+shop@googlemail.com",
        "phone": "0120-123-456",
        "birth_date": "S60.2.30",
    }
    buyer["address"] = {"postal_code": "〒100-0001", "prefecture": "大阪府", "street": "千代田1-1"}
    order_json["shipping"] = None
    attrs = order_attributes(_order(registry, order_json))
    assert attrs["phone_kind"] == "toll_free" and attrs["phone_personal"] is False
    assert attrs["email_domain_class"] == "free" and attrs["email_plus_tag"] is True
    assert attrs["birth_date_status"] == "invalid"
    assert attrs["name_script"] == "kana" and attrs["name_is_kana_reading"] is True
    assert attrs["address_matches_postal_code"] is False
    assert attrs["prefecture_code"] == "27"  # what the buyer claims; the mismatch is flagged
    assert attrs["ship_to_other"] is False and attrs["ship_prefecture_differs"] is False


def test_shipping_to_the_buyer_written_differently_is_not_shipping_elsewhere(registry, order_json):
    order_json["shipping"] = {
        "name": "ﾔﾏﾀﾞ ﾀﾛｳ",
        "name_kana": "やまだ たろう",
        "phone": "+81 90 1234 5678",
        "address": {"postal_code": "1000001", "street": "東京都千代田区千代田一丁目一番"},
    }
    order_json["buyer"]["name_kana"] = "ヤマダ タロウ"
    attrs = order_attributes(_order(registry, order_json))
    assert attrs["ship_to_other"] is False
    assert attrs["ship_name_differs"] is False
    assert attrs["ship_phone_differs"] is False
    assert attrs["ship_prefecture_differs"] is False


def test_missing_contact_fields(registry, order_json):
    order_json["buyer"] |= {"email": None, "phone": None}
    attrs = order_attributes(_order(registry, order_json))
    assert attrs["phone_kind"] == MISSING and attrs["phone_personal"] is False
    assert attrs["email_domain_class"] == MISSING and attrs["email_plus_tag"] is False


@pytest.fixture(scope="module")
def simulated(registry) -> list[tuple[Order, str | None]]:
    events = Simulator(SimConfig(orders=600, seed=1, end=END)).events()
    return [(_order(registry, e.value), e.fraud_pattern) for e in events if e.topic == "orders"]


def _pii(order: Order) -> set[str]:
    buyer = order.buyer
    values = {buyer.name, buyer.name_kana, buyer.email, buyer.phone, buyer.birth_date}
    values |= set(dataclasses.astuple(buyer.address))
    if order.shipping:
        values |= {order.shipping.name, order.shipping.name_kana, order.shipping.phone}
        values |= set(dataclasses.astuple(order.shipping.address))
    return {v for v in values if v}


def test_simulated_orders_give_bounded_pii_free_attributes(simulated):
    for order, _ in simulated:
        attrs = order_attributes(order)
        assert set(attrs) == set(ALLOWED)
        for key, value in attrs.items():
            assert value in ALLOWED[key], (key, value)
        pii = _pii(order)
        assert not any(isinstance(v, str) and v in pii for v in attrs.values())


def test_simulated_fraud_patterns_show_in_the_attributes(simulated):
    by_pattern: dict[str | None, list[dict[str, object]]] = {}
    for order, pattern in simulated:
        by_pattern.setdefault(pattern, []).append(order_attributes(order))
    for attrs in by_pattern.get("identity_variation", []) + by_pattern.get("ship_mismatch", []):
        assert attrs["ship_to_other"] is True
        assert attrs["ship_name_differs"] is True
    legit = by_pattern[None]
    assert sum(a["ship_to_other"] for a in legit) < 0.1 * len(legit)  # gifts only
    assert sum(a["phone_kind"] == "mobile" for a in legit) > 0.8 * len(legit)
    assert len(by_pattern.get("identity_variation", [])) >= 2


def test_address_attributes_are_cached():
    address_attributes.cache_clear()
    address = Address(postal_code="100-0001", street="千代田1-1")
    first = address_attributes(address)
    assert address_attributes(Address(postal_code="100-0001", street="千代田1-1")) is first
    assert address_attributes.cache_info().hits == 1
    assert re.fullmatch(r"\d{2}", first.prefecture_code or "")
