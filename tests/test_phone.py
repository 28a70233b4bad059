"""Caller numbers as they arrive on an Asterisk trunk -> one canonical form."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti.phone import NormalisedPhone, lookup_keys, normalise_phone

ZHANG_SAN = NormalisedPhone("13800138000", "+8613800138000", "mobile")
LANDLINE = NormalisedPhone("07735551234", "+867735551234", "landline")


@pytest.mark.parametrize("raw", [
    "+8613800138000", "008613800138000", "013800138000", "13800138000",
    "+86 138 0013 8000", "0086-138-0013-8000", " 13800138000 ", "138-0013-8000",
])
def test_plus86_and_0086_and_trunk_zero_give_the_same_mobile(raw):
    assert normalise_phone(raw) == ZHANG_SAN


def test_country_code_without_plus_is_stripped_as_sip_trunks_send_it():
    assert normalise_phone("8613800138000") == ZHANG_SAN
    assert normalise_phone("867735551234") == LANDLINE


@pytest.mark.parametrize("raw", [
    "0773-5551234", "(0773) 555 1234", "+86 773 5551234", "0086-773-5551234",
    "07735551234", "+867735551234", "0773 555 1234", "0773.555.1234",
])
def test_landline_keeps_trunk_zero_and_area_code(raw):
    assert normalise_phone(raw) == LANDLINE


def test_beijing_two_digit_area_code_and_eight_digit_subscriber():
    assert normalise_phone("010-12345678") == NormalisedPhone("01012345678", "+861012345678", "landline")
    assert normalise_phone("0755-12345678").national == "075512345678"


def test_ten_digit_number_without_trunk_zero_is_area_code_plus_subscriber():
    # subscriber numbers have at most 8 digits, so 10 digits that are not a
    # mobile can only be area code + subscriber with the 0 stripped
    assert normalise_phone("7735551234") == LANDLINE
    assert normalise_phone("1012345678").national == "01012345678"


def test_local_landline_without_area_code_is_kind_other_with_its_digits():
    n = normalise_phone("555 1234")
    assert n == NormalisedPhone("5551234", None, "other")
    assert normalise_phone("55512345").national == "55512345"


def test_mobile_range_newer_than_metadata_is_still_a_mobile():
    n = normalise_phone("19999999999")
    assert n is not None and n.kind == "mobile" and n.national == "19999999999"


def test_service_numbers_400_are_other():
    n = normalise_phone("400-123-4567")
    assert n is not None and n.kind == "other" and n.national == "4001234567"


def test_foreign_number_is_other_in_international_dialling_form():
    n = normalise_phone("+1 202-555-0123")
    assert n == NormalisedPhone("0012025550123", "+12025550123", "other")
    assert normalise_phone("0012025550123") == n


@pytest.mark.parametrize("raw", [
    None, "", "   ", "<unknown>", "anonymous", "Anonymous", "unknown", "Restricted",
    "asterisk", "sip:13800138000@trunk", "13800138000;ext=1", "1380013800O",
    "１３８００１３８０００",                     # full-width digits
    "١٣٨٠٠١٣٨٠٠٠",                            # Arabic-Indic digits
    "<script>alert(1)</script>", "13800138000<b>", "\"13800138000\" <13800138000>",
    "1" * 200, "+" + "8" * 60, "x" * 200, "110", "95598", "12345", "*86", "#",
    "+", "00", "0", "-- --", "12345678901", "+86", "0086", "13800138000\x00",
    "138 0013 8000 139 0013 9000",            # two numbers in one field
])
def test_hostile_caller_ids_give_none(raw):
    assert normalise_phone(raw) is None
    assert lookup_keys(raw) == []


def test_non_string_input_gives_none():
    assert normalise_phone(13800138000) is None  # type: ignore[arg-type]
    assert normalise_phone(b"13800138000") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [
    "+8613800138000", "0773-5551234", "5551234", "4001234567", "+12025550123", "19999999999",
])
def test_canonical_form_is_a_fixed_point(raw):
    n = normalise_phone(raw)
    assert n is not None
    assert normalise_phone(n.national) == n
    if n.e164:
        assert normalise_phone(n.e164) == n


def test_lookup_keys_of_a_mobile_is_its_national_form():
    assert lookup_keys("+8613800138000") == ["13800138000"]
    assert lookup_keys("013800138000") == ["13800138000"]


def test_lookup_keys_bridges_missing_area_code_only_for_the_utilitys_own_area():
    assert lookup_keys("0773-5551234") == ["07735551234"]
    assert lookup_keys("0773-5551234", area_code="0773") == ["07735551234", "5551234"]
    assert lookup_keys("0771-5551234", area_code="0773") == ["07715551234"]
    assert lookup_keys("5551234", area_code="0773") == ["5551234", "07735551234"]
    assert lookup_keys("5551234", area_code="773") == ["5551234", "07735551234"]
    assert lookup_keys("5551234") == ["5551234"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.none(),
    st.text(max_size=250),
    st.text(alphabet="0123456789+-() .#*<>", max_size=40),
    st.from_regex(r"\A(\+|00)?(86)?0?1[3-9][0-9]{9}\Z"),
))
def test_nothing_raises_and_results_are_canonical(raw):
    n = normalise_phone(raw)
    keys = lookup_keys(raw, area_code="0773")
    if n is None:
        assert keys == []
        return
    assert n.kind in ("mobile", "landline", "other")
    assert n.national.isascii() and n.national.isdigit()
    assert keys[0] == n.national
    assert normalise_phone(n.national) == n
    if n.kind == "mobile":
        assert len(n.national) == 11 and n.e164 == "+86" + n.national
    if n.kind == "landline":
        assert n.national.startswith("0") and n.e164 == "+86" + n.national[1:]
