# Sourced by scripts/serve and scripts/setup-env: makes ./.venv and installs the project into it
# with the versions pinned in a lock file (requirements/*.txt, made by scripts/lock), again only
# when pyproject.toml, the lock file or the extras change.
# shellcheck shell=bash

PYTHON=${PYTHON:-python3}

ensure_venv() {
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1 || echo none))." >&2
    exit 1
  fi
  [ -x .venv/bin/python ] && return 0
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "Installing python3-venv (Debian/Ubuntu)..." >&2
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv .venv
    else
      echo "Cannot create a virtualenv: run 'sudo apt-get install python3-venv' first." >&2
      exit 1
    fi
  fi
}

# The uv version the test lock pins (serve.txt has none: uv is a dev tool there).
uv_version() {
  sed -n 's/^uv==\([0-9.]*\).*/\1/p' requirements/test.txt | head -1
}

# install_locked LOCKFILE EXTRAS: the project (editable) with the given extras (comma list),
# every package at the version LOCKFILE pins (a pip constraints file).
install_locked() {
  local lock=$1 extras=${2:-}
  extras=${extras// /}
  local spec="."
  [ -n "$extras" ] && spec=".[$extras]"
  local stamp
  local name
  name=$(basename "$lock" .txt)
  stamp=.venv/.installed-$name-$(cat pyproject.toml "$lock" | sha256sum | cut -c1-12)-$(echo "$extras" | sha256sum | cut -c1-8)
  [ -f "$stamp" ] && return 0
  echo "Installing $spec into .venv (versions from $lock) ..." >&2
  # uv (from PyPI, the tool that made the lock files) downloads in parallel: about three times
  # faster than pip here; pip is the fallback where uv cannot be installed.
  if [ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q "uv==$(uv_version "$lock")" \
      >/dev/null 2>&1; then
    .venv/bin/uv pip install -q --python .venv/bin/python -c "$lock" -e "$spec"
  else
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -c "$lock" -e "$spec"
  fi
  rm -f .venv/.installed-"$name"-*
  touch "$stamp"
}
