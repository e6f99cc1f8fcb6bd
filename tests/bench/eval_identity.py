"""Identity resolution (名寄せ) quality on a labelled set: pairwise precision, recall and F1.

    .venv/bin/python -m tests.bench.eval_identity [--people 2000] [--seed 1]

Needs the local Redis (`shinsa stack up`). People come from the simulator (Faker ja_JP names and
birthdays, real postal codes, valid mobiles and landlines). Each person gives 1–5 buyer records,
each written with its own variations (labelled): kana or hiragana or half-width names, spaces,
異体字 (髙/高, 齋/斎, 邊/辺 … and some the normalizer does not know), phone formats (+81, full
width, brackets, no hyphens), gmail dots and +tags, e-mail case, 〒 and hyphenless postal codes,
prefecture or city omitted, one-line addresses, 丁目番号 vs hyphens vs kanji numerals, the
building inside the street or written differently or left out, and contact fields missing.
Hard negatives: households (same family name, address and landline; own first name, mobile,
e-mail and birthday, except a few twins who share it) and namesakes (same name, everything else
different).

The whole set is resolved in a shuffled order with `agents.identity.resolve_buyers` (project
defaults: fan-out limit from the settings) in a fresh Redis namespace, dropped afterwards, and
compared with an exact-match baseline (records linked only by identical raw e-mail, phone, or
name + address strings). Pairs are counted from cluster sizes, never pair by pair. Misses are
broken down by variation kind; normalizer failures (a variation that does not normalize back to
the person's value) are listed with an example each. Prints rich tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import re
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from unittest import mock

import jaconv
from redis import asyncio as aioredis
from rich import box
from rich.console import Console
from rich.table import Table

from agents import identity as identity_module
from agents.identity import drop_namespace, person_keys, resolve_buyers
from agents.normalize import (
    normalize_address,
    normalize_birth_date,
    normalize_email,
    normalize_kana,
    normalize_name,
    normalize_phone,
)
from streams.records import Address, Buyer
from streams.settings import Settings, load_settings
from streams.tools.simulate import Person, SimConfig, Simulator, landline_number, mobile_number

GOAL_PRECISION = 0.995
GOAL_RECALL = 0.97
SHARE_HOUSEHOLD = 0.2  # share of people living with family (2–4 people, one landline)
SHARE_NAMESAKE = 0.08  # share of people who get a namesake elsewhere
SHARE_TWINS = 0.05  # households where a second member shares the first one's birthday
RECORDS_WEIGHTS = (0.3, 0.25, 0.2, 0.15, 0.1)  # 1–5 records per person

# 異体字 people really write in names and places. Those marked † are not folded by
# agents.normalize.KANJI_VARIANTS (measured, not assumed: see the normalization table).
VARIANT_KANJI: dict[str, str] = {
    "高": "髙",
    "辺": "邊邉",
    "斎": "齋",
    "斉": "齊",
    "崎": "﨑嵜",
    "島": "嶋",
    "吉": "𠮷",
    "沢": "澤",
    "浜": "濱",
    "真": "眞",
    "実": "實",
    "国": "國",
    "広": "廣",
    "桜": "櫻",
    "富": "冨",
    "関": "關",
    "黒": "黑",
    "福": "\ufa1b",  # 福 (CJK compatibility ideograph; NFKC folds it)
    "橋": "槗",  # †
    "涼": "凉",  # †
    "聡": "聰",  # †
    "清": "淸",  # †
    "瀬": "瀨",  # †
    "柳": "栁",  # †
}
_KANJI_DIGITS = "〇一二三四五六七八九"
_KE = "ケヶが"
_KANJI = "\u3400-\u9fff"
_KE_RE = re.compile(f"(?<=[{_KANJI}])[{_KE}](?=[{_KANJI}])")
_KE_END_RE = re.compile(f"(?<=[{_KANJI}])[ケヶ]$")  # 谷ケ + 122番地
_NO_RE = re.compile(f"(?<=[{_KANJI}])[ノの](?=[{_KANJI}])")

# Which buyer field a variation kind is about (the normalized value it must keep).
FIELD_OF_PREFIX = {
    "name": "name",
    "kana": "kana",
    "phone": "phone",
    "email": "email",
    "birth": "birth",
    "postal": "place",
    "pref": "place",
    "city": "place",
    "addr": "place",
    "street": "place",
    "town": "place",
    "building": "place",
}
# Kinds that remove information on purpose: a mismatch there is by design, not a normalizer bug.
BY_DESIGN = {
    "kana_missing",
    "phone_missing",
    "email_missing",
    "birth_missing",
    "building_omitted",
    "sparse",
    "phone_landline",
}


# --------------------------------------------------------------------------- the labelled set


@dataclass(slots=True)
class Human:
    """The truth: one person, the simulator's Person plus the phones they own."""

    index: int
    p: Person
    mobile: str | None
    landline: str | None
    role: str  # solo | household | namesake (the copy) | namesake-original
    household: int | None = None
    namesake_of: int | None = None


@dataclass(slots=True)
class Record:
    buyer: Buyer
    truth: int
    kinds: tuple[str, ...]
    clean: Buyer  # the same person written plainly (for the normalization check)
    source_phone: str | None = None


