"""Queue KPIs, agent states and the surge switch: pure functions on
hand-computed examples (docs/metrics.md gives each formula)."""
from __future__ import annotations

from datetime import date

import pytest

from queues import metrics as m
from queues.model import (Activity, AgentState, Stint, SurgeSettings, SurgeState, Tally, add_abandoned,
                          add_answered, add_completed, add_offered, classify_member, decide_surge, parse_wrapup,
                          set_surge_mode, tally_of)
from queues.prometheus import Family, render


# ------------------------------------------------------------- formulas
def test_answer_rate_is_answered_by_an_agent_over_offered():
    # one seed reports 92 %: 92 answered of 100 offered
    assert m.answer_rate(92, 100) == pytest.approx(0.92)
    assert m.answer_rate(0, 0) is None  # no calls: no rate, not 0 %


def test_abandon_rate_is_abandoned_over_offered():
    assert m.abandon_rate(3, 12) == pytest.approx(0.25)
    assert m.abandon_rate(0, 0) is None


def test_service_level_is_answered_within_threshold_over_answered_abandoned_and_exited():
    # 10 offered: 6 answered (4 within 20 s), 3 abandoned, 1 timed out → 4 / 10
    assert m.service_level(4, 6, 3, 1) == pytest.approx(0.4)
    # a short abandon counts against the service level
    assert m.service_level(1, 1, 1) == pytest.approx(0.5)
    assert m.service_level(0, 0, 0) is None


def test_answered_after_exactly_the_threshold_is_within_service_level():
    assert m.within_threshold(20, 20) and not m.within_threshold(20.5, 20)


def test_asa_is_total_wait_of_answered_calls_over_answered():
    # waits 5 s, 15 s, 40 s → 60 / 3 = 20 s
    assert m.average_speed_of_answer(60, 3) == pytest.approx(20)
    assert m.average_speed_of_answer(0, 0) is None


def test_aht_is_talk_over_completed_plus_wrapup():
    # talks 100 s and 200 s, wrap-up 10 s → 150 + 10
    assert m.average_handle_time(300, 2, 10) == pytest.approx(160)
    assert m.average_handle_time(0, 0, 10) is None


def test_average_wait_counts_answered_and_abandoned_callers():
    # answered waited 10 + 30, abandoned waited 50 → 90 / 3
    assert m.average_wait(40, 50, 2, 1) == pytest.approx(30)


def test_longest_wait_of_callers_waiting_now():
    assert m.longest_wait([3, 71, 12]) == 71
    assert m.longest_wait([]) == 0


def test_today_is_the_asia_shanghai_day():
    # 2026-11-22 16:30 UTC is 2026-11-23 00:30 in Beijing
    ts = 1795365000.0  # 2026-11-22T16:30:00Z
    assert m.local_day(ts) == date(2026, 11, 23)
    start, end = m.day_bounds(date(2026, 11, 23))
    assert start == 1795363200.0 and end - start == 86400  # 2026-11-22T16:00:00Z


def test_tally_adds_up_to_the_hand_computed_figures():
    t = Tally()
    for _ in range(5):
        t = add_offered(t)
    t = add_answered(t, 8, 20)
    t = add_answered(t, 25, 20)
    t = add_answered(t, 12, 20)
    t = add_abandoned(t, 40)
    t = add_completed(t, 120)
    t = add_completed(t, 60)
    f = t.figures(wrapup_s=10)
    assert (f["offered"], f["answered"], f["abandoned"], f["answered_within"]) == (5, 3, 1, 2)
    assert f["answer_rate"] == pytest.approx(3 / 5)
    assert f["abandon_rate"] == pytest.approx(1 / 5)
    assert f["service_level"] == pytest.approx(2 / 4)  # one caller still waiting is not counted
    assert f["asa_s"] == pytest.approx(15)
    assert f["aht_s"] == pytest.approx(100)
    assert f["avg_wait_s"] == pytest.approx((45 + 40) / 4)


def test_tally_of_call_records_is_the_same_arithmetic():
    stints = [Stint("repair", "answered", 5, 100), Stint("repair", "abandoned", 30),
              Stint("repair", "unknown"), Stint("enquiry", "answered", 21, None), Stint("enquiry", "waiting")]
    t = tally_of(stints, 20)
    assert t["repair"] == Tally(offered=3, answered=1, abandoned=1, exited=1, answered_within=1,
                                wait_answered_s=5, wait_abandoned_s=30, completed=1, talk_s=100)
    assert t["enquiry"].offered == 2 and t["enquiry"].answered_within == 0 and t["enquiry"].completed == 0


def test_parse_wrapup_reads_queue_seconds_pairs():
    assert parse_wrapup("repair=10, complaint=30") == {"repair": 10.0, "complaint": 30.0}
    with pytest.raises(ValueError):
        parse_wrapup("repair")


# ---------------------------------------------------------- agent states
def _state(**kw):
    base = dict(member=True, status=1, paused=False, in_call=False, activity=None, now=100.0, wrapup_s=10)
    base.update(kw)
    return classify_member(**base)


def test_agent_states_from_member_and_activity():
    assert _state() is AgentState.AVAILABLE
    assert _state(member=False) is AgentState.LOGGED_OFF
    assert _state(status=5) is AgentState.LOGGED_OFF  # device unavailable
    assert _state(paused=True) is AgentState.PAUSED
    assert _state(status=2, activity=Activity("ringing", 99)) is AgentState.RINGING  # Local channel rings "in use"
    assert _state(status=6) is AgentState.RINGING
    assert _state(status=2, activity=Activity("on_call", 90)) is AgentState.ON_CALL
    assert _state(status=2, paused=True, activity=Activity("on_call", 90)) is AgentState.ON_CALL
    assert _state(activity=Activity("wrapup", 95)) is AgentState.WRAPUP
    assert _state(activity=Activity("wrapup", 80)) is AgentState.AVAILABLE  # wrap-up over after 10 s


