#!/usr/bin/env bash
# Export a trained checkpoint (SavedModel + TFLite); see docs/export.md or `scripts/export.sh --help`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${CHESTDET_PYTHON:-$repo/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
  echo "error: $python not found; run 'make venv' first (or set CHESTDET_PYTHON)" >&2
  exit 2
fi
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m chestdet.commands.export "$@"
