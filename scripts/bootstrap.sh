#!/usr/bin/env bash
# Installs everything the hotline CTI needs on a fresh Debian 12 machine with
# Python 3.11, as root: system packages (espeak-ng, ffmpeg, Chromium, CJK
# fonts) and a virtualenv in .venv with the pinned Python dependencies.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=()
for pkg in espeak-ng ffmpeg chromium fonts-noto-cjk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
echo "bootstrap: ok ($(.venv/bin/python --version), chromium: $(command -v chromium || echo missing))"
