"""The work-order rules import no I/O library (ARCHITECTURE.md); the seed
files load."""
import subprocess
import sys
import textwrap
from pathlib import Path

from tickets.knowledge import load_knowledge, search_terms

PURE = ["tickets.model", "tickets.states", "tickets.categories", "tickets.deadlines", "tickets.merging",
        "tickets.knowledge", "tickets.ports"]
BLOCKED = ["asyncpg", "aiohttp", "panoramisk", "pyttsx3", "pydub", "structlog"]


def test_ticket_rules_import_without_io_libraries():
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {BLOCKED!r}:
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import importlib
        for m in {PURE!r}:
            importlib.import_module(m)
        print('ok')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_knowledge_seed_covers_the_enquiry_topics_of_the_domain():
    topics = {a.topic for a in load_knowledge()}
    assert {"电价", "电费", "停电信息", "业扩报装", "用电变更", "计量", "安全用电"} <= topics


def test_knowledge_query_terms_split_chinese_runs_into_pairs():
    assert search_terms("电费怎么交") [:2] == ["电费怎么交", "电费"]
    assert search_terms("") == []
