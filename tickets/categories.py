"""Complaint classification (投诉分类): the three-level cascade, as data.

Pure: stdlib only.  The tree lives in ``tickets/data/complaint_categories.toml``
(five level-1 families, 17 level-2, 50 level-3 categories); this module
loads it, validates it, and resolves what the agent picked into a
:class:`CategoryPath`.

A complaint must carry a valid 3-level path before it leaves the hotline
(dispatch), and on the full accept endpoint already when it is saved.  What
the agent sends may be

* the level-3 code (``"FW0102"``), which implies levels 1 and 2;
* a list of three codes or names (``["FW", "FW01", "FW0102"]`` or
  ``["服务投诉", "服务行为", "热线服务人员态度"]``), checked for consistency;
* a mapping ``{"l1": ..., "l2": ..., "l3": ...}``.

Anything else -> :class:`UnknownCategory` (the API answers 422).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "CATEGORIES_FILE", "Category", "CategoryFileError", "CategoryPath", "CategoryTree",
    "UnknownCategory", "default_categories", "load_categories", "parse_categories",
]

CATEGORIES_FILE = Path(__file__).parent / "data" / "complaint_categories.toml"


class CategoryFileError(ValueError):
    """The category file is malformed (duplicate code, wrong prefix, empty level...)."""


class UnknownCategory(ValueError):
    """What the agent picked is not a valid 3-level path; ``errors`` maps
    field -> message (zh / en), like :class:`tickets.model.ValidationError`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errors = {"category": message}


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    level: int
    parent: str = ""          # parent code ("" for level 1)
    en: str = ""


@dataclass(frozen=True)
class CategoryPath:
    l1: Category
    l2: Category
    l3: Category

    @property
    def codes(self) -> tuple[str, str, str]:
        return (self.l1.code, self.l2.code, self.l3.code)

    @property
    def label(self) -> str:
        return f"{self.l1.name} / {self.l2.name} / {self.l3.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"codes": list(self.codes), "names": [self.l1.name, self.l2.name, self.l3.name],
                "label": self.label}


class CategoryTree:
    def __init__(self, categories: list[Category]):
        self._by_code = {c.code: c for c in categories}
        self._ordered = categories
        self._children: dict[str, list[Category]] = {}
        for c in categories:
            self._children.setdefault(c.parent, []).append(c)

    # -- queries -----------------------------------------------------------
    def get(self, code: str) -> Category | None:
        return self._by_code.get(code)

    def children(self, code: str = "") -> list[Category]:
        return list(self._children.get(code, []))

    def count(self, level: int) -> int:
        return sum(1 for c in self._ordered if c.level == level)

    def path_of(self, l3_code: str) -> CategoryPath:
        l3 = self._by_code.get(l3_code)
        if l3 is None or l3.level != 3:
            raise UnknownCategory(f"未知的投诉分类 {l3_code!r} / unknown complaint category")
        l2 = self._by_code[l3.parent]
        return CategoryPath(self._by_code[l2.parent], l2, l3)

    def resolve(self, value: Any) -> CategoryPath:
        """The agent's choice -> a checked path (see the module doc)."""
        if isinstance(value, CategoryPath):
            return self.path_of(value.l3.code)
        if isinstance(value, str):
            v = value.strip()
            if not v:
                raise UnknownCategory("请选择三级投诉分类 / choose a level-3 complaint category")
            return self.path_of(v)
        if isinstance(value, Mapping):
            value = [value.get("l1"), value.get("l2"), value.get("l3")]
        if isinstance(value, (list, tuple)):
            if len(value) != 3 or not all(isinstance(x, str) and x.strip() for x in value):
                raise UnknownCategory("投诉分类须选满三级 / a complaint needs all three category levels")
            parent = ""
            found: list[Category] = []
            for level, raw in enumerate(value, start=1):
                key = raw.strip()
                match = next((c for c in self._children.get(parent, [])
                              if c.code == key or c.name == key), None)
                if match is None:
                    where = found[-1].name if found else "一级"
                    raise UnknownCategory(
                        f"分类 {key!r} 不在 {where} 之下 / category {key!r} is not a level-{level} "
                        f"category under {parent or 'the root'}")
                found.append(match)
                parent = match.code
            return CategoryPath(*found)
        raise UnknownCategory("投诉分类格式错误 / category must be a level-3 code or a list of three")

    def to_json(self) -> list[dict[str, Any]]:
        """The cascade for the form: families -> subs -> items."""
        def node(c: Category) -> dict[str, Any]:
            d: dict[str, Any] = {"code": c.code, "name": c.name, "level": c.level}
            if c.en:
                d["en"] = c.en
            kids = self._children.get(c.code)
            if kids:
                d["children"] = [node(k) for k in kids]
            return d
        return [node(c) for c in self._children.get("", [])]


def parse_categories(data: Mapping[str, Any]) -> CategoryTree:
    """Validate the decoded TOML and build the tree."""
    out: list[Category] = []
    seen: set[str] = set()

    def add(code: Any, name: Any, level: int, parent: str, en: Any = "") -> str:
        if not isinstance(code, str) or not code.strip():
            raise CategoryFileError(f"level-{level} category without a code under {parent or 'root'}")
        code = code.strip()
        if not isinstance(name, str) or not name.strip():
            raise CategoryFileError(f"category {code} has no name")
        if code in seen:
            raise CategoryFileError(f"duplicate category code {code}")
        if parent and not code.startswith(parent):
            raise CategoryFileError(f"category {code} does not start with its parent's code {parent}")
        seen.add(code)
        out.append(Category(code, name.strip(), level, parent, en if isinstance(en, str) else ""))
        return code

    families = data.get("family")
    if not isinstance(families, list) or not families:
        raise CategoryFileError("no [[family]] in the category file")
    for fam in families:
        c1 = add(fam.get("code"), fam.get("name"), 1, "", fam.get("en", ""))
        subs = fam.get("sub")
        if not isinstance(subs, list) or not subs:
            raise CategoryFileError(f"family {c1} has no level-2 categories")
        for sub in subs:
            c2 = add(sub.get("code"), sub.get("name"), 2, c1, sub.get("en", ""))
            items = sub.get("items")
            if not isinstance(items, list) or not items:
                raise CategoryFileError(f"category {c2} has no level-3 categories")
            for item in items:
                if not isinstance(item, Mapping):
                    raise CategoryFileError(f"category {c2}: items must be {{ code, name }} tables")
                add(item.get("code"), item.get("name"), 3, c2, item.get("en", ""))
    return CategoryTree(out)


def load_categories(path: Path | str = CATEGORIES_FILE) -> CategoryTree:
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise CategoryFileError(f"{path}: {exc}") from None
    return parse_categories(data)


_default: CategoryTree | None = None


def default_categories() -> CategoryTree:
    """The shipped file, loaded once."""
    global _default
    if _default is None:
        _default = load_categories()
    return _default
