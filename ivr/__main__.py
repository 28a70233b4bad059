"""``python -m ivr build-prompts [--sounds-dir DIR] [--menu FILE]``

Builds every static prompt of the menu (8 kHz mono 16-bit WAV, cached by
content hash) plus the fallback tone, with a progress bar.  Exit status 1 if
any prompt could not be built.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

DEFAULT_SOUNDS_DIR = "/var/lib/asterisk/sounds/hotline"


def _build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cti.logs import setup_logging
    from ivr.menu import MenuError, load_menu
    from ivr.tts import store_for_menu

    setup_logging("WARNING")
    try:
        menu = load_menu(args.menu)
    except MenuError as e:
        print(f"菜单文件有误 / bad menu: {e}", file=sys.stderr)
        return 2
    store = store_for_menu(menu, args.sounds_dir, voice=args.voice, rate=args.rate, timeout=args.timeout)
    texts = menu.static_prompts()
    failed: list[str] = []

    async def run() -> None:
        with tqdm(total=len(texts), desc="生成语音提示 / building prompts", unit="prompt",
                  file=sys.stderr) as bar:
            def progress(name, pf, error):
                if error:
                    failed.append(f"{name}: {error}")
                bar.set_postfix_str(f"{name}{' (cached)' if pf is not None and pf.cached else ''}")
                bar.update(1)
            await store.build_all(texts, progress)

    asyncio.run(run())
    for name, text in texts.items():
        print(f"{name}\t{store.path_for(text)}")
    if failed:
        print("未能生成 / failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ivr", description="966022 IVR tools")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-prompts", help="build all static prompts of the menu")
    b.add_argument("--sounds-dir", default=os.environ.get("HOTLINE_SOUNDS_DIR", DEFAULT_SOUNDS_DIR),
                   help=f"where Asterisk reads the prompts (default $HOTLINE_SOUNDS_DIR or {DEFAULT_SOUNDS_DIR})")
    b.add_argument("--menu", type=Path, default=None, help="menu file (default ivr/menu.toml)")
    b.add_argument("--voice", default="cmn-latn-pinyin")
    b.add_argument("--rate", type=int, default=150)
    b.add_argument("--timeout", type=float, default=20.0, help="seconds per prompt")
    args = ap.parse_args(argv)
    if args.cmd == "build-prompts":
        return _build(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
