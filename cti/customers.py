"""Customers (电力客户) and the marketing system's CSV export.

Pure: stdlib and :mod:`cti.phone` only.

CSV format (营销系统导出), header on line 1, one customer per line::

    户号,户名,联系电话,用电地址,台区,线路,村/街道,区域类别,客户类别,专变用户,大客户,敏感客户,高层住宅

English aliases are accepted for every column (``account_no,name,phones,
address,transformer_area,feeder,village,area_class,customer_class,
dedicated_transformer,large_customer,sensitive,high_rise``), as are a few
other headers the marketing system uses (用户编号, 客户名称, 手机号码, 台区名称,
所属线路 ...; see ``HEADER_ALIASES``).  Column order is free; only 户号 and 户名
are required columns; unknown columns are ignored with a warning.

* Encoding: UTF-8 (with or without BOM, Excel's "CSV UTF-8"), GBK/GB18030
  (Excel's plain "CSV" on a Chinese Windows), UTF-16 with BOM (Excel's
  "Unicode text", tab-separated).  Comma, tab or semicolon separated (taken
  from the header line).
* 联系电话: several numbers in one cell separated by ``; ； , ， 、 / |``,
  newlines or spaces; each is normalised (:func:`cti.phone.normalise_phone`).
  Full-width digits typed in Excel are accepted here (NFKC), unlike on a trunk.
* 区域类别: 城区/城镇/town, 农村/countryside, 偏远山区/山区/remote (empty: town,
  with a warning -- town has the strictest arrival deadline, so the error is
  on the customer's side).
* flags: 是/否, Y/N, yes/no, 1/0, true/false, √/×; empty = 否.
* Line numbers are spreadsheet rows: header = 1, first customer = 2 (a quoted
  cell spanning several physical lines is still one row).

A bad row is reported in ``errors`` and skipped; the rest of the file is kept.
A row kept with a problem (no usable phone, a dropped phone, a defaulted
value) is reported in ``warnings``.  Messages are Chinese first, English second.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .phone import normalise_phone

__all__ = [
    "AREA_CLASSES",
    "CSV_HEADER",
    "Customer",
    "CsvImportResult",
    "HEADER_ALIASES",
    "RowIssue",
    "parse_customers_csv",
    "parse_area_class",
    "parse_flag",
    "split_phones",
]

AREA_CLASSES = ("town", "countryside", "remote")
AREA_CLASS_LABELS = {"town": "城区", "countryside": "农村", "remote": "偏远山区"}

# the header as the marketing system exports it (and as the demo file uses)
CSV_HEADER = (
    "户号", "户名", "联系电话", "用电地址", "台区", "线路", "村/街道",
    "区域类别", "客户类别", "专变用户", "大客户", "敏感客户", "高层住宅",
)

MAX_FIELD_LENGTH = 500
MAX_PHONES_PER_CUSTOMER = 10


@dataclass(frozen=True, slots=True)
class Customer:
    """One row of ``customers`` plus its phones (canonical national forms)."""

    account_no: str                      # 户号
    name: str                            # 户名
    address: str = ""                    # 用电地址
    transformer_area: str = ""           # 台区
    feeder: str = ""                     # 线路
    village: str = ""                    # 村 / 街道
    area_class: str = "town"             # town / countryside / remote
    customer_class: str = "residential"  # 客户类别
    dedicated_transformer: bool = False  # 专变用户
    large_customer: bool = False         # 大客户
    sensitive: bool = False              # 敏感客户
    high_rise: bool = False              # 高层住宅
    phones: tuple[str, ...] = ()
    id: int | None = None                # None until stored

    def __post_init__(self) -> None:
        if self.area_class not in AREA_CLASSES:
            raise ValueError(f"area_class must be one of {AREA_CLASSES}, not {self.area_class!r}")
        if not self.account_no or not self.name:
            raise ValueError("account_no and name are required")
        if not isinstance(self.phones, tuple):
            object.__setattr__(self, "phones", tuple(self.phones))

    @property
    def key_customer(self) -> bool:
        """重点客户: their repair callbacks never slip (DOMAIN.md)."""
        return self.dedicated_transformer or self.large_customer or self.sensitive or self.high_rise

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (texts are returned verbatim: escaping is the renderer's job)."""
        return {
            "id": self.id,
            "account_no": self.account_no,
            "name": self.name,
            "address": self.address,
            "transformer_area": self.transformer_area,
            "feeder": self.feeder,
            "village": self.village,
            "area_class": self.area_class,
            "area_class_label": AREA_CLASS_LABELS[self.area_class],
            "customer_class": self.customer_class,
            "dedicated_transformer": self.dedicated_transformer,
            "large_customer": self.large_customer,
            "sensitive": self.sensitive,
            "high_rise": self.high_rise,
            "key_customer": self.key_customer,
            "phones": list(self.phones),
        }


