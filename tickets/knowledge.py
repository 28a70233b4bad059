"""Knowledge base of standard answers (知识库): the seed file and a pure
matcher.  Stdlib only; the database side is :mod:`tickets.queries`."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KNOWLEDGE_FILE", "Article", "KnowledgeFileError", "load_knowledge", "search_terms"]

KNOWLEDGE_FILE = Path(__file__).parent / "data" / "knowledge.toml"


class KnowledgeFileError(ValueError):
    pass


@dataclass(frozen=True)
class Article:
    slug: str
    topic: str
    title: str
    keywords: str
    body: str

    def to_dict(self) -> dict[str, Any]:
        return {"slug": self.slug, "topic": self.topic, "title": self.title, "keywords": self.keywords,
                "body": self.body}


def load_knowledge(path: Path | str = KNOWLEDGE_FILE) -> list[Article]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    out: list[Article] = []
    seen: set[str] = set()
    for raw in data.get("article", []):
        try:
            a = Article(*(str(raw[k]).strip() for k in ("slug", "topic", "title", "keywords", "body")))
        except KeyError as exc:
            raise KnowledgeFileError(f"article {raw.get('slug', '?')} lacks {exc}") from None
        if not a.slug or not a.title or not a.body:
            raise KnowledgeFileError(f"article {a.slug or '?'}: slug, title and body are required")
        if a.slug in seen:
            raise KnowledgeFileError(f"duplicate article slug {a.slug}")
        seen.add(a.slug)
        out.append(a)
    return out


def search_terms(q: str, max_terms: int = 6) -> list[str]:
    """The query split into terms (spaces, Chinese/ASCII punctuation); a Chinese
    run of 3 or more characters also yields its 2-character pieces, so that
    "电费怎么交" finds "电费"."""
    seps = " \t\r\n,,.。;;、/|?？!!:：()()“”\"'"
    cleaned = "".join(" " if ch in seps else ch for ch in (q or ""))
    terms: list[str] = []
    for word in cleaned.split():
        word = word[:40]
        if word not in terms:
            terms.append(word)
        if len(word) >= 3 and all("\u4e00" <= ch <= "\u9fff" for ch in word):
            for i in range(0, len(word) - 1):
                piece = word[i:i + 2]
                if piece not in terms:
                    terms.append(piece)
    return terms[:max_terms * 3]