def kanji_number(n: int) -> str:
    """23 → 二十三, 105 → 百五, 2332 → 二千三百三十二 (as people write 丁目 and 番地)."""
    if n == 0:
        return "〇"
    out = ""
    for unit, mark in ((1000, "千"), (100, "百"), (10, "十")):
        d, n = divmod(n, unit)
        if d:
            out += ("" if d == 1 else _KANJI_DIGITS[d]) + mark
    return out + (_KANJI_DIGITS[n] if n else "")


def wareki(iso: str) -> str:
    """1985-04-01 → 昭和60年4月1日 (1989-01-08 → 平成元年1月8日)."""
    d = date.fromisoformat(iso)
    era, start = "昭和", date(1926, 12, 25)
    for name, first in (("令和", date(2019, 5, 1)), ("平成", date(1989, 1, 8))):
        if d >= first:
            era, start = name, first
            break
    year = d.year - start.year + 1
    return f"{era}{'元' if year == 1 else year}年{d.month}月{d.day}日"


class Population:
    """People, households and namesakes from the simulator, with unique personal contacts."""

    def __init__(self, people: int, seed: int) -> None:
        self.sim = Simulator(SimConfig(orders=60, seed=seed, merchants=1, fraud_rate=0.0))
        self.rng = random.Random(seed * 7919 + 1)
        self.used_mobiles: set[str] = set()
        self.used_landlines: set[str] = set()
        self.used_emails: set[str] = set()
        self.humans: list[Human] = []
        self.households = 0
        self.namesakes = 0
        self.twins = 0
        self._serial = 0
        while len(self.humans) < people:
            self._add(people - len(self.humans))

    def _person(self) -> Person:
        self._serial += 1
        return self.sim._person(self._serial)

    def _unique_email(self, p: Person) -> Person:
        stem = re.sub(r"\d+$", "", p.email_user)
        user = p.email_user
        while normalize_email(f"{user}@{p.email_domain}").address in self.used_emails:
            user = f"{stem}{self.rng.randint(1, 9999)}"
        self.used_emails.add(normalize_email(f"{user}@{p.email_domain}").address or "")
        return dataclasses.replace(p, email_user=user)

    def _mobile(self) -> str:
        number = mobile_number(self.rng)
        while number in self.used_mobiles:
            number = mobile_number(self.rng)
        self.used_mobiles.add(number)
        return number

    def _landline(self, prefecture: str) -> str:
        number = landline_number(self.rng, prefecture)
        while number in self.used_landlines:
            number = landline_number(self.rng, prefecture)
        self.used_landlines.add(number)
        return number

    def _human(
        self, p: Person, role: str, phones: tuple[str | None, str | None] | None = None, **kw: Any
    ) -> Human:
        """A person with a unique e-mail; phones (mobile, landline) default to the Person's."""
        p = self._unique_email(p)
        if phones is not None:
            mobile, landline = phones
        elif normalize_phone(p.phone).kind == "fixed":
            landline = (
                p.phone if p.phone not in self.used_landlines else self._landline(p.prefecture)
            )
            self.used_landlines.add(landline)
            mobile = self._mobile() if self.rng.random() < 0.5 else None
        else:
            landline = None
            mobile = p.phone if p.phone not in self.used_mobiles else self._mobile()
            self.used_mobiles.add(mobile)
        h = Human(len(self.humans), p, mobile, landline, role, **kw)
        self.humans.append(h)
        return h

    def _add(self, room: int) -> None:
        rng = self.rng
        base = self._person()
        draw = rng.random()
        # A draw makes one person, a namesake pair (2) or a household (2.75 on average), so
        # these thresholds give about the SHARE_* of people.
        household, namesake = SHARE_HOUSEHOLD / 2.5, SHARE_NAMESAKE / 2
        if draw < household and room >= 2:
            size = min(room, rng.choice([2, 2, 3, 4]))
            self.households += 1
            landline = self._landline(base.prefecture)
            self._human(base, "household", (self._mobile(), landline), household=self.households)
            firsts = {base.first[0], base.first[1]}
            family_name = base.email_user.split(".")[1].rstrip("0123456789")
            for count in range(size - 1):
                other = self._person()
                while other.first[0] in firsts or other.first[1] in firsts:
                    other = self._person()
                firsts |= {other.first[0], other.first[1]}
                twin = count == 0 and rng.random() < SHARE_TWINS
                self.twins += twin
                member = dataclasses.replace(
                    base,
                    first=other.first,
                    birth_date=base.birth_date if twin else other.birth_date,
                    email_user=f"{other.email_user.split('.')[0]}.{family_name}"
                    f"{rng.randint(1, 999)}",
                    email_domain=other.email_domain,
                    device_id=other.device_id,
                )
                mobile = self._mobile() if rng.random() < 0.9 else None
                self._human(member, "household", (mobile, landline), household=self.households)
        elif draw < household + namesake and room >= 2:
            self.namesakes += 1
            original = self._human(base, "namesake-original")
            other = self._person()
            while other.birth_date == base.birth_date:
                other = self._person()
            stem = re.sub(r"\d+$", "", base.email_user)
            copy = dataclasses.replace(
                other,
                last=base.last,
                first=base.first,
                email_user=f"{stem}{rng.randint(1, 9999)}",
            )
            self._human(copy, "namesake", namesake_of=original.index)
        else:
            self._human(base, "solo")


