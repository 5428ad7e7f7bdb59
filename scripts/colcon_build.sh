#!/usr/bin/env bash
# Build this repo with colcon in a throw-away workspace, the way a robot's workspace does.
# Usage: scripts/colcon_build.sh [WORKSPACE]   (default: a new temp dir; printed at the end)
# Copies the files git would commit (tracked + untracked, minus .gitignore'd ones) into
# WORKSPACE/src/qdr_ros, so a local .venv, build/ or out/ never leaks into the build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QDR_VENV:-$ROOT/.venv}"
WS="${1:-$(mktemp -d "${TMPDIR:-/tmp}/qdr_colcon.XXXXXX")}"
SRC="$WS/src/qdr_ros"

[[ -x "$VENV/bin/colcon" ]] || { echo "colcon: $VENV/bin/colcon missing; run make setup" >&2; exit 1; }
rm -rf "$SRC"
mkdir -p "$SRC"
cd "$ROOT"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$SRC"
else
    tar --exclude-vcs --exclude-vcs-ignores --exclude=.venv -cf - . | tar -xf - -C "$SRC"
fi

cd "$WS"
"$VENV/bin/colcon" --log-base "$WS/log" build --base-paths "$WS/src" \
    --build-base "$WS/build" --install-base "$WS/install" --event-handlers console_cohesion+
echo "colcon: built in $WS (source $WS/install/setup.bash)"
