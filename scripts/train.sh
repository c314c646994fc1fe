#!/usr/bin/env bash
# Train with the TF2 Object Detection API; see docs/train.md or `scripts/train.sh --help`.
# A thin wrapper: the work is in chestdet/commands/train.py. exec hands Ctrl-C straight to it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$repo/.venv/bin/python"
[[ -x "$python" ]] || python="$(command -v python3)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m chestdet.commands.train "$@"