class Variator:
    """Writes a person's buyer record with labelled variations."""

    def __init__(self, sim: Simulator, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng

    def clean(self, h: Human, phone: str | None) -> Buyer:
        p = h.p
        return Buyer(
            name=f"{p.last[0]} {p.first[0]}",
            name_kana=f"{p.last[1]} {p.first[1]}",
            email=f"{p.email_user}@{p.email_domain}",
            phone=phone,
            birth_date=p.birth_date,
            address=Address(
                postal_code=p.postal_code,
                prefecture=p.prefecture,
                city=p.city,
                street=p.street,
                building=p.building,
            ),
        )

    def record(self, h: Human) -> Record:
        rng = self.rng
        kinds: list[str] = []
        phones = [x for x in (h.mobile, h.landline) if x]
        if h.mobile and h.landline:
            phone = h.landline if rng.random() < 0.3 else h.mobile
        else:
            phone = phones[0]
        if phone == h.landline and h.mobile:
            kinds.append("phone_landline")
        clean = self.clean(h, phone)
        if rng.random() < 0.12:  # the simulator's own variation (Simulator._vary)
            person = dataclasses.replace(h.p, phone=phone)
            raw = self.sim._buyer(person, variant=True)
            a = raw["address"]
            buyer = Buyer(
                name=raw["name"],
                name_kana=raw["name_kana"],
                email=raw["email"],
                phone=raw["phone"],
                birth_date=raw["birth_date"],
                address=Address(**a),
            )
            return Record(buyer, h.index, ("sim_vary", *kinds), clean, phone)
        name = self._name(h, kinds)
        kana = self._kana(h, kinds)
        email = self._email(h, kinds)
        phone_text = self._phone(phone, kinds)
        birth = self._birth(h.p.birth_date, kinds)
        address = self._address(h.p, kinds)
        if rng.random() < 0.1:  # only a subset of the contact fields
            kinds.append("sparse")
            birth = None
            if rng.random() < 0.5:
                email = None
            else:
                phone_text = None
        buyer = Buyer(
            name=name,
            name_kana=kana,
            email=email,
            phone=phone_text,
            birth_date=birth,
            address=address,
        )
        return Record(buyer, h.index, tuple(kinds), clean, phone)

    # -- fields

    def _pick(self, kinds: list[str], options: Sequence[tuple[str | None, float]]) -> str | None:
        kind = self.rng.choices([k for k, _ in options], weights=[w for _, w in options])[0]
        if kind is not None:
            kinds.append(kind)
        return kind

    def _name(self, h: Human, kinds: list[str]) -> str:
        last, first = h.p.last, h.p.first
        variable = [c for c in last[0] + first[0] if c in VARIANT_KANJI]
        kind = self._pick(
            kinds,
            [
                (None, 0.4),
                ("name_nospace", 0.15),
                ("name_fullspace", 0.1),
                ("name_katakana", 0.08),
                ("name_hiragana", 0.05),
                ("name_halfwidth", 0.04),
                ("name_variant_kanji", 0.18 if variable else 0.0),
            ],
        )
        kanji, reading = f"{last[0]} {first[0]}", f"{last[1]} {first[1]}"
        if kind == "name_nospace":
            return kanji.replace(" ", "")
        if kind == "name_fullspace":
            return kanji.replace(" ", "\u3000")
        if kind == "name_katakana":
            return reading if self.rng.random() < 0.6 else reading.replace(" ", "")
        if kind == "name_hiragana":
            return jaconv.kata2hira(reading)
        if kind == "name_halfwidth":
            return jaconv.z2h(reading, kana=True)
        if kind == "name_variant_kanji":
            c = self.rng.choice(variable)
            return kanji.replace(c, self.rng.choice(VARIANT_KANJI[c]))
        return kanji

    def _kana(self, h: Human, kinds: list[str]) -> str | None:
        reading = f"{h.p.last[1]} {h.p.first[1]}"
        kind = self._pick(
            kinds,
            [
                (None, 0.55),
                ("kana_nospace", 0.12),
                ("kana_fullspace", 0.05),
                ("kana_halfwidth", 0.08),
                ("kana_hiragana", 0.1),
                ("kana_missing", 0.1),
            ],
        )
        if kind == "kana_nospace":
            return reading.replace(" ", "")
        if kind == "kana_fullspace":
            return reading.replace(" ", "\u3000")
        if kind == "kana_halfwidth":
            return jaconv.z2h(reading, kana=True)
        if kind == "kana_hiragana":
            return jaconv.kata2hira(reading)
        if kind == "kana_missing":
            return None
        return reading

    def _email(self, h: Human, kinds: list[str]) -> str | None:
        user, domain = h.p.email_user, h.p.email_domain
        kind = self._pick(
            kinds,
            [
                (None, 0.45),
                ("email_case", 0.1),
                ("email_gmail_dots", 0.15 if domain == "gmail.com" else 0.0),
                (
                    "email_plus_tag",
                    0.1 if domain in ("gmail.com", "outlook.jp", "icloud.com") else 0,
                ),
                ("email_fullwidth", 0.03),
                ("email_missing", 0.12),
            ],
        )
        if kind == "email_case":
            if self.rng.random() < 0.5:
                return f"{user}@{domain}".upper()
            return f"{'.'.join(part.capitalize() for part in user.split('.'))}@{domain}"
        if kind == "email_gmail_dots":
            if "." in user and self.rng.random() < 0.7:
                return f"{user.replace('.', '')}@{domain}"
            i = self.rng.randrange(1, len(user))
            return f"{user[:i]}.{user[i:]}@{domain}".replace("..", ".")
        if kind == "email_plus_tag":
            return f"{user}+{self.rng.choice(['shop', 'bnpl', 'x1'])}@{domain}"
        if kind == "email_fullwidth":
            return jaconv.h2z(f"{user}@{domain}", ascii=True, digit=True)
        if kind == "email_missing":
            return None
        return f"{user}@{domain}"

    def _phone(self, phone: str | None, kinds: list[str]) -> str | None:
        if phone is None:
            return None
        kind = self._pick(
            kinds,
            [
                (None, 0.4),
                ("phone_nohyphen", 0.18),
                ("phone_fullwidth", 0.08),
                ("phone_plus81", 0.1),
                ("phone_brackets", 0.1),
                ("phone_spaces", 0.06),
                ("phone_missing", 0.08),
            ],
        )
        groups = phone.split("-")
        if kind == "phone_nohyphen":
            return phone.replace("-", "")
        if kind == "phone_fullwidth":
            return jaconv.h2z(phone, digit=True, ascii=True)
        if kind == "phone_plus81":
            return self.rng.choice(
                ["+81 " + phone[1:], "+81-" + phone[1:], "+81" + phone[1:].replace("-", "")]
            )
        if kind == "phone_brackets":
            if self.rng.random() < 0.5:
                return f"({groups[0]}){'-'.join(groups[1:])}"
            return f"{groups[0]}({groups[1]}){groups[2]}"
        if kind == "phone_spaces":
            return " ".join(groups)
        if kind == "phone_missing":
            return None
        return phone

    def _birth(self, iso: str, kinds: list[str]) -> str | None:
        kind = self._pick(
            kinds,
            [
                (None, 0.45),
                ("birth_slash", 0.12),
                ("birth_wareki", 0.08),
                ("birth_compact", 0.05),
                ("birth_missing", 0.3),
            ],
        )
        d = date.fromisoformat(iso)
        if kind == "birth_slash":
            return f"{d.year}/{d.month}/{d.day}"
        if kind == "birth_wareki":
            return wareki(iso)
        if kind == "birth_compact":
            return d.strftime("%Y%m%d")
        if kind == "birth_missing":
            return None
        return iso

    def _address(self, p: Person, kinds: list[str]) -> Address:
        rng = self.rng
        m = re.fullmatch(r"(?P<town>\D+?)(?P<nums>\d.*)", p.street)
        assert m is not None, p.street
        town, nums = m["town"], [int(n) for n in re.findall(r"\d+", m["nums"])]
        chome = "丁目" in p.street
        postal: str | None = p.postal_code
        pk = self._pick(
            kinds,
            [
                (None, 0.55),
                ("postal_nohyphen", 0.2),
                ("postal_mark", 0.12),
                ("postal_fullwidth", 0.08),
                ("postal_mark_nohyphen", 0.05),
            ],
        )
        if pk == "postal_nohyphen":
            postal = p.postal_code.replace("-", "")
        elif pk == "postal_mark":
            postal = rng.choice(["〒", "〒 "]) + p.postal_code
        elif pk == "postal_fullwidth":
            postal = jaconv.h2z(p.postal_code, digit=True, ascii=True)
        elif pk == "postal_mark_nohyphen":
            postal = "〒" + p.postal_code.replace("-", "")
        # the town as typed
        tk = self._pick(
            kinds,
            [
                (None, 0.85),
                (
                    "town_ke_no",
                    0.3 if any(r.search(town) for r in (_KE_RE, _KE_END_RE, _NO_RE)) else 0.0,
                ),
                (
                    "town_variant_kanji",
                    0.05 if any(c in VARIANT_KANJI for c in town) else 0.0,
                ),
            ],
        )
        if tk == "town_ke_no":  # 旭ケ丘/旭ヶ丘/旭が丘, 三ノ輪/三の輪: only between kanji
            town = _KE_RE.sub(lambda _: rng.choice(_KE), town)
            town = _KE_END_RE.sub(lambda _: rng.choice("ケヶ"), town)
            town = _NO_RE.sub(lambda _: rng.choice("ノの"), town)
        elif tk == "town_variant_kanji":
            c = rng.choice([c for c in town if c in VARIANT_KANJI])
            town = town.replace(c, rng.choice(VARIANT_KANJI[c]))
        # the numbers
        sk = self._pick(
            kinds,
            [
                (None, 0.4),
                ("street_hyphen", 0.28),
                ("street_kanji", 0.1),
                ("street_fullwidth", 0.1),
                ("street_mixed", 0.07),
                ("street_space", 0.05),
            ],
        )
        if chome:
            c, b, g = nums
            forms = {
                None: f"{c}丁目{b}番{g}号",
                "street_hyphen": f"{c}-{b}-{g}",
                "street_kanji": f"{kanji_number(c)}丁目{kanji_number(b)}番{kanji_number(g)}号",
                "street_fullwidth": jaconv.h2z(f"{c}－{b}－{g}", digit=True),
                "street_mixed": f"{c}丁目{b}-{g}",
                "street_space": f" {c}丁目 {b}番 {g}号",
            }
        else:
            b, *rest = nums
            g = rest[0] if rest else None
            tail = f"番地{g}" if g else "番地"
            forms = {
                None: f"{b}{tail}",
                "street_hyphen": f"{b}-{g}" if g else f"{b}",
                "street_kanji": f"{kanji_number(b)}番地" + (kanji_number(g) if g else ""),
                "street_fullwidth": jaconv.h2z(f"{b}－{g}" if g else f"{b}", digit=True),
                "street_mixed": f"{b}番{g}号" if g else f"{b}番地",
                "street_space": f" {b}{tail}",
            }
        street = town + forms[sk]
        prefecture: str | None = p.prefecture
        city: str | None = p.city
        ak = self._pick(
            kinds,
            [
                (None, 0.68),
                ("pref_omitted", 0.22),
                ("city_omitted", 0.04),
                ("addr_oneline", 0.06),
            ],
        )
        if ak == "pref_omitted":
            prefecture = None
        elif ak == "city_omitted":
            city = None
        elif ak == "addr_oneline":
            sep = rng.choice(["", " ", "\u3000"])
            street = f"{p.prefecture}{sep}{p.city}{sep}{street}"
            prefecture = city = None
        building = p.building
        if building:
            bm = re.fullmatch(r"(?P<name>\D+)(?P<room>\d+)", building)
            assert bm is not None, building
            bname, room = bm["name"], bm["room"]
            bk = self._pick(
                kinds,
                [
                    (None, 0.5),
                    ("building_room_format", 0.2),
                    ("building_in_street", 0.2),
                    ("building_omitted", 0.1),
                ],
            )
            if bk == "building_room_format":
                building = rng.choice(
                    [
                        f"{bname} {room}号室",
                        f"{bname}{room}号",
                        f"{bname}-{room}",
                        f"{bname} #{room}",
                    ]
                )
            elif bk == "building_in_street":
                sep = rng.choice([" ", "\u3000", "", "、"])
                street = f"{street}{sep}{rng.choice([building, f'{bname} {room}号室'])}"
                building = None
            elif bk == "building_omitted":
                building = None
        return Address(
            postal_code=postal or "",
            prefecture=prefecture,
            city=city,
            street=street,
            building=building,
        )


def build(people: int, seed: int) -> tuple[Population, list[Record]]:
    pop = Population(people, seed)
    variator = Variator(pop.sim, random.Random(seed * 104729 + 3))
    rng = random.Random(seed * 1299709 + 5)
    records: list[Record] = []
    for h in pop.humans:
        n = rng.choices(range(1, 6), weights=RECORDS_WEIGHTS)[0]
        records.extend(variator.record(h) for _ in range(n))
    rng.shuffle(records)
    return pop, records


# --------------------------------------------------------------------------- scoring


def pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclass(slots=True)
class Score:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    clusters: int


def score(predicted: Sequence[Any], truth: Sequence[int]) -> Score:
    """Pairwise P/R/F1 from the contingency table of (predicted cluster, true person)."""
    cells = Counter(zip(predicted, truth, strict=True))
    correct = sum(pairs(n) for n in cells.values())
    predicted_pairs = sum(pairs(n) for n in Counter(predicted).values())
    true_pairs = sum(pairs(n) for n in Counter(truth).values())
    precision = correct / predicted_pairs if predicted_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1, true_pairs, predicted_pairs, correct, len(set(predicted)))


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def exact_match_baseline(buyers: Sequence[Buyer]) -> list[int]:
    """Records linked only by identical raw e-mail, phone, or name + address strings."""
    uf = UnionFind(len(buyers))
    first: dict[tuple[str, ...], int] = {}
    for i, b in enumerate(buyers):
        a = b.address
        keys = [("email", b.email or ""), ("phone", b.phone or "")]
        place = (a.postal_code, a.prefecture or "", a.city or "", a.street, a.building or "")
        keys.append(("name_address", b.name, *place))
        for key in keys:
            if not key[1]:
                continue
            if key in first:
                uf.union(first[key], i)
            else:
                first[key] = i
    return [uf.find(i) for i in range(len(buyers))]