def test_stale_on_call_activity_with_an_idle_device_is_not_a_call():
    # an AgentComplete lost while the AMI link was down
    assert _state(status=1, activity=Activity("on_call", 10)) is AgentState.AVAILABLE


# ------------------------------------------------------------------ surge
S = SurgeSettings(on_waiting=10, on_longest_s=120, off_waiting=3, off_longest_s=45, min_on_s=60, off_after_s=30)


def test_surge_switches_on_when_waiting_callers_cross_the_threshold():
    s = decide_surge(SurgeState(), S, 9, 100, 0)
    assert not s.active
    s = decide_surge(s, S, 10, 5, 1)
    assert s.active and s.since == 1 and "排队 10" in s.reason


def test_surge_switches_on_when_the_longest_wait_crosses_the_threshold():
    assert decide_surge(SurgeState(), S, 1, 120, 0).active


def test_surge_hysteresis_needs_calm_below_the_off_thresholds_for_a_while():
    s = decide_surge(SurgeState(), S, 12, 0, 0)
    s = decide_surge(s, S, 5, 30, 100)  # between the on and off thresholds: stays on
    assert s.active and s.calm_since is None
    s = decide_surge(s, S, 3, 45, 110)  # calm starts
    assert s.active and s.calm_since == 110
    s = decide_surge(s, S, 4, 10, 120)  # not calm any more: the clock restarts
    assert s.active and s.calm_since is None
    s = decide_surge(s, S, 2, 10, 130)
    s = decide_surge(s, S, 2, 10, 159)
    assert s.active
    s = decide_surge(s, S, 2, 10, 160)  # 30 s calm
    assert not s.active and s.since == 160


def test_surge_stays_on_for_the_minimum_time_even_when_calm():
    s = decide_surge(SurgeState(), S, 12, 0, 0)
    s = decide_surge(s, S, 0, 0, 1)
    s = decide_surge(s, S, 0, 0, 40)  # calm 39 s but on only 40 s < 60
    s = decide_surge(s, S, 0, 0, 59)
    assert s.active
    assert not decide_surge(s, S, 0, 0, 60).active


def test_supervisor_can_force_surge_off_and_on_and_return_to_auto():
    s = decide_surge(SurgeState(), S, 12, 0, 0)
    off = set_surge_mode(s, "off")
    assert not off.active and off.auto_on  # the rule still says on
    assert decide_surge(off, S, 20, 0, 5).active is False
    on = set_surge_mode(SurgeState(), "on")
    assert on.active
    assert set_surge_mode(off, "auto").active
    with pytest.raises(ValueError):
        set_surge_mode(s, "maybe")


def test_surge_settings_reject_thresholds_without_hysteresis():
    with pytest.raises(ValueError):
        SurgeSettings(on_waiting=5, off_waiting=5).check()
    with pytest.raises(ValueError):
        SurgeSettings(on_longest_s=60, off_longest_s=90).check()


# ------------------------------------------------------------- exposition
def test_prometheus_text_format_escapes_labels_and_checks_names():
    text = render([Family("x_total", "counter", "a\nb").add(3, queue='re"p\\'),
                   Family("y", "gauge", "g").add(0.5)])
    assert text == ('# HELP x_total a\\nb\n# TYPE x_total counter\nx_total{queue="re\\"p\\\\"} 3\n'
                    '# HELP y g\n# TYPE y gauge\ny 0.5\n')
    with pytest.raises(ValueError):
        render([Family("bad-name", "gauge", "")])
    with pytest.raises(ValueError):
        render([Family("calls", "counter", "")])


def test_wallboard_and_surge_settings_are_validated():
    from cti.config import ConfigError, load_config

    cfg = load_config(env={"HOTLINE_SURGE_ON_WAITING": "6", "HOTLINE_SL_THRESHOLD_S": "15"})
    assert cfg.surge_on_waiting == 6 and cfg.sl_threshold_s == 15
    for bad in ({"surge_off_waiting": 10}, {"surge_off_longest_wait_s": 200.0}, {"sl_threshold_s": 0},
                {"queue_wrapup_s": "repair=-1"}):
        with pytest.raises(ConfigError):
            load_config(env={}, **bad)


def test_wallboard_day_tallies_restart_at_beijing_midnight_not_utc_midnight():
    from datetime import datetime, timezone

    from cti.frame import Frame
    from cti.live import LiveModel
    from queues.live import QueueBoard

    def join(uid: str) -> Frame:
        return Frame((("Event", "QueueCallerJoin"), ("Queue", "repair"), ("Uniqueid", uid), ("Position", "1"),
                      ("Count", "1")))

    before_midnight = datetime(2026, 11, 22, 15, 59, 59, tzinfo=timezone.utc).timestamp()  # 23:59:59 Beijing
    board = QueueBoard(LiveModel(), clock=lambda: before_midnight)
    offered = []
    for i, ts in enumerate((before_midnight - 3600, before_midnight, before_midnight + 2,  # 00:00:01 Beijing
                            before_midnight + 3, before_midnight + 8 * 3600 + 2)):  # 08:00:01 Beijing = UTC midnight
        board.on_frame(join(f"1.{i}"), ts)
        offered.append((board.day.isoformat(), board.tallies["repair"].offered))
    assert offered == [("2026-11-22", 1), ("2026-11-22", 2), ("2026-11-23", 1), ("2026-11-23", 2),
                       ("2026-11-23", 3)]