class RowIssue(NamedTuple):
    """``(line, message)`` -- line as the spreadsheet shows it (header = 1)."""

    line: int
    message: str


@dataclass(frozen=True)
class CsvImportResult:
    customers: tuple[Customer, ...] = ()
    errors: list[RowIssue] = field(default_factory=list)     # rows skipped
    warnings: list[RowIssue] = field(default_factory=list)   # rows kept, with a remark
    rows_read: int = 0              # non-blank data rows
    encoding: str = ""
    # filled in by cti.customer_repo.import_customers_file
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def imported(self) -> int:
        return len(self.customers)

    def summary(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "imported": self.imported,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": [list(e) for e in self.errors],
            "warnings": [list(w) for w in self.warnings],
            "encoding": self.encoding,
        }


# -- header ------------------------------------------------------------------

HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "account_no": ("户号", "用户编号", "客户编号", "户号(用户编号)", "account_no", "account", "accountno"),
    "name": ("户名", "用户名称", "客户名称", "户主", "name", "customer_name"),
    "phones": ("联系电话", "电话", "手机", "手机号码", "联系方式", "电话号码", "phones", "phone", "tel"),
    "address": ("用电地址", "地址", "address"),
    "transformer_area": ("台区", "台区名称", "所属台区", "transformer_area"),
    "feeder": ("线路", "线路名称", "所属线路", "feeder", "line"),
    "village": ("村/街道", "村(街道)", "村街道", "村", "街道", "村委", "village"),
    "area_class": ("区域类别", "区域", "区域类型", "供电区域", "area_class", "area"),
    "customer_class": ("客户类别", "用户类别", "用电类别", "客户分类", "customer_class"),
    "dedicated_transformer": ("专变用户", "专变", "dedicated_transformer"),
    "large_customer": ("大客户", "large_customer"),
    "sensitive": ("敏感客户", "敏感用户", "sensitive"),
    "high_rise": ("高层住宅", "高层", "high_rise"),
}
REQUIRED_COLUMNS = ("account_no", "name")


def _header_key(cell: str) -> str:
    s = unicodedata.normalize("NFKC", cell).strip().lower()
    s = s.lstrip("\ufeff").replace(" ", "").replace("*", "").replace("_", "")
    return s.replace("（", "(").replace("）", ")").replace("／", "/")


_ALIAS_TO_FIELD = {_header_key(a): f for f, aliases in HEADER_ALIASES.items() for a in aliases}

# -- value parsers -------------------------------------------------------------

_AREA_WORDS = {
    "town": ("城区", "城镇", "城市", "市区", "县城", "town", "urban", "city"),
    "countryside": ("农村", "乡村", "countryside", "rural", "village"),
    "remote": ("偏远山区", "偏远", "山区", "偏远地区", "remote", "mountain", "remotemountain"),
}
_AREA_LOOKUP = {w: k for k, words in _AREA_WORDS.items() for w in words}

_TRUE = {"是", "y", "yes", "1", "true", "t", "√", "✓", "✔", "对", "有"}
_FALSE = {"否", "n", "no", "0", "false", "f", "×", "✗", "不是", "无", "", "-"}

_CUSTOMER_CLASSES = {
    "居民": "residential", "城镇居民": "residential", "乡村居民": "residential",
    "residential": "residential",
    "非居民": "commercial", "一般工商业": "commercial", "商业": "commercial",
    "commercial": "commercial",
    "大工业": "industrial", "工业": "industrial", "industrial": "industrial",
    "农业": "agricultural", "农业生产": "agricultural", "agricultural": "agricultural",
}