# --------------------------------------------------------------------------- diagnostics


def plain_keys(buyer: Buyer) -> list[str]:
    """person_keys' match keys in clear text ("kind\\x1fvalue"): the real code, no hashing."""
    uncached = getattr(person_keys, "__wrapped__", person_keys)  # never from/into a cache
    with mock.patch.object(identity_module, "keyed_hash", lambda _s, k, v: f"{k}\x1f{v}"):
        return list(uncached(buyer, b"").keys)


def normalized(buyer: Buyer) -> dict[str, Any]:
    a = buyer.address
    addr = normalize_address(a.postal_code, a.prefecture, a.city, a.street, a.building)
    phone = normalize_phone(buyer.phone) if buyer.phone else None
    email = normalize_email(buyer.email) if buyer.email else None
    return {
        "name": normalize_name(buyer.name),
        "kana": normalize_kana(buyer.name_kana) if buyer.name_kana else None,
        "phone": phone.e164 if phone else None,
        "email": email.address if email else None,
        "birth": normalize_birth_date(buyer.birth_date) if buyer.birth_date else None,
        "place": f"{addr.postal_code}|{addr.street}|{addr.building or ''}",
    }


def field_of(kind: str) -> str | None:
    return FIELD_OF_PREFIX.get(kind.split("_", 1)[0])


