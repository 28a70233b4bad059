import pytest

from tickets.model import (DraftRequest, ValidationError, build_draft_fields, format_order_no,
                           order_type_for_ivr_choice, validate_completion)

CUSTOMER = {"id": 7, "account_no": "3100012345", "name": "张三", "address": "才湾镇南一村12号",
            "transformer_area": "才湾2号台区", "feeder": "10kV才湾线"}


def _req(**kw):
    base = dict(linkedid="1.0", agent="1001", queue="repair", caller_num="13800138000",
                caller_num_norm="13800138000", caller_name="张三", ivr_choice="repair")
    base.update(kw)
    return DraftRequest(**base)


def test_known_caller_draft_is_prefilled_from_the_customer_record():
    f = build_draft_fields(_req(customer=CUSTOMER))
    assert f["customer_id"] == 7
    assert f["address"] == "才湾镇南一村12号"
    assert f["transformer_area"] == "才湾2号台区"
    assert f["contact_name"] == "张三"
    assert f["order_type"] == "repair"


def test_unknown_caller_gets_the_number_and_an_empty_customer_section():
    f = build_draft_fields(_req(customer=None, caller_name=""))
    assert f["customer_id"] is None and f["customer_snapshot"] == {}
    assert f["contact_phone"] == "13800138000"
    assert f["address"] == "" and f["transformer_area"] == "" and f["contact_name"] == ""


def test_ivr_choice_maps_to_the_order_type_and_unknown_choice_to_none():
    assert order_type_for_ivr_choice("complaint") == "complaint"
    assert order_type_for_ivr_choice("enquiry") == "enquiry"
    assert order_type_for_ivr_choice("9; DROP TABLE") == ""


def test_hostile_caller_name_is_clipped_and_stripped_of_control_characters():
    f = build_draft_fields(_req(caller_name="<script>x</script>\x00\x1b" + "a" * 500))
    assert "\x00" not in f["caller_name"] and "\x1b" not in f["caller_name"]
    assert len(f["caller_name"]) == 200
    assert f["caller_name"].startswith("<script>")  # kept as text; pages render it inert


def test_order_number_format():
    from datetime import datetime
    assert format_order_no(datetime(2026, 11, 22), 42) == "GD20261122000042"


def test_saving_requires_type_phone_description_and_version():
    with pytest.raises(ValidationError) as ei:
        validate_completion({"order_type": "", "contact_phone": "", "description": " "})
    assert set(ei.value.errors) == {"order_type", "contact_phone", "description", "version"}


def test_repair_order_needs_an_address():
    with pytest.raises(ValidationError) as ei:
        validate_completion({"order_type": "repair", "contact_phone": "1", "description": "停电", "version": 1})
    assert set(ei.value.errors) == {"address"}


def test_valid_completion_is_cleaned():
    clean = validate_completion({"order_type": "enquiry", "contact_phone": " 13800138000 ",
                                 "description": "电价咨询", "version": 1, "address": None})
    assert clean["contact_phone"] == "13800138000" and clean["address"] == ""
