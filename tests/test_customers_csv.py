"""The marketing system's customer export (pure parsing, no database)."""
from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from cti.customers import CSV_HEADER, Customer, parse_area_class, parse_customers_csv, parse_flag, split_phones

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "cti" / "data" / "demo_customers.csv"
BAD = Path(__file__).parent / "fixtures" / "customers_with_bad_rows.csv"

HEADER = ",".join(CSV_HEADER)
ZHANG = "3100012345,张三,13800138000,全州县才湾镇南一村12号,才湾2号台区,10kV才湾线,才湾村,农村,居民,否,否,否,否"
HOSPITAL = "3100020001,全州县人民医院,0773-5550120;13800138003,全州镇人民路88号,县医院专用台区,10kV城东线,城东社区,城区,非居民,是,是,是,否"


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return "\r\n".join(lines).encode(encoding) + b"\r\n"


def lines_of(issues):
    return [line for line, _ in issues]


def test_gbk_file_as_excel_saves_it_on_chinese_windows():
    result = parse_customers_csv(csv_bytes(HEADER, ZHANG, HOSPITAL, encoding="gbk"))
    assert result.errors == []
    assert result.encoding == "gb18030"
    zhang, hospital = result.customers
    assert zhang.name == "张三" and zhang.transformer_area == "才湾2号台区" and zhang.feeder == "10kV才湾线"
    assert zhang.area_class == "countryside" and zhang.phones == ("13800138000",)
    assert hospital.name == "全州县人民医院" and hospital.phones == ("07735550120", "13800138003")


def test_utf8_with_bom_header_is_recognised():
    result = parse_customers_csv(codecs.BOM_UTF8 + csv_bytes(HEADER, ZHANG))
    assert result.errors == [] and result.warnings == []
    assert result.customers[0].account_no == "3100012345"


def test_utf16_tab_separated_unicode_text_from_excel():
    data = "\r\n".join([HEADER.replace(",", "\t"), ZHANG.replace(",", "\t")]).encode("utf-16")
    result = parse_customers_csv(data)
    assert result.errors == []
    assert result.customers[0].name == "张三"


def test_english_header_aliases_and_free_column_order():
    data = csv_bytes(
        "name,account_no,phones,area_class,dedicated_transformer,high_rise",
        "Zhang San,3100012345,+86 138 0013 8000,countryside,Y,no",
    )
    result = parse_customers_csv(data)
    assert result.errors == []
    c = result.customers[0]
    assert (c.account_no, c.name, c.phones, c.area_class) == ("3100012345", "Zhang San", ("13800138000",), "countryside")
    assert c.dedicated_transformer and not c.high_rise and c.key_customer


def test_bad_rows_are_reported_with_spreadsheet_line_numbers_and_good_rows_kept():
    result = parse_customers_csv(BAD.read_bytes())
    assert [c.account_no for c in result.customers] == ["3100090001", "3100090002", "3100090004"]
    assert lines_of(result.errors) == [3, 5, 6]
    messages = dict(result.errors)
    assert "户号" in messages[3] and "account number" in messages[3]
    assert "郊区" in messages[5] and "area class" in messages[5]
    assert "第2行" in messages[6] and "duplicate" in messages[6]
    # kept, but the user is told it cannot be matched by caller number
    assert lines_of(result.warnings) == [7]
    assert result.customers[2].phones == ()


def test_line_numbers_count_a_multiline_quoted_cell_as_one_row():
    data = csv_bytes(HEADER, '3100000001,"王\n二",13800138001,,,,,农村,,,,,', ",缺户号,13800138002,,,,,农村,,,,,")
    result = parse_customers_csv(data)
    assert result.customers[0].name == "王 二"
    assert lines_of(result.errors) == [3]


def test_blank_lines_are_skipped_but_still_counted():
    data = csv_bytes(HEADER, ZHANG, "", ",,,,,,,,,,,,", ",无户号,,,,,,城区,,,,,")
    result = parse_customers_csv(data)
    assert len(result.customers) == 1
    assert lines_of(result.errors) == [5]


def test_wrong_column_count_is_a_bad_row_but_trailing_empty_cells_are_tolerated():
    data = csv_bytes(HEADER, ZHANG + ",,", "3100000002,短行,13800138002", "3100000003,多列" + ZHANG[10:] + ",extra")
    result = parse_customers_csv(data)
    assert [c.account_no for c in result.customers] == ["3100012345"]
    assert lines_of(result.errors) == [3, 4]
    assert all("列数" in m and "column count" in m for _, m in result.errors)


def test_several_phones_in_one_cell_with_any_separator():
    cell = "13800138001;13800138002、0773-5551234,13800138003 13800138004/(0773) 555 9999；１３８００１３８００５"
    phones, bad = split_phones(cell)
    assert phones == ["13800138001", "13800138002", "07735551234", "13800138003", "13800138004",
                      "07735559999", "13800138005"]
    assert bad == []
    assert split_phones("0773 5551234 13800138006 call me") == (["07735551234", "13800138006"], ["call me"])