def normalization_failures(records: Sequence[Record]) -> dict[str, Any]:
    """Per variation kind: records whose field does not normalize back to the person's value."""
    checked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    signatures: Counter[tuple[str, tuple[str, ...]]] = Counter()
    examples: dict[tuple[str, tuple[str, ...]], str] = {}
    for r in records:
        if "sim_vary" in r.kinds:
            continue
        got, want = normalized(r.buyer), normalized(r.clean)
        by_field: dict[str, list[str]] = defaultdict(list)
        for kind in r.kinds:
            f = field_of(kind)
            if f is not None and kind not in BY_DESIGN:
                by_field[f].append(kind)
        for f, kinds in by_field.items():
            if got[f] is None and "sparse" in r.kinds:
                continue  # the field was dropped on purpose after its variation was chosen
            expect = want[f]
            if f == "place" and "building_omitted" in r.kinds:
                expect = expect.rsplit("|", 1)[0] + "|"  # the building left out on purpose
            if f == "name" and any(k in kinds for k in ("name_katakana", "name_hiragana")):
                expect = want["kana"]  # a name typed in kana must equal the reading
            if f == "name" and "name_halfwidth" in kinds:
                expect = want["kana"]
            for kind in kinds:
                checked[kind] += 1
            if got[f] != expect:
                for kind in kinds:
                    failed[kind] += 1
                sig = (f, tuple(sorted(kinds)))
                signatures[sig] += 1
                if sig not in examples:
                    examples[sig] = _example(r, f, got[f], expect)
    return {
        "checked": checked,
        "failed": failed,
        "signatures": signatures,
        "examples": examples,
    }


