"""XLSX download of a history report (openpyxl): one sheet per section,
rates as numbers formatted ``0.0%`` so that Excel can sum and chart them."""
from __future__ import annotations

import io
import re

from .reports import Report, table_cells

_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def sheet_title(title: str, used: set[str]) -> str:
    base = _BAD_SHEET_CHARS.sub(" ", title).strip()[:31] or "Sheet"
    name, n = base, 2
    while name in used:
        suffix = f" ({n})"
        name = base[:31 - len(suffix)] + suffix
        n += 1
    used.add(name)
    return name


def to_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    used: set[str] = set()
    bold = Font(bold=True)
    for t in report.sections:
        ws = wb.create_sheet(sheet_title(t.title.split(" ")[0] if t.title else t.id, used))
        ws.append([report.title])
        ws["A1"].font = bold
        ws.append([t.title])
        ws.append([c.label for c in t.columns])
        for cell in ws[3]:
            cell.font = bold
        texts = table_cells(t)[1:]
        for r, text_row in zip(t.rows, texts):
            line = []
            for c, text in zip(t.columns, text_row):
                v = r.get(c.key)
                unit = r.get("unit") if (t.id == "order_figures" and c.key == "value") else c.type
                if isinstance(v, bool) or v is None:
                    line.append(text or None)
                elif unit in ("int", "count") and isinstance(v, (int, float)):
                    line.append(int(v))
                elif unit in ("pct", "num") and isinstance(v, (int, float)):
                    line.append(float(v))
                else:
                    line.append(text)  # strings as text (formula-looking ones quoted)
            ws.append(line)
            row = ws.max_row
            for i, c in enumerate(t.columns, start=1):
                unit = r.get("unit") if (t.id == "order_figures" and c.key == "value") else c.type
                if unit == "pct":
                    ws.cell(row, i).number_format = "0.0%"
                elif unit == "num":
                    ws.cell(row, i).number_format = "0.0"
        if t.note:
            ws.append([])
            ws.append([t.note])
        for i, c in enumerate(t.columns, start=1):
            ws.column_dimensions[get_column_letter(i)].width = max(10, min(40, len(c.label) + 4))
        ws.freeze_panes = "A4"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


__all__ = ["sheet_title", "to_xlsx"]
