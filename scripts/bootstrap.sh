#!/usr/bin/env bash
# Make sure uv (pinned) is available and the workspace environment matches uv.lock.
# Sourced by ./hermes and ./run-tests. The first run builds llama-cpp-python from source (~10 min).
set -euo pipefail
UV_VERSION="0.13.8"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}" >&2
  export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
fi
(cd "$root" && uv sync --frozen --quiet >&2)
