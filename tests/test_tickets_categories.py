"""Complaint classification: the three-level cascade as data (tickets.categories)."""
import pytest

from tickets.categories import CategoryFileError, UnknownCategory, default_categories, parse_categories

FAMILIES = ["服务投诉", "营业投诉", "停送电投诉", "供电质量投诉", "电网建设投诉"]


def test_the_shipped_file_has_five_families_17_level2_and_50_level3_categories():
    t = default_categories()
    assert [c.name for c in t.children()] == FAMILIES
    assert (t.count(1), t.count(2), t.count(3)) == (5, 17, 50)


def test_service_staff_behaviour_lists_each_staff_type():
    t = default_categories()
    names = [c.name for c in t.children("FW01")]
    for staff in ("营业厅", "热线", "抄表", "装表接电", "用电检查", "勘查", "施工", "其他"):
        assert any(staff in n for n in names), staff


@pytest.mark.parametrize("choice", ["FW0102", ["FW", "FW01", "FW0102"], ["服务投诉", "服务行为", "热线服务人员态度"],
                                    {"l1": "FW", "l2": "服务行为", "l3": "FW0102"}])
def test_a_choice_resolves_to_a_checked_three_level_path(choice):
    p = default_categories().resolve(choice)
    assert p.codes == ("FW", "FW01", "FW0102")
    assert p.label == "服务投诉 / 服务行为 / 热线服务人员态度"


@pytest.mark.parametrize("choice", ["", "FW01", "ZZ0101", ["FW", "YY01", "YY0101"], ["FW", "FW01"], 42, None,
                                    ["FW", "FW01", ""]])
def test_unknown_or_inconsistent_category_is_refused(choice):
    with pytest.raises(UnknownCategory) as ei:
        default_categories().resolve(choice)
    assert "category" in ei.value.errors


def _file(**over):
    fam = {"code": "FW", "name": "服务投诉", "sub": [{"code": "FW01", "name": "服务行为",
                                                  "items": [{"code": "FW0101", "name": "热线服务人员态度"}]}]}
    fam.update(over)
    return {"family": [fam]}


@pytest.mark.parametrize("data", [
    {},
    _file(sub=[]),
    _file(sub=[{"code": "FW01", "name": "x", "items": []}]),
    _file(sub=[{"code": "YY01", "name": "x", "items": [{"code": "YY0101", "name": "y"}]}]),  # wrong prefix
    _file(sub=[{"code": "FW01", "name": "x", "items": [{"code": "FW0101", "name": "a"},
                                                       {"code": "FW0101", "name": "b"}]}]),  # duplicate
    _file(name=""),
])
def test_a_malformed_category_file_is_rejected(data):
    with pytest.raises(CategoryFileError):
        parse_categories(data)


def test_the_tree_for_the_form_is_nested():
    tree = default_categories().to_json()
    assert tree[0]["code"] == "FW" and tree[0]["children"][0]["children"][0]["level"] == 3
