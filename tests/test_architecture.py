"""The domain core imports no I/O library (ARCHITECTURE.md: dependency points inward)."""
import subprocess
import sys
import textwrap
from pathlib import Path

PURE = ["cti.frame", "cti.events", "cti.normalise", "cti.tracker", "cti.phone", "cti.customers", "cti.workdays",
        "tickets.model", "tickets.states", "tickets.categories", "tickets.deadlines", "tickets.merging",
        "tickets.knowledge", "tickets.ports", "ivr.outages", "ivr.menu", "queues.model", "queues.metrics", "queues.prometheus", "queues.reports"]
BLOCKED = ["asyncpg", "aiohttp", "panoramisk", "pyttsx3", "pydub", "structlog"]


def test_domain_modules_import_without_io_libraries():
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
