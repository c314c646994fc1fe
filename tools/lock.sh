#!/usr/bin/env bash
# Re-pin requirements.in into requirements.lock and requirements-dev.in into requirements-dev.lock, with
# hashes (pip-tools in a throwaway venv). Both are installed with --no-deps, so what they list is exactly
# what is installed.
#
# opencv-python is left out on purpose: lvis asks for it, but its cv2 is the GUI build (Qt, libGL.so.1,
# missing from TensorFlow's GPU image) and it would overwrite the files of opencv-python-headless, which
# provides the same cv2 module without a display. --unsafe-package keeps it as a comment in the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip-tools
compile() {  # compile IN OUT HEADER
  # Seeded with the current lock, pip-compile keeps its pins and resolves only what requirements.in changed.
  if [ -f "$2" ]; then cp "$2" "$tmp/$2"; fi
  "$tmp/venv/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-header --no-emit-index-url \
      --no-emit-find-links --unsafe-package opencv-python -o "$tmp/$2" "$1"
  # pip-tools' closing note on "unsafe" packages becomes the reason opencv-python is not there.
  { echo "$3"; sed '/^# WARNING: The following packages were not pinned/,$d' "$tmp/$2"; } > "$2"
  if grep -q "^# opencv-python\$" "$tmp/$2"; then
    echo "# opencv-python (asked for by lvis) is left out on purpose; opencv-python-headless provides cv2 (tools/lock.sh)." >> "$2"
  fi
}
compile requirements.in requirements.lock \
  "# Runtime packages, exact versions and hashes, compiled from requirements.in by \`make lock\` (pip-compile)."
compile requirements-dev.in requirements-dev.lock \
  "# Development tools, exact versions and hashes, compiled from requirements-dev.in by \`make lock\` (pip-compile)."