def _example(r: Record, f: str, got: Any, expect: Any) -> str:
    b = r.buyer
    if f == "place":
        a = b.address
        typed = f"{a.postal_code} / {a.prefecture} / {a.city} / {a.street} / {a.building}"
    else:
        typed = {"name": b.name, "kana": b.name_kana, "phone": b.phone, "email": b.email}.get(
            f, b.birth_date
        )
    return f"{typed!r} → {got!r}, expected {expect!r}"


_KATAKANA_ONLY = re.compile("[\u30a1-\u30fa\u30fc]+")


def blockers(mine: dict[str, Any], main: list[dict[str, Any]]) -> list[str]:
    """What kept a detached record from its person's main cluster, in the normalized fields."""
    out = []

    def no_building(place: str) -> str:
        return place.rsplit("|", 1)[0]

    if not any(mine["place"] == m["place"] for m in main) and any(
        no_building(mine["place"]) == no_building(m["place"]) for m in main
    ):
        out.append("address equal but for the building (omitted or split differently)")
    kana_name = bool(_KATAKANA_ONLY.fullmatch(mine["name"]))
    if mine["kana"] is None and kana_name and any(mine["name"] == m["kana"] for m in main):
        out.append("name typed in kana, no reading: equals the reading, but name_* ≠ kana_* keys")
    if any(
        m["kana"] is None and _KATAKANA_ONLY.fullmatch(m["name"]) and m["name"] == mine["kana"]
        for m in main
    ):
        out.append("name typed in kana, no reading: equals the reading, but name_* ≠ kana_* keys")
    if mine["kana"] is None and not kana_name and all(m["name"] != mine["name"] for m in main):
        out.append("kanji name without reading vs names in kana only (needs a dictionary)")
    if mine["kana"] is not None and all(
        m["kana"] is None and m["name"] != mine["name"] and m["name"] != mine["kana"] for m in main
    ):
        out.append("kanji name without reading vs names in kana only (needs a dictionary)")
    if not out:
        out.append("no shared contact and name/birth/address combination (fields left out)")
    return out


@dataclass
class MissReport:
    kinds_records: Counter[str] = field(default_factory=Counter)
    kinds_detached: Counter[str] = field(default_factory=Counter)
    kinds_missed_pairs: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    unlinked_fields: Counter[str] = field(default_factory=Counter)
    blockers: Counter[str] = field(default_factory=Counter)
    detached: int = 0
    missed_pairs: int = 0
    false_pairs: Counter[str] = field(default_factory=Counter)
    false_keys: Counter[str] = field(default_factory=Counter)