_PHONE_SEPARATORS = re.compile(r"[;；,，、/|\r\n]+")
_NO_PHONE = {"", "无", "-", "--", "暂无", "n/a", "na", "none", "null"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ACCOUNT = re.compile(r"[0-9A-Za-z][0-9A-Za-z\-_]{0,39}\Z", re.ASCII)


def parse_area_class(cell: str) -> str | None:
    key = unicodedata.normalize("NFKC", cell).strip().lower().replace(" ", "")
    return _AREA_LOOKUP.get(key)


def parse_flag(cell: str) -> bool | None:
    key = unicodedata.normalize("NFKC", cell).strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    return None


def split_phones(cell: str) -> tuple[list[str], list[str]]:
    """``(canonical numbers, pieces that are not numbers)`` for one cell.

    Pieces are split on strong separators first; inside a piece, space
    separated tokens are joined greedily (longest first), so both
    ``(0773) 555 1234`` and ``13800138000 13900139000`` come out right.
    """
    text = unicodedata.normalize("NFKC", cell)
    good: list[str] = []
    bad: list[str] = []
    for piece in _PHONE_SEPARATORS.split(text):
        piece = piece.strip()
        if piece.lower() in _NO_PHONE:
            continue
        tokens = piece.split()
        unmatched: list[str] = []
        i = 0
        while i < len(tokens):
            for j in range(len(tokens), i, -1):
                n = normalise_phone(" ".join(tokens[i:j]))
                if n is not None:
                    if unmatched:
                        bad.append(" ".join(unmatched))
                        unmatched = []
                    if n.national not in good:
                        good.append(n.national)
                    i = j
                    break
            else:
                unmatched.append(tokens[i])
                i += 1
        if unmatched:
            bad.append(" ".join(unmatched))
    return good, bad


def _clean_text(cell: str) -> str:
    """Control characters out (PostgreSQL text refuses NUL), whitespace trimmed.
    Markup and everything else is kept verbatim: it is data, not HTML."""
    return _CONTROL.sub("", cell).replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()


def _clean_account(cell: str) -> tuple[str | None, str | None]:
    s = unicodedata.normalize("NFKC", cell).strip().lstrip("'").strip()
    if not s:
        return None, "缺少户号 / missing account number (户号)"
    if re.fullmatch(r"[0-9]+\.0+", s):  # Excel turned it into a float
        s = s.split(".", 1)[0]
    if re.fullmatch(r"[0-9.]+[eE][+-]?[0-9]+", s):
        return None, (
            f"户号被Excel转成了科学计数法: {s!r}，请将该列设为文本后重新导出 / "
            "account number was turned into scientific notation by Excel; "
            "format the column as text and export again"
        )
    if not _ACCOUNT.match(s):
        return None, f"户号格式不正确: {_show(s)} / invalid account number"
    return s, None


def _show(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


# -- decoding ------------------------------------------------------------------

def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith(codecs.BOM_UTF16_LE) or data.startswith(codecs.BOM_UTF16_BE):
        return data.decode("utf-16", errors="replace"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        # GB18030 is a superset of GBK and GB2312: what Excel writes on a Chinese Windows
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), "utf-8 (invalid bytes replaced)"


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", "\t", ";", "，")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


# -- the parser ------------------------------------------------------------------

def parse_customers_csv(data: bytes) -> CsvImportResult:
    """Parse the marketing system's export; never raises on bad content."""
    text, encoding = _decode(data)
    errors: list[RowIssue] = []
    warnings: list[RowIssue] = []
    if not text.strip():
        errors.append(RowIssue(1, "文件为空 / the file is empty"))
        return CsvImportResult(errors=errors, encoding=encoding)

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        rows = list(reader)
    except csv.Error as exc:
        errors.append(RowIssue(reader.line_num or 1, f"CSV格式错误 / malformed CSV: {exc}"))
        return CsvImportResult(errors=errors, encoding=encoding)

    header = rows[0] if rows else []
    columns: dict[str, int] = {}
    for idx, cell in enumerate(header):
        key = _header_key(cell)
        fieldname = _ALIAS_TO_FIELD.get(key)
        if fieldname is None:
            if key:
                warnings.append(RowIssue(1, f"忽略未知列 {_show(cell.strip())} / unknown column ignored"))
            continue
        if fieldname in columns:
            errors.append(RowIssue(1, f"列重复: {_show(cell.strip())} / duplicate column for {fieldname}"))
            return CsvImportResult(errors=errors, warnings=warnings, encoding=encoding)
        columns[fieldname] = idx
    missing = [f for f in REQUIRED_COLUMNS if f not in columns]
    if missing:
        need = "、".join(HEADER_ALIASES[f][0] for f in missing)
        errors.append(RowIssue(1, f"表头缺少必需列: {need} / header lacks required column(s): {', '.join(missing)}"))
        return CsvImportResult(errors=errors, warnings=warnings, encoding=encoding)

    width = len(header)
    customers: list[Customer] = []
    seen: dict[str, int] = {}
    rows_read = 0
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line (Excel leaves some at the end)
        rows_read += 1
        if len(row) < width or any(c.strip() for c in row[width:]):
            errors.append(RowIssue(line, f"列数不对: 应为{width}列，实为{len(row)}列 / "
                                         f"wrong column count: expected {width}, got {len(row)}"))
            continue
        customer, row_errors, row_warnings = _parse_row(row, columns)
        warnings.extend(RowIssue(line, w) for w in row_warnings)
        if row_errors:
            errors.extend(RowIssue(line, e) for e in row_errors)
            continue
        assert customer is not None
        if customer.account_no in seen:
            errors.append(RowIssue(line, f"户号 {customer.account_no} 与第{seen[customer.account_no]}行重复 / "
                                         f"duplicate account number, first on line {seen[customer.account_no]}"))
            continue
        seen[customer.account_no] = line
        customers.append(customer)

    return CsvImportResult(customers=tuple(customers), errors=errors, warnings=warnings,
                           rows_read=rows_read, encoding=encoding)


def _parse_row(row: list[str], columns: dict[str, int]) -> tuple[Customer | None, list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []

    def cell(name: str) -> str:
        idx = columns.get(name)
        return row[idx] if idx is not None else ""

    account_no, err = _clean_account(cell("account_no"))
    if err:
        errors.append(err)
    name = _clean_text(cell("name"))
    if not name:
        errors.append("缺少户名 / missing customer name (户名)")

    texts: dict[str, str] = {}
    for f in ("name", "address", "transformer_area", "feeder", "village"):
        value = _clean_text(cell(f))
        if len(value) > MAX_FIELD_LENGTH:
            errors.append(f"{HEADER_ALIASES[f][0]}过长(超过{MAX_FIELD_LENGTH}字) / {f} longer than {MAX_FIELD_LENGTH} characters")
        texts[f] = value

    raw_area = cell("area_class")
    if not raw_area.strip():
        area = "town"
        if "area_class" in columns:
            warnings.append("区域类别为空，按城区处理 / area class empty, taken as town")
    else:
        area = parse_area_class(raw_area)
        if area is None:
            errors.append(f"区域类别无法识别: {_show(raw_area.strip())}，应为 城区/农村/偏远山区 / "
                          "unknown area class, expected town/countryside/remote")

    raw_class = _clean_text(cell("customer_class"))
    customer_class = _CUSTOMER_CLASSES.get(unicodedata.normalize("NFKC", raw_class).lower(), raw_class) or "residential"
    if len(customer_class) > 50:
        errors.append("客户类别过长 / customer class too long")

    flags: dict[str, bool] = {}
    for f in ("dedicated_transformer", "large_customer", "sensitive", "high_rise"):
        raw = cell(f)
        value = parse_flag(raw)
        if value is None:
            errors.append(f"{HEADER_ALIASES[f][0]}应为 是/否: {_show(raw.strip())} / {f} must be yes/no")
            value = False
        flags[f] = value

    raw_phones = cell("phones")
    phones, bad = split_phones(raw_phones)
    if bad:
        shown = "、".join(_show(piece) for piece in bad[:5]) + ("…" if len(bad) > 5 else "")
        warnings.append(f"电话号码无效，已忽略: {shown} / invalid phone number(s) ignored")
    if len(phones) > MAX_PHONES_PER_CUSTOMER:
        warnings.append(f"电话号码超过{MAX_PHONES_PER_CUSTOMER}个，只保留前{MAX_PHONES_PER_CUSTOMER}个 / "
                        f"more than {MAX_PHONES_PER_CUSTOMER} phones, extra ones ignored")
        phones = phones[:MAX_PHONES_PER_CUSTOMER]
    if not phones and not errors:
        warnings.append("无有效联系电话，来电无法自动识别，仅可按户号查询 / "
                        "no valid phone: calls cannot be matched by number, only by account number")

    if errors:
        return None, errors, warnings
    assert account_no is not None
    return Customer(
        account_no=account_no,
        name=texts["name"],
        address=texts["address"],
        transformer_area=texts["transformer_area"],
        feeder=texts["feeder"],
        village=texts["village"],
        area_class=area or "town",
        customer_class=customer_class,
        phones=tuple(phones),
        **flags,
    ), [], warnings
