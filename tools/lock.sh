#!/usr/bin/env bash
# Re-pin requirements.in into requirements.lock with hashes (pip-tools in a throwaway venv).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip-tools
"$tmp/venv/bin/pip-compile" --generate-hashes --strip-extras --no-header --allow-unsafe \
    -o "$tmp/requirements.lock" requirements.in
{ echo "# Exact versions and hashes of every package, compiled from requirements.in by \`make lock\` (pip-compile)."
  cat "$tmp/requirements.lock"; } > requirements.lock
rm -rf "$tmp"