def analyse(
    records: Sequence[Record],
    predicted: Sequence[str],
    pop: Population,
    saturated: set[str],
    secret: bytes,
) -> MissReport:
    rep = MissReport()
    by_person: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_person[r.truth].append(i)
        for kind in r.kinds:
            rep.kinds_records[kind] += 1
    keys = [plain_keys(r.buyer) for r in records]
    norm = [normalized(r.buyer) for r in records]
    # false negatives: records of one person in several predicted clusters
    for members in by_person.values():
        clusters = Counter(predicted[i] for i in members)
        if len(clusters) < 2:
            continue
        main = clusters.most_common(1)[0][0]
        main_keys = {k for i in members if predicted[i] == main for k in keys[i]}
        for i in members:
            for j in members:
                if i < j and predicted[i] != predicted[j]:
                    rep.missed_pairs += 1
                    for kind in set(records[i].kinds) | set(records[j].kinds):
                        rep.kinds_missed_pairs[kind] += 1
            if predicted[i] == main:
                continue
            rep.detached += 1
            for kind in records[i].kinds:
                rep.kinds_detached[kind] += 1
            shared = [k for k in keys[i] if k in main_keys]
            if shared:
                sat = [
                    k
                    for k in shared
                    if identity_module.keyed_hash(secret, *k.split("\x1f", 1)) in saturated
                ]
                rep.causes["shares a key that saturated" if sat else "shares a key (?)"] += 1
                continue
            rep.causes["no match key in common"] += 1
            # which normalized fields would have matched the main cluster but have no key
            main_norm = [norm[j] for j in members if predicted[j] == main]
            for blocker in blockers(norm[i], main_norm):
                rep.blockers[blocker] += 1
            for f in ("name", "kana", "phone", "email", "birth", "place"):
                mine = norm[i][f]
                if mine is None or mine.startswith("None|"):
                    rep.unlinked_fields[f"{f}: missing"] += 1
                elif all(mine != other[f] for other in main_norm):
                    rep.unlinked_fields[f"{f}: differs"] += 1
                else:
                    rep.unlinked_fields[f"{f}: equal"] += 1
    # false positives: predicted clusters holding several people
    by_cluster: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(predicted):
        by_cluster[p].append(i)
    for members in by_cluster.values():
        people = Counter(records[i].truth for i in members)
        if len(people) < 2:
            continue
        ids = sorted(people)
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                a, b = pop.humans[ids[x]], pop.humans[ids[y]]
                if a.household is not None and a.household == b.household:
                    relation = "household"
                elif b.namesake_of == a.index or a.namesake_of == b.index:
                    relation = "namesake"
                else:
                    relation = "unrelated"
                rep.false_pairs[relation] += people[ids[x]] * people[ids[y]]
                ka = {k for i in members if records[i].truth == a.index for k in keys[i]}
                kb = {k for i in members if records[i].truth == b.index for k in keys[i]}
                for k in ka & kb:
                    rep.false_keys[f"{relation}: {k.split(chr(31))[0]}"] += 1
    return rep


# --------------------------------------------------------------------------- run


async def resolve(
    settings: Settings, buyers: list[Buyer], secret: bytes
) -> tuple[list[str], set[str], float]:
    client = aioredis.Redis.from_url(settings.redis_url)
    namespace = f"eval-identity-{uuid.uuid4().hex[:10]}"
    try:
        start = time.perf_counter()
        ids = await resolve_buyers(
            client, namespace, buyers, secret, fanout_limit=settings.identity_fanout_limit
        )
        elapsed = time.perf_counter() - start
        saturated = {s.decode() for s in await client.smembers(f"{namespace}:saturated")}
        return ids, saturated, elapsed
    finally:
        await drop_namespace(client, namespace)
        await client.aclose()


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(str(x) for x in row))
    return table


