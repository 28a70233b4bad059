"""History reports of the hotline (issue 6 item 3): pure rules, stdlib only.

* :class:`Period` and :func:`parse_period` — a day, month, quarter or year
  of the Asia/Shanghai calendar (fixed +08:00, as :mod:`queues.metrics`),
  its bounds and its breakdown buckets (day → hours, month → days,
  quarter and year → months);
* the figures of each section, computed from counts and sums that
  :mod:`queues.report_repo` aggregates in SQL (the call figures through
  :class:`queues.model.Tally` and :mod:`queues.metrics`, the same formulas
  as the wallboard);
* :func:`area_rows` — complaints by transformer area with the "2+
  complaints in the period" and "complaints two months running" (连续两月)
  flags;
* :class:`Report` / :class:`Table` — what the page, the CSV and the XLSX
  show, and :func:`to_csv` (UTF-8 with BOM, so that Excel in China opens
  it as UTF-8).

Every formula is written out in ``docs/metrics.md`` ("History reports").
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from . import metrics as m
from .model import Tally

KINDS = ("day", "month", "quarter", "year")
KIND_LABELS = {"day": "日报 Daily", "month": "月报 Monthly", "quarter": "季报 Quarterly", "year": "年报 Yearly"}

# a complaint is a repeat when the same customer had another valid complaint
# accepted within this many days before it
REPEAT_WINDOW_DAYS = 30
# areas with at least this many valid complaints in the period are flagged
AREA_FLAG_MIN = 2
# calls "from" 1..6 digits are agents' extensions and feature codes
# (internal calls): not counted as incoming hotline calls
INTERNAL_CALLER_PATTERN = r"^[0-9]{1,6}$"


class PeriodError(ValueError):
    pass


# ------------------------------------------------------------------ periods
@dataclass(frozen=True)
class Bucket:
    key: str  # "2026-03-01", "2026-03", "08"
    label: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Period:
    kind: str
    key: str  # 2026-03-15 | 2026-03 | 2026-Q1 | 2026
    first: date  # first day (Beijing calendar)
    after: date  # first day after the period

    @property
    def start(self) -> datetime:
        return _at(self.first)

    @property
    def end(self) -> datetime:
        return _at(self.after)

    @property
    def label(self) -> str:
        y = self.first.year
        if self.kind == "day":
            return f"{y}年{self.first.month}月{self.first.day}日"
        if self.kind == "month":
            return f"{y}年{self.first.month}月"
        if self.kind == "quarter":
            return f"{y}年第{(self.first.month - 1) // 3 + 1}季度"
        return f"{y}年"

    def months(self) -> list[tuple[int, int]]:
        """Calendar months that overlap the period, in order."""
        out = []
        y, mo = self.first.year, self.first.month
        while date(y, mo, 1) < self.after:
            out.append((y, mo))
            y, mo = _next_month(y, mo)
        return out

    def buckets(self) -> list[Bucket]:
        """The breakdown rows: hours of a day, days of a month, months of a
        quarter or a year."""
        if self.kind == "day":
            s = self.start
            return [Bucket(f"{h:02d}", f"{h:02d}:00–{h + 1:02d}:00", s + timedelta(hours=h),
                           s + timedelta(hours=h + 1)) for h in range(24)]
        if self.kind == "month":
            out = []
            d = self.first
            while d < self.after:
                out.append(Bucket(d.isoformat(), f"{d.month}月{d.day}日", _at(d), _at(d + timedelta(days=1))))
                d += timedelta(days=1)
            return out
        out = []
        for y, mo in self.months():
            ny, nm = _next_month(y, mo)
            out.append(Bucket(f"{y}-{mo:02d}", f"{y}年{mo}月", _at(date(y, mo, 1)), _at(date(ny, nm, 1))))
        return out


def _at(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=m.SHANGHAI)


def _next_month(y: int, mo: int) -> tuple[int, int]:
    return (y + 1, 1) if mo == 12 else (y, mo + 1)


def prev_month(y: int, mo: int) -> tuple[int, int]:
    return (y - 1, 12) if mo == 1 else (y, mo - 1)


def month_start(y: int, mo: int) -> datetime:
    """00:00 Beijing time on the first of the month."""
    return _at(date(y, mo, 1))


_PATTERNS = {
    "day": re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"),
    "month": re.compile(r"^(\d{4})-(\d{1,2})$"),
    "quarter": re.compile(r"^(\d{4})-?[Qq]([1-4])$"),
    "year": re.compile(r"^(\d{4})$"),
}


def parse_period(kind: str, value: str) -> Period:
    """``("month", "2026-03")`` → March 2026, Beijing time.  Raises
    :class:`PeriodError` with a bilingual message."""
    if kind not in KINDS:
        raise PeriodError("报表类型须为 day / month / quarter / year / kind must be day, month, quarter or year")
    mt = _PATTERNS[kind].match((value or "").strip())
    if not mt:
        example = {"day": "2026-03-15", "month": "2026-03", "quarter": "2026-Q1", "year": "2026"}[kind]
        raise PeriodError(f"时段格式错误,例如 {example} / bad period, e.g. {example}")
    y = int(mt.group(1))
    if not 2000 <= y <= 2100:
        raise PeriodError("年份须在 2000–2100 之间 / year must be 2000..2100")
    try:
        if kind == "day":
            first = date(y, int(mt.group(2)), int(mt.group(3)))
            return Period(kind, first.isoformat(), first, first + timedelta(days=1))
        if kind == "month":
            mo = int(mt.group(2))
            first = date(y, mo, 1)
            return Period(kind, f"{y}-{mo:02d}", first, date(*_next_month(y, mo), 1))
    except ValueError:
        raise PeriodError("时段不存在 / no such date or month") from None
    if kind == "quarter":
        q = int(mt.group(2))
        first = date(y, 3 * q - 2, 1)
        after = date(y + 1, 1, 1) if q == 4 else date(y, 3 * q + 1, 1)
        return Period(kind, f"{y}-Q{q}", first, after)
    return Period(kind, str(y), date(y, 1, 1), date(y + 1, 1, 1))


def current_period(kind: str, today: date) -> Period:
    if kind == "day":
        return parse_period(kind, today.isoformat())
    if kind == "month":
        return parse_period(kind, f"{today.year}-{today.month:02d}")
    if kind == "quarter":
        return parse_period(kind, f"{today.year}-Q{(today.month - 1) // 3 + 1}")
    return parse_period(kind, str(today.year))


# ------------------------------------------------------------------ tables
@dataclass(frozen=True)
class Column:
    key: str
    label: str
    type: str = "text"  # text | int | pct | num


@dataclass
class Table:
    id: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "note": self.note,
                "columns": [{"key": c.key, "label": c.label, "type": c.type} for c in self.columns],
                "rows": self.rows}


@dataclass
class Report:
    period: Period
    generated_at: datetime
    sections: list[Table]

    @property
    def title(self) -> str:
        return f"966022 热线{KIND_LABELS[self.period.kind].split()[0]} {self.period.label}"

    def section(self, id: str) -> Table:
        return next(t for t in self.sections if t.id == id)

    def to_dict(self) -> dict[str, Any]:
        p = self.period
        return {"kind": p.kind, "period": p.key, "label": p.label, "title": self.title,
                "start": p.start.isoformat(), "end": p.end.isoformat(),
                "generated_at": self.generated_at.isoformat(),
                "sections": [t.to_dict() for t in self.sections]}

    def filename(self, ext: str) -> str:
        return f"hotline-report-{self.period.kind}-{self.period.key}.{ext}"


# ------------------------------------------------------------------ calls
@dataclass(frozen=True)
class IvrCounts:
    """Calls that started in a bucket, from the ``calls`` table (see
    :func:`queues.report_repo.ivr_counts`)."""

    incoming: int = 0  # 呼入总量: external calls that reached the hotline
    self_service: int = 0  # 自助服务: ended in the IVR, no queue, no callback request
    ivr_callbacks: int = 0  # IVR 回拨登记: ended in the IVR after a menu choice (surge callback)

    def __add__(self, o: "IvrCounts") -> "IvrCounts":
        return IvrCounts(self.incoming + o.incoming, self.self_service + o.self_service,
                         self.ivr_callbacks + o.ivr_callbacks)


CALL_COLUMNS = [
    Column("incoming", "呼入总量 Incoming", "int"),
    Column("self_service", "自助服务 Self-service", "int"),
    Column("ivr_callbacks", "IVR回拨登记 Callback requests", "int"),
    Column("offered", "转人工 Offered to agents", "int"),
    Column("answered", "人工接通 Answered", "int"),
    Column("answer_rate", "人工接通率 Answer rate", "pct"),
    Column("abandoned", "放弃 Abandoned", "int"),
    Column("abandon_rate", "放弃率 Abandon rate", "pct"),
    Column("exited", "其他离队 Other exits", "int"),
    Column("service_level", "服务水平 Service level", "pct"),
    Column("avg_wait_s", "平均等待(秒) Avg wait s", "num"),
    Column("asa_s", "平均应答(秒) ASA s", "num"),
]


def call_row(label: str, tally: Tally, ivr: IvrCounts | None, **extra: Any) -> dict[str, Any]:
    f = tally.figures()
    row = {"label": label, **extra,
           "offered": tally.offered, "answered": tally.answered, "abandoned": tally.abandoned,
           "exited": tally.exited, "answer_rate": f["answer_rate"], "abandon_rate": f["abandon_rate"],
           "service_level": f["service_level"], "avg_wait_s": f["avg_wait_s"], "asa_s": f["asa_s"]}
    if ivr is not None:
        row.update(incoming=ivr.incoming, self_service=ivr.self_service, ivr_callbacks=ivr.ivr_callbacks)
    else:
        row.update(incoming=None, self_service=None, ivr_callbacks=None)
    return row


def calls_tables(period: Period, per_bucket: Sequence[tuple[Bucket, Mapping[str, Tally], IvrCounts]],
                 threshold_s: float) -> list[Table]:
    """话务总览 (one row per bucket + the total) and 分队列 (per queue)."""
    rows = []
    total_tally, total_ivr = Tally(), IvrCounts()
    by_queue: dict[str, Tally] = {}
    for b, tallies, ivr in per_bucket:
        t = Tally()
        for q, qt in tallies.items():
            t = t + qt
            by_queue[q] = by_queue.get(q, Tally()) + qt
        total_tally, total_ivr = total_tally + t, total_ivr + ivr
        rows.append(call_row(b.label, t, ivr, _row=b.key))
    rows.append(call_row("合计 Total", total_tally, total_ivr, _row="total"))
    summary = Table("calls", "话务总览 Calls", [Column("label", "时段 Period")] + CALL_COLUMNS, rows,
                    note=f"服务水平阈值 {threshold_s:g} 秒 / service-level threshold {threshold_s:g} s")
    qcols = [Column("label", "队列 Queue")] + [c for c in CALL_COLUMNS if c.key not in
                                                 ("incoming", "self_service", "ivr_callbacks")]
    qrows = [call_row(q, by_queue[q], None, _row=q) for q in sorted(by_queue)]
    for r in qrows:
        for k in ("incoming", "self_service", "ivr_callbacks"):
            r.pop(k)
    return [summary, Table("calls_by_queue", "分队列话务 Calls by queue", qcols, qrows)]


# ------------------------------------------------------------------ work orders
def rate(num: int, den: int) -> float | None:
    return None if den <= 0 else num / den


@dataclass(frozen=True)
class OrderCounts:
    """Orders accepted in the period (not drafts, not cancelled) and their
    callback tasks, as counted by :func:`queues.report_repo.order_counts`."""

    accepted: int = 0
    processed: int = 0  # status feedback / callback / closed
    dispatched: int = 0  # ever dispatched to a department
    fed_back: int = 0  # dispatched and now fed back (feedback / callback / closed)
    callbacks_done: int = 0  # callback tasks done
    callbacks_overdue: int = 0  # callback tasks still pending after their due time
    callbacks_pending: int = 0  # pending, not yet due (left out)
    satisfied: int = 0  # done callback tasks with result satisfied


@dataclass(frozen=True)
class ArrivalFigures:
    counted: int = 0
    on_time: int = 0
    late: int = 0
    pending: int = 0
    rate: float | None = None
    average_minutes: float | None = None


FIGURE_COLUMNS = [Column("label", "指标 Figure"), Column("value", "数值 Value", "num"),
                  Column("numerator", "分子 Numerator", "int"), Column("denominator", "分母 Denominator", "int"),
                  Column("formula", "口径 Formula")]


def _fig(id: str, label: str, num: int | None, den: int | None, value: float | None, formula: str,
         unit: str = "pct") -> dict[str, Any]:
    return {"_row": id, "label": label, "numerator": num, "denominator": den, "value": value,
            "unit": unit, "formula": formula}


def order_figures(c: OrderCounts, arrival: ArrivalFigures, repeat_count: int, valid_complaints: int) -> Table:
    rows = [
        _fig("accepted", "受理工单 Orders accepted", c.accepted, None, c.accepted,
             "本期受理(不含草稿、撤销) accepted in the period", "count"),
        _fig("processing_rate", "处理率 Processing rate", c.processed, c.accepted, rate(c.processed, c.accepted),
             "已反馈/已回访/已归档 ÷ 受理 processed ÷ accepted"),
        _fig("feedback_rate", "反馈率 Feedback rate", c.fed_back, c.dispatched, rate(c.fed_back, c.dispatched),
             "派发后已反馈 ÷ 已派发 fed back ÷ dispatched"),
        _fig("callback_rate", "回访率 Callback rate", c.callbacks_done, c.callbacks_done + c.callbacks_overdue,
             rate(c.callbacks_done, c.callbacks_done + c.callbacks_overdue),
             "已回访 ÷ (已回访 + 逾期未回访);未到期的不计 done ÷ (done + overdue); not yet due left out"),
        _fig("satisfaction_rate", "满意率 Satisfaction rate", c.satisfied, c.callbacks_done,
             rate(c.satisfied, c.callbacks_done), "回访满意 ÷ 已回访 satisfied ÷ callbacks done"),
        _fig("arrival_rate", "到达现场及时率 On-time arrival", arrival.on_time, arrival.counted, arrival.rate,
             "按时到达 ÷ (按时 + 超时或逾期未到) on time ÷ (on time + late)"),
        _fig("arrival_minutes", "平均到达时长(分钟) Avg arrival min", None, None, arrival.average_minutes,
             "受理 → 到达现场 accepted → crew on site, arrivals reported", "num"),
        _fig("valid_complaints", "有效投诉 Valid complaints", valid_complaints, None, valid_complaints,
             "投诉且申诉未成立 complaint, appeal not upheld", "count"),
        _fig("repeat_complaints", "重复投诉 Repeat complaints", repeat_count, valid_complaints,
             rate(repeat_count, valid_complaints),
             f"同一客户{REPEAT_WINDOW_DAYS}天内再次有效投诉 same customer again within {REPEAT_WINDOW_DAYS} days"),
    ]
    return Table("order_figures", "工单指标 Work-order figures", FIGURE_COLUMNS, rows,
                 note="按本期受理的工单统计,状态以生成报表时为准 / orders accepted in the period, "
                      "status as of when the report is run")


def overdue_rows(rows: Iterable[Mapping[str, Any]]) -> Table:
    out = []
    for r in rows:
        due, overdue = int(r["due"]), int(r["overdue"])
        out.append({"_row": r["department"] or "-", "department": r["department"] or "未派发 Not dispatched",
                    "due": due, "overdue": overdue, "overdue_orders": int(r["overdue_orders"]),
                    "overdue_rate": rate(overdue, due)})
    out.sort(key=lambda r: (-r["overdue"], r["department"]))
    return Table("overdue", "超期工单(按部门) Overdue by department", [
        Column("department", "部门 Department"), Column("due", "本期到期时限 Deadlines due", "int"),
        Column("overdue", "超期时限 Overdue", "int"), Column("overdue_orders", "超期工单 Overdue orders", "int"),
        Column("overdue_rate", "超期率 Overdue rate", "pct")], out,
        note="到场、部门答复、抢修反馈时限;超期 = 已超时或超时后才完成 / arrival, department reply and repair "
             "feedback deadlines due in the period; overdue = breached, or met after the due time")


# ------------------------------------------------------------------ complaints
def consecutive_months(months_with_complaints: set[tuple[int, int]], period: Period) -> bool:
    """连续两月: complaints in two consecutive calendar months, the later of
    which overlaps the period (the earlier may be the month before it)."""
    return any(ym in months_with_complaints and prev_month(*ym) in months_with_complaints
               for ym in period.months())


def area_rows(period: Period, in_period: Mapping[str, int],
              month_counts: Mapping[str, Mapping[tuple[int, int], int]],
              names: Mapping[str, str] | None = None) -> Table:
    """Transformer areas with a valid complaint in the period.  ``in_period``:
    area → valid complaints in the period; ``month_counts``: area → (year,
    month) → valid complaints, for the month before the period and the
    months overlapping it (counted up to the period's end)."""
    names = names or {}
    rows = []
    for area, n in in_period.items():
        if n <= 0:
            continue
        months = {ym for ym, c in month_counts.get(area, {}).items() if c > 0}
        many = n >= AREA_FLAG_MIN
        running = consecutive_months(months, period)
        flags = ([f"{AREA_FLAG_MIN}次及以上"] if many else []) + (["连续两月"] if running else [])
        rows.append({"_row": area, "area": names.get(area, area), "complaints": n,
                     "months": "、".join(f"{y}-{mo:02d}" for y, mo in sorted(months)),
                     "two_or_more": many, "two_months_running": running,
                     "flagged": many or running, "flags": " / ".join(flags)})
    rows.sort(key=lambda r: (not r["flagged"], -r["complaints"], r["area"]))
    return Table("complaint_areas", "台区投诉 Complaints by transformer area", [
        Column("area", "台区 Transformer area"), Column("complaints", "本期有效投诉 Valid complaints", "int"),
        Column("months", "有投诉的月份 Months with complaints"), Column("flags", "预警 Flags")], rows,
        note=f"本期{AREA_FLAG_MIN}次及以上,或连续两个自然月有投诉(含上月)的台区标红 / flagged: "
             f"{AREA_FLAG_MIN}+ valid complaints in the period, or complaints in two consecutive calendar months")


def orders_by_type_table(rows: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> Table:
    rows = list(rows)
    total = sum(int(r["n"]) for r in rows)
    out = [{"_row": r["order_type"] or "-", "type": labels.get(r["order_type"], r["order_type"] or "未分类 Untyped"),
            "n": int(r["n"]), "share": rate(int(r["n"]), total)} for r in rows]
    out.sort(key=lambda r: -r["n"])
    out.append({"_row": "total", "type": "合计 Total", "n": total, "share": 1.0 if total else None})
    return Table("orders_by_type", "工单按类型 Orders by type", [
        Column("type", "类型 Type"), Column("n", "工单数 Orders", "int"), Column("share", "占比 Share", "pct")], out)


def categories_table(rows: Iterable[Mapping[str, Any]], name_of) -> Table:
    out = []
    for r in rows:
        codes = [r["category_l1"], r["category_l2"], r["category_l3"]]
        names = [name_of(c) if c else "" for c in codes]
        out.append({"_row": "/".join(codes), "l1": names[0] or "未分类 Unclassified", "l2": names[1],
                    "l3": names[2], "total": int(r["total"]), "valid": int(r["valid"])})
    out.sort(key=lambda r: (-r["total"], r["_row"]))
    return Table("complaint_categories", "投诉按分类 Complaints by category", [
        Column("l1", "一级 Level 1"), Column("l2", "二级 Level 2"), Column("l3", "三级 Level 3"),
        Column("total", "投诉 Complaints", "int"), Column("valid", "有效 Valid", "int")], out)


def repeat_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    out = [{"_row": str(r["who"]), "who": r["who_label"], "area": r["area"] or "",
            "repeats": int(r["repeats"]), "orders": " ".join(r["orders"])} for r in rows]
    out.sort(key=lambda r: (-r["repeats"], r["who"]))
    return Table("repeat_complaints", "重复投诉 Repeat complaints", [
        Column("who", "客户 Customer"), Column("area", "台区 Area"), Column("repeats", "重复次数 Repeats", "int"),
        Column("orders", "工单号 Orders")], out,
        note=f"同一客户(户号,无户号时按联系电话){REPEAT_WINDOW_DAYS}天内再次有效投诉 / the same customer "
             f"(account, else phone) complained again within {REPEAT_WINDOW_DAYS} days")


# ------------------------------------------------------------------ CSV
def cell_text(value: Any, type_: str) -> str:
    """How a cell reads in CSV (and on the page): rates as '92.3%', None as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if type_ == "pct" and isinstance(value, (int, float)):
        return m.pct(value)
    if type_ == "num" and isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def figure_text(row: Mapping[str, Any]) -> str:
    unit = row.get("unit")
    v = row.get("value")
    if v is None:
        return ""
    if unit == "pct":
        return m.pct(v)
    if unit == "count":
        return str(int(v))
    return f"{v:.1f}"


def _safe(s: str) -> str:
    """Cells starting with = + - @ are formulas to Excel: quote them."""
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.match(s) else s


_NUMBER = re.compile(r"^-?\d+(\.\d+)?%?$")


def table_cells(t: Table) -> list[list[str]]:
    lines = [[c.label for c in t.columns]]
    for r in t.rows:
        line = []
        for c in t.columns:
            if t.id == "order_figures" and c.key == "value":
                line.append(figure_text(r))
            else:
                line.append(_safe(cell_text(r.get(c.key), c.type)))
        lines.append(line)
    return lines


def to_csv(report: Report) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([report.title])
    w.writerow([f"时段 Period: {report.period.start.isoformat()} — {report.period.end.isoformat()}",
                f"生成 Generated: {report.generated_at.isoformat(timespec='seconds')}"])
    for t in report.sections:
        w.writerow([])
        w.writerow([t.title])
        w.writerows(table_cells(t))
        if t.note:
            w.writerow([t.note])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


__all__ = ["AREA_FLAG_MIN", "ArrivalFigures", "Bucket", "Column", "IvrCounts", "KINDS", "OrderCounts", "Period",
           "PeriodError", "REPEAT_WINDOW_DAYS", "Report", "Table", "area_rows", "calls_tables", "cell_text",
           "consecutive_months", "current_period", "order_figures", "overdue_rows", "parse_period", "rate",
           "table_cells", "to_csv"]
