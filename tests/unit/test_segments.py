"""Merchant audience segments, the pure part: age bands at their birthdays, what an event says
of its person, query parsing with every problem listed, selection over rows, the minimum of
50 with rounding, the differencing audit, JST days."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.segments import (
    AGE_BANDS,
    ROW,
    Query,
    QueryError,
    age_band,
    api_key_hash,
    as_bits,
    gender_code,
    isolates,
    jst_day,
    parse_query,
    parse_rows,
    person_attributes,
    select,
    shown_count,
)


def band(birth: str | None, on: date) -> str:
    return AGE_BANDS[age_band(birth, on)]


def test_age_bands_change_on_the_birthday():
    assert band("2011-06-01", date(2026, 5, 31)) == "0-14"
    assert band("2011-06-01", date(2026, 6, 1)) == "15-19"
    assert band("1996-06-01", date(2026, 5, 31)) == "25-29"
    assert band("1996-06-01", date(2026, 6, 1)) == "30-34"
    assert band("1976-06-01", date(2026, 5, 31)) == "45-49"
    assert band("1976-06-01", date(2026, 6, 1)) == "50+"
    assert band("昭和60年4月1日", date(2026, 11, 30)) == "40-44"  # typed the Japanese way
    assert band(None, date(2026, 1, 1)) == band("not a date", date(2026, 1, 1)) == "unknown"
    assert band("2030-01-01", date(2026, 1, 1)) == "unknown"  # born in the future: a typo


def test_an_event_says_only_what_it_knows_of_its_person():
    on = date(2026, 11, 30)
    assert person_attributes("1990-01-01", "FEMALE", "13", on) == "6,1,13"  # 36: 35-39
    assert person_attributes(None, "MALE", None, on) == "0,2,0"
    assert person_attributes(None, None, None, on) == ""  # nothing said: nothing changes
    assert gender_code("female") == 0  # only the schema's symbols; never guessed


def test_a_query_parses_names_codes_and_short_prefecture_names():
    query = parse_query(
        {
            "age_bands": ["20-24", "25-29"],
            "genders": ["female"],
            "prefectures": ["東京都", "神奈川", 27, "01"],
            "within_days": 30,
            "min_purchases": 2,
            "amount_bands": ["10000-49999"],
            "merchant_id": "m1",
        }
    )
    assert query == Query((3, 4), (1,), (13, 14, 27, 1), 30, 2, None, (3,))
    assert parse_query({}) == Query()


def test_a_bad_query_lists_every_problem():
    with pytest.raises(QueryError) as caught:
        parse_query(
            {
                "age_bands": ["16-19"],
                "genders": "female",
                "prefectures": ["Tokio", True],
                "within_days": 0,
                "min_purchases": 5,
                "max_purchases": 2,
                "colour": ["red"],
            }
        )
    problems = caught.value.problems
    assert len(problems) == 7, problems
    assert any(p.startswith("age_bands: unknown value '16-19'") for p in problems)
    assert any(p.startswith("genders: expected a list") for p in problems)
    assert any("Tokio" in p and "東京都" in p for p in problems)
    assert any(p.startswith("within_days:") for p in problems)
    assert any("below min_purchases" in p for p in problems)
    assert any(p.startswith("colour: unknown filter") for p in problems)
    with pytest.raises(QueryError, match="JSON object"):
        parse_query(["age_bands"])


def rows_of(*records: tuple[int, int, int, int, int, int, int]) -> np.ndarray:
    raw = b"".join(np.array([r], dtype=ROW).tobytes() for r in records)
    return parse_rows(raw)


def test_select_applies_every_filter_and_skips_merged_rows():
    today = 20_000
    rows = rows_of(
        # last day, purchases, yen, age band, gender, prefecture, live
        (today, 1, 800, 3, 1, 13, 1),  # 0: today, one cheap purchase
        (today - 29, 3, 12_000, 3, 2, 13, 1),  # 1: 29 days ago
        (today - 30, 5, 60_000, 5, 1, 27, 1),  # 2: 30 days ago: outside "within 30"
        (today, 9, 9_000, 3, 1, 13, 0),  # 3: merged away
    )
    assert select(rows, Query(), today).tolist() == [True, True, True, False]
    assert select(rows, Query(within_days=30), today).tolist() == [True, True, False, False]
    assert select(rows, Query(within_days=1), today).tolist() == [True, False, False, False]
    assert select(rows, Query(genders=(1,)), today).tolist() == [True, False, True, False]
    assert select(rows, Query(prefectures=(27,)), today).tolist() == [False, False, True, False]
    assert select(rows, Query(min_purchases=3), today).tolist() == [False, True, True, False]
    assert select(rows, Query(max_purchases=3), today).tolist() == [True, True, False, False]
    assert select(rows, Query(amount_bands=(0, 4)), today).tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert select(rows, Query(age_bands=(3,), genders=(2,)), today).tolist() == [
        False,
        True,
        False,
        False,
    ]


def test_fewer_than_50_is_never_shown_and_counts_are_rounded_down():
    assert shown_count(0) is None and shown_count(49) is None
    assert shown_count(50) == 50 and shown_count(59) == 50 and shown_count(1_234) == 1_230


def test_the_audit_refuses_answers_that_single_out_1_to_49_people():
    everyone = np.ones(200, dtype=bool)
    tokyo = np.zeros(200, dtype=bool)
    tokyo[:190] = True
    half = np.zeros(200, dtype=bool)
    half[:100] = True
    assert isolates(as_bits(tokyo), [as_bits(everyone)])  # 10 outside Tokyo
    assert not isolates(as_bits(half), [as_bits(everyone)])  # 100 apart: a crowd
    assert not isolates(as_bits(everyone), [as_bits(everyone)])  # the same answer again
    grown = np.ones(230, dtype=bool)  # 30 customers more since `everyone` was answered
    assert isolates(as_bits(grown), [as_bits(everyone)])


@given(st.lists(st.booleans(), min_size=1, max_size=300), st.integers(0, 300))
def test_the_audit_agrees_with_set_arithmetic(a: list[bool], shift: int):
    first = np.array(a, dtype=bool)
    second = np.roll(first, shift % len(a))
    left = {i for i, v in enumerate(first) if v}
    right = {i for i, v in enumerate(second) if v}
    expected = any(0 < len(d) < 50 for d in (left - right, right - left))
    assert isolates(as_bits(second), [as_bits(first)]) == expected


def test_days_are_japan_days():
    before = datetime(2026, 11, 30, 14, 59, 59, tzinfo=UTC)  # 23:59:59 JST
    after = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)  # 00:00 JST, 1 December
    ms = [int(m.timestamp() * 1000) for m in (before, after)]
    assert jst_day(ms[1]) - jst_day(ms[0]) == 1


def test_api_keys_are_kept_as_hashes():
    assert api_key_hash("shk_x") != "shk_x" and len(api_key_hash("shk_x")) == 64