def test_invalid_phone_is_dropped_with_a_warning_and_row_kept():
    data = csv_bytes(HEADER, '3100000004,赵六,"13800138006;call me;110",,,,,农村,,,,,')
    result = parse_customers_csv(data)
    assert result.errors == []
    assert result.customers[0].phones == ("13800138006",)
    assert lines_of(result.warnings) == [2]
    assert "'call me'" in result.warnings[0].message and "'110'" in result.warnings[0].message


def test_duplicate_phone_in_one_cell_is_kept_once():
    phones, _ = split_phones("13800138000; +8613800138000 ; 013800138000")
    assert phones == ["13800138000"]


@pytest.mark.parametrize("cell,expected", [
    ("城区", "town"), ("城镇", "town"), ("town", "town"), (" Town ", "town"),
    ("农村", "countryside"), ("countryside", "countryside"), ("rural", "countryside"),
    ("偏远山区", "remote"), ("山区", "remote"), ("remote", "remote"), ("郊区", None), ("", None),
])
def test_area_class_in_chinese_or_english(cell, expected):
    assert parse_area_class(cell) == expected


@pytest.mark.parametrize("cell,expected", [
    ("是", True), ("否", False), ("Y", True), ("n", False), ("1", True), ("0", False),
    ("true", True), ("FALSE", False), ("√", True), ("", False), ("也许", None), ("2", None),
])
def test_flags_as_the_staff_type_them(cell, expected):
    assert parse_flag(cell) == expected


def test_unreadable_flag_rejects_the_row_rather_than_losing_a_key_customer():
    data = csv_bytes(HEADER, "3100000005,医院,13800138007,,,,,城区,,大概是,,,")
    result = parse_customers_csv(data)
    assert result.customers == ()
    assert lines_of(result.errors) == [2] and "专变用户" in result.errors[0].message


def test_empty_area_class_defaults_to_town_with_a_warning():
    result = parse_customers_csv(csv_bytes(HEADER, "3100000006,钱七,13800138008,,,,,,,,,,"))
    assert result.customers[0].area_class == "town"
    assert lines_of(result.warnings) == [2]


def test_missing_required_column_rejects_the_file_at_line_one():
    result = parse_customers_csv(csv_bytes("户名,联系电话", "张三,13800138000"))
    assert result.customers == ()
    assert lines_of(result.errors) == [1] and "户号" in result.errors[0].message


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n\r\n", b"\x00\x01\x02\xff\xfe\x00"])
def test_empty_or_garbage_file_is_an_error_not_an_exception(data):
    result = parse_customers_csv(data)
    assert result.customers == () and result.errors


def test_excel_float_account_number_is_repaired_and_scientific_notation_rejected():
    data = csv_bytes(HEADER, "3100000007.0,孙八,13800138009,,,,,城区,,,,,", "3.10001E+09,周九,13800138010,,,,,城区,,,,,")
    result = parse_customers_csv(data)
    assert [c.account_no for c in result.customers] == ["3100000007"]
    assert lines_of(result.errors) == [3] and "科学计数法" in result.errors[0].message


def test_markup_and_control_characters_in_text_fields():
    data = csv_bytes(HEADER, '3100000008,<script>alert("x")</script>,13800138011,<b>地址</b>\x00,,,,城区,,,,,')
    result = parse_customers_csv(data)
    c = result.customers[0]
    assert c.name == '<script>alert("x")</script>'  # data, not HTML: kept verbatim
    assert c.address == "<b>地址</b>"                 # NUL removed (PostgreSQL refuses it)


def test_key_customer_is_any_of_the_four_flags():
    base = Customer(account_no="1", name="x")
    assert not base.key_customer
    for flag in ("dedicated_transformer", "large_customer", "sensitive", "high_rise"):
        assert Customer(account_no="1", name="x", **{flag: True}).key_customer


def test_to_dict_is_json_ready():
    c = Customer(account_no="3100012345", name="张三", area_class="countryside", phones=("13800138000",))
    d = json.loads(json.dumps(c.to_dict(), ensure_ascii=False))
    assert d["phones"] == ["13800138000"] and d["key_customer"] is False
    assert d["area_class"] == "countryside" and d["area_class_label"] == "农村"


def test_customer_refuses_an_unknown_area_class():
    with pytest.raises(ValueError):
        Customer(account_no="1", name="x", area_class="suburb")


def test_demo_file_parses_cleanly_with_the_fixed_demo_customers():
    result = parse_customers_csv(DEMO.read_bytes())
    assert result.errors == []
    assert 55 <= len(result.customers) <= 70
    by_account = {c.account_no: c for c in result.customers}
    zhang = by_account["3100012345"]
    assert (zhang.name, zhang.phones[0], zhang.transformer_area, zhang.feeder, zhang.area_class) == (
        "张三", "13800138000", "才湾2号台区", "10kV才湾线", "countryside")
    phones = {p for c in result.customers for p in c.phones}
    assert {f"138001380{i:02d}" for i in range(1, 11)} <= phones
    assert {c.area_class for c in result.customers} == {"town", "countryside", "remote"}
    assert any(c.dedicated_transformer for c in result.customers)
    assert any(c.large_customer for c in result.customers)
    assert any(c.high_rise for c in result.customers)
    assert any(c.sensitive for c in result.customers)
