"""Shared fixtures and factories: the real schemas in `schemas/`, one valid natural-JSON event
per record, and typed orders and merchants for the pure stages' tests."""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.codec import SchemaRegistry
from streams.records import Address, Buyer, Merchant, Order

ORDERED_AT = datetime(2026, 10, 31, tzinfo=UTC)


def make_order(
    amount: int = 5_000,
    method: str = "CARD",
    *,
    order_id: str = "o-1",
    merchant_id: str = "m0001",
    when: datetime = ORDERED_AT,
    phone: str | None = None,
    **fields: Any,
) -> Order:
    """An order with a buyer in 千代田 (the fields a test does not care about filled in)."""
    buyer = Buyer(
        name="山田 太郎", address=Address(postal_code="1000001", street="千代田1-1"), phone=phone
    )
    return Order(
        order_id=order_id,
        merchant_id=merchant_id,
        event_time=when,
        amount=amount,
        payment_method=method,
        buyer=buyer,
        **fields,
    )


def make_merchant(
    tier: str = "STANDARD", status: str = "ACTIVE", *, merchant_id: str = "m0001"
) -> Merchant:
    return Merchant(merchant_id, "株式会社テスト", "FOOD", tier, ORDERED_AT, status)


SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

VALID_JSON: dict[str, dict[str, Any]] = {
    "Order": {
        "order_id": "o-1",
        "merchant_id": "m0001",
        "event_time": "2026-10-01T12:00:00.123+09:00",
        "amount": 4980,
        "payment_method": "DEFERRED",
        "buyer": {
            "name": "山田 太郎",
            "email": "taro@example.co.jp",
            "phone": "090-1234-5678",
            "address": {"postal_code": "100-0001", "street": "千代田1-1"},
        },
        "shipping": {
            "name": "佐藤 花子",
            "address": {"postal_code": "530-0001", "street": "梅田1-1", "prefecture": "大阪府"},
        },
        "items": [{"sku": "sku-00001", "category": "food", "unit_price": 2490, "quantity": 2}],
    },
    "Payment": {
        "payment_id": "pay-1",
        "order_id": "o-1",
        "event_time": 1790000000000,
        "kind": "CARD_AUTH",
        "amount": 4980,
    },
    "Account": {
        "account_id": "a-1",
        "event_time": 1790000000000,
        "kind": "KYC_VERIFIED",
        "kyc_level": "FULL",
        "person": {
            "name": "山田 太郎",
            "birth_date": "1990-01-01",
            "phone": "090-1234-5678",
            "address": {"postal_code": "530-0001", "street": "梅田1-1", "prefecture": "大阪府"},
        },
    },
    "Login": {
        "login_id": "l-1",
        "account_id": "a-1",
        "event_time": 1790000000000,
        "method": "OTP",
        "success": True,
    },
    "Outcome": {
        "order_id": "o-1",
        "event_time": 1790000000000,
        "kind": "PAID",
        "source": "COLLECTIONS",
    },
    "CampaignTicket": {
        "campaign_id": "otoshidama",
        "month": "2026-11",
        "purchase_id": "o-1",
        "identity_id": "i1",
        "day": "2026-11-30",
        "action": "ISSUED",
        "at": 1790000000000,
    },
    "CampaignWinner": {
        "campaign_id": "otoshidama",
        "month": "2026-11",
        "rank": 1,
        "identity_id": "i1",
        "tickets": 3,
        "prize_yen": 10000,
        "drawn_at": 1790000000000,
    },
    "Merchant": {
        "merchant_id": "m0001",
        "name": "株式会社テスト",
        "category": "FOOD",
        "tier": "STANDARD",
        "updated_at": 1790000000000,
    },
    "Decision": {
        "order_id": "o-1",
        "merchant_id": "m0001",
        "decision": "APPROVE",
        "score": 0.0198,
        "reasons": ["SCORE_RULES_ONLY"],
        "policy_version": "default-0123abcd",
        "amount": 4980,
        "event_time": 1790000000000,
        "decided_at": 1790000000042,
        "latency_event_ms": 42.0,
        "latency_ingest_ms": 7.5,
    },
    "DecisionTrace": {
        "order_id": "o-1",
        "decided_at": 1790000000042,
        "decision": "REVIEW",
        "score": 0.62,
        "reasons": ["MODEL:velocity_count_1h", "SCORE_MODEL"],
        "policy_version": "default-0123abcd",
        "merchant_override": False,
        "thresholds": {"review_score": 0.5, "decline_score": 0.9},
        "allowed_methods": None,
        "inputs": {"amount": 4980.0, "outstanding": 0.0},
        "fired": [],
        "list_hits": {"hard_blocks": [], "allows": [], "blocks": []},
        "model_version": "logreg-v3",
        "model_warm": True,
        "model_score": 0.62,
        "contributions": {"velocity_count_1h": 1.3},
        "features": {"velocity_count_1h": 4.0},
        "shadow": {
            "policy_version": "candidate-89abcdef",
            "decision": "DECLINE",
            "score": 0.62,
            "reasons": ["SCORE_MODEL"],
        },
    },
}


@pytest.fixture(scope="session")
def registry() -> SchemaRegistry:
    return SchemaRegistry(SCHEMA_DIR)


@pytest.fixture
def valid_json() -> dict[str, dict[str, Any]]:
    """Fresh, valid natural-JSON events by record name, which a test may mutate."""
    return copy.deepcopy(VALID_JSON)


@pytest.fixture
def order_json() -> dict[str, Any]:
    """A fresh, valid natural-JSON Order that a test may mutate."""
    return copy.deepcopy(VALID_JSON["Order"])


# ---------------------------------------------------------------- tools some tests need

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(name: str, found: bool, hint: str) -> None:
    """Skip a test whose tool is missing on a developer's machine; fail it under CI=true, so
    CI never goes green without running it."""
    if found:
        return
    message = f"{name} missing: {hint} (make setup installs it)"
    if IN_CI:
        pytest.fail(f"{message}; under CI=true a missing tool fails the run")
    pytest.skip(message)


@pytest.fixture
def promtool_present() -> None:
    require("promtool", shutil.which("promtool") is not None, "apt-get install prometheus")


@pytest.fixture
def amtool_present() -> None:
    require("amtool", shutil.which("amtool") is not None, "apt-get install prometheus-alertmanager")


@pytest.fixture
def sklearn_present() -> None:
    require("scikit-learn", importlib.util.find_spec("sklearn") is not None, "pip install '.[dev]'")
