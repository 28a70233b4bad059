import io
import json
import logging

import structlog

from cti.logs import bind_call, clear_call, get_logger, setup_logging


def test_our_and_library_log_lines_share_one_json_shape():
    buf = io.StringIO()
    setup_logging("INFO", json=True, stream=buf)
    bind_call(uniqueid="1795374638.1", linkedid="1795374638.0", queue="repair", agent="1001")
    try:
        get_logger("hotline.test").info("call_queued", position=1)
        logging.getLogger("panoramisk.manager").warning("Connection lost")
        logging.getLogger("aiohttp.server").error("boom %s", "x")
        logging.getLogger("asyncpg.pool").warning("pool closed")
    finally:
        clear_call()
    lines = [json.loads(l) for l in buf.getvalue().splitlines()]
    assert len(lines) == 4
    for rec in lines:
        assert {"event", "level", "timestamp", "logger"} <= rec.keys()
        assert rec["linkedid"] == "1795374638.0" and rec["queue"] == "repair" and rec["agent"] == "1001"
    assert lines[0]["event"] == "call_queued" and lines[0]["position"] == 1
    assert lines[1]["logger"] == "panoramisk.manager" and lines[1]["event"] == "Connection lost"
    assert lines[2]["event"] == "boom x"


def test_chinese_text_is_logged_readably():
    buf = io.StringIO()
    setup_logging("INFO", json=True, stream=buf)
    get_logger().info("caller", name="张三")
    assert "张三" in buf.getvalue()
