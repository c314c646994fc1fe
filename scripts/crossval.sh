#!/usr/bin/env bash
# Cross-validated training over generate_tfrecords.py --folds records; see docs/train.md or
# `scripts/crossval.sh --help`. A thin wrapper: the work is in chestdet/commands/crossval.py.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$repo/.venv/bin/python"
[[ -x "$python" ]] || python="$(command -v python3)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m chestdet.commands.crossval "$@"