def report(
    console: Console,
    args: argparse.Namespace,
    pop: Population,
    records: list[Record],
    ours: Score,
    base: Score,
    rep: MissReport,
    norm: dict[str, Any],
    elapsed: float,
    resolve_s: float,
    fanout: int,
) -> dict[str, Any]:
    persons = len({r.truth for r in records})
    goal = ours.precision >= GOAL_PRECISION and ours.recall >= GOAL_RECALL
    summary = _table(
        f"Identity resolution quality — {len(records)} records of {persons} people "
        f"(seed {args.seed}, fan-out limit {fanout})",
        ["", "ours (resolve_buyers)", "exact-match baseline", "goal"],
        [
            ("pairwise precision", _pct(ours.precision), _pct(base.precision), "≥ 99.50 %"),
            ("pairwise recall", _pct(ours.recall), _pct(base.recall), "≥ 97.00 %"),
            ("pairwise F1", _pct(ours.f1), _pct(base.f1), ""),
            ("identities (clusters)", ours.clusters, base.clusters, persons),
            ("predicted pairs", ours.predicted_pairs, base.predicted_pairs, ours.true_pairs),
            ("correct pairs", ours.correct_pairs, base.correct_pairs, ours.true_pairs),
        ],
    )
    console.print(summary)
    roles = Counter(h.role for h in pop.humans)
    console.print(
        f"records {len(records)} · persons {persons} · identities {ours.clusters} · "
        f"households {pop.households} ({roles['household']} people, {pop.twins} with twins) · "
        f"namesake pairs {pop.namesakes} · resolved in {resolve_s:.2f} s · total {elapsed:.1f} s · "
        f"goal {'[green]met[/]' if goal else '[red]not met[/]'}"
    )
    kinds = sorted(rep.kinds_records, key=lambda k: (-rep.kinds_detached[k], k))
    console.print(
        _table(
            "Misses by variation kind (a record is detached when it is not in its person's "
            "main cluster)",
            ["kind", "records", "detached", "detached %", "missed pairs involving it"],
            (
                (
                    k,
                    rep.kinds_records[k],
                    rep.kinds_detached[k],
                    _pct(rep.kinds_detached[k] / rep.kinds_records[k]),
                    rep.kinds_missed_pairs[k],
                )
                for k in kinds
                if rep.kinds_detached[k] or rep.kinds_records[k] >= 20
            ),
        )
    )
    console.print(
        _table(
            f"Why the {rep.detached} detached records did not link ({rep.missed_pairs} "
            "missed pairs)",
            ["cause", "records"],
            rep.causes.most_common(),
        )
    )
    if rep.blockers:
        console.print(
            _table(
                "What blocked them (a record can have several)",
                ["blocker", "records"],
                rep.blockers.most_common(),
            )
        )
    if rep.unlinked_fields:
        console.print(
            _table(
                "Detached records with no key in common: their normalized fields vs the "
                "person's main cluster",
                ["field", "records"],
                sorted(rep.unlinked_fields.items()),
            )
        )
    failing = sorted(norm["failed"], key=lambda k: -norm["failed"][k])
    console.print(
        _table(
            "Normalizer failures: variation kinds that do not normalize back to the person's "
            "value (by-design losses excluded)",
            ["kind", "records checked", "failed", "failed %"],
            (
                (
                    k,
                    norm["checked"][k],
                    norm["failed"][k],
                    _pct(norm["failed"][k] / norm["checked"][k]),
                )
                for k in failing
            ),
        )
    )
    if norm["signatures"]:
        console.print(
            _table(
                "Failure signatures (field, kinds on that field) with one example",
                ["field: kinds", "records", "example: typed → normalized, expected"],
                (
                    (f"{f}: {'+'.join(ks)}", n, norm["examples"][(f, ks)])
                    for (f, ks), n in norm["signatures"].most_common(15)
                ),
            )
        )
    if rep.false_pairs:
        console.print(
            _table(
                "False positives: wrongly linked pairs by relation, and the shared keys",
                ["relation / key", "pairs"],
                [*rep.false_pairs.most_common(), *rep.false_keys.most_common()],
            )
        )
    else:
        console.print("False positives: none (households and namesakes all kept apart).")
    return {
        "records": len(records),
        "persons": persons,
        "identities": ours.clusters,
        "baseline_identities": base.clusters,
        "households": pop.households,
        "household_people": roles["household"],
        "twin_households": pop.twins,
        "namesake_pairs": pop.namesakes,
        "seed": args.seed,
        "fanout_limit": fanout,
        "precision": round(ours.precision, 5),
        "recall": round(ours.recall, 5),
        "f1": round(ours.f1, 5),
        "baseline_precision": round(base.precision, 5),
        "baseline_recall": round(base.recall, 5),
        "baseline_f1": round(base.f1, 5),
        "true_pairs": ours.true_pairs,
        "predicted_pairs": ours.predicted_pairs,
        "correct_pairs": ours.correct_pairs,
        "detached_records": rep.detached,
        "missed_pairs": rep.missed_pairs,
        "false_pairs": dict(rep.false_pairs),
        "miss_causes": dict(rep.causes),
        "miss_blockers": dict(rep.blockers),
        "detached_by_kind": dict(rep.kinds_detached.most_common()),
        "normalizer_failures": dict(norm["failed"].most_common()),
        "goal_precision": GOAL_PRECISION,
        "goal_recall": GOAL_RECALL,
        "goal_met": goal,
        "resolve_seconds": round(resolve_s, 3),
        "seconds": round(elapsed, 2),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=2000, help="People in the labelled set.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of people and variations.")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    console = Console() if sys.stdout.isatty() else Console(width=150)
    settings = load_settings()
    secret = settings.hash_key.get_secret_value().encode()
    pop, records = build(args.people, args.seed)
    buyers = [r.buyer for r in records]
    predicted, saturated, resolve_s = asyncio.run(resolve(settings, buyers, secret))
    truth = [r.truth for r in records]
    ours = score(predicted, truth)
    base = score(exact_match_baseline(buyers), truth)
    rep = analyse(records, predicted, pop, saturated, secret)
    norm = normalization_failures(records)
    out = report(
        console,
        args,
        pop,
        records,
        ours,
        base,
        rep,
        norm,
        time.perf_counter() - started,
        resolve_s,
        settings.identity_fanout_limit,
    )
    out["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(out, ensure_ascii=False))
    return out


if __name__ == "__main__":
    main()
