#!/usr/bin/env bash
# Create or update the repo's virtual environment (.venv) with requirements/dev.txt and an
# editable install of this repo. A stamp makes a second run fast: pip runs again only when
# requirements/*.txt, constraints.txt, setup.py, setup.cfg or package.xml change.
#
# Overrides (mainly for tests of the failure messages):
#   QDR_PYTHON       interpreter used to create the venv (default: python3 on PATH)
#   QDR_VENV         venv location (default: <repo>/.venv)
#   QDR_MIN_FREE_GB  free disk space required before installing (default: 7 for a new venv, 2 otherwise)
#   QDR_LAUNCH_WHEELS  folder with the ROS 2 launch stack wheels and install.sh
#                      (default: <repo>/../shared/wheels/ros2-launch; skipped with a message when absent)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${QDR_PYTHON:-python3}"
VENV="${QDR_VENV:-$ROOT/.venv}"
STAMP="$VENV/.qdr-setup-stamp"
LAUNCH_WHEELS="${QDR_LAUNCH_WHEELS:-$ROOT/../shared/wheels/ros2-launch}"

die() {
    printf 'setup: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit 1
}

# pip prints one harmless line per unreachable local index; keep everything else.
filter_pip() { grep -v "^WARNING: Location 'file:///opt/pypi" || true; }

inputs_hash() {
    {
        (cd "$ROOT" && cat requirements/*.txt constraints.txt setup.py setup.cfg package.xml)
        if [[ -f "$LAUNCH_WHEELS/install.sh" ]]; then ls "$LAUNCH_WHEELS"; fi  # && would fail the pipe when absent
    } | sha256sum | cut -d' ' -f1
}

# ros2 launch, launch_ros and the ros2 CLI are not on the package index; a robot has them from its
# distribution, dev and CI machines from the shared wheel folder (test/install/test_ros2_launch.py runs ros2 launch).
install_launch_stack() {
    if [[ ! -f "$LAUNCH_WHEELS/install.sh" ]]; then
        echo "setup: $LAUNCH_WHEELS/install.sh not found; skipping the ROS 2 launch stack (ros2 launch tests will skip)"
        return 0
    fi
    echo "setup: installing the ROS 2 launch stack from $LAUNCH_WHEELS"
    local rc
    set +e
    PIP_CONSTRAINT="$ROOT/constraints.txt" bash "$LAUNCH_WHEELS/install.sh" "$VENV/bin/python" 2>&1 | filter_pip
    rc="${PIPESTATUS[0]}"
    set -e
    (( rc == 0 )) || die "$LAUNCH_WHEELS/install.sh failed (exit $rc); see the output above."
}

check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 ||
        die "'$PYTHON' not found: Python 3.11-3.12 is required." \
            "Fix: sudo apt-get install python3 python3-venv (or set QDR_PYTHON=/path/to/python3.X)"
    local version
    version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" ||
        die "'$PYTHON' does not run (broken interpreter)." \
            "Fix: reinstall it, or set QDR_PYTHON=/path/to/a/working/python3.X"
    case "$version" in
        3.11 | 3.12) ;;
        *) die "'$PYTHON' is Python $version; Python 3.11-3.12 is required (the pinned ROS 2, torch and onnxruntime" \
               "wheels; a robot runs the nodes on 3.10-3.12 from requirements/runtime.txt, see docs/robot.md)." \
               "Fix: install one of those and set QDR_PYTHON=/path/to/python3.X" ;;
    esac
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
        die "'$PYTHON' (Python $version) lacks the venv/ensurepip modules." \
            "Fix: sudo apt-get install python3-venv (Debian/Ubuntu; python$version-venv for a non-default version)"
}

check_disk() {
    local need_gb="$1" dir free_kb
    dir="$(dirname "$VENV")"
    free_kb="$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')"
    if (( free_kb < need_gb * 1024 * 1024 )); then
        die "only $((free_kb / 1024 / 1024)) GB free on the disk holding $dir; the venv needs about $need_gb GB." \
            "Fix: free some space (e.g. pip cache purge, remove old build/ install/ log/ dirs) and rerun make setup"
    fi
}

package_index() {
    [[ -n "${PIP_INDEX_URL:-}" ]] && { echo "$PIP_INDEX_URL"; return; }
    "$VENV/bin/python" -m pip config get global.index-url 2>/dev/null || echo "https://pypi.org/simple"
}

# Succeeds (printing the error) when the index cannot be fetched; honours HTTPS_PROXY.
index_unreachable() {
    "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import sys
import urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip('/') + '/pip/', timeout=15).close()
except Exception as error:  # any failure to fetch means "unreachable" for this message
    print(getattr(error, 'reason', error))
    sys.exit(0)
sys.exit(1)
PY
}

pip_install() {
    local log rc
    log="$(mktemp)"
    set +e
    "$VENV/bin/python" -m pip install --progress-bar off "$@" 2>&1 | tee "$log" | filter_pip
    rc="${PIPESTATUS[0]}"
    set -e
    if (( rc != 0 )); then
        local index reason
        index="$(package_index)"
        # pip often reports an unreachable index only as "no matching distribution" or as an
        # unsatisfiable pin, so ask the index directly before blaming the requirements.
        if reason="$(index_unreachable "$index")" ||
            grep -qE 'NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|Network is unreachable|ProxyError' "$log"; then
            rm -f "$log"
            die "pip could not get packages from the package index $index (offline or unreachable${reason:+: $reason})." \
                "Fix: check the network/proxy (HTTPS_PROXY) or PIP_INDEX_URL, then rerun make setup"
        fi
        rm -f "$log"
        die "pip install $* failed (exit $rc); see the output above."
    fi
    rm -f "$log"
}

main() {
    local hash need_gb
    hash="$(inputs_hash)"
    if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$hash" ]] &&
        "$VENV/bin/python" -c 'import qdr_ros, qdr_train' >/dev/null 2>&1; then
        echo "setup: $VENV is up to date"
        return 0
    fi

    check_python
    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        echo "setup: $VENV/bin/python does not run (moved or its interpreter is gone); recreating $VENV"
        rm -rf "$VENV"
    fi
    need_gb="${QDR_MIN_FREE_GB:-$([[ -x "$VENV/bin/python" ]] && echo 2 || echo 7)}"
    check_disk "$need_gb"

    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv "$VENV" ||
            die "'$PYTHON -m venv $VENV' failed." "Fix: sudo apt-get install python3-venv, then rerun make setup"
    fi
    rm -f "$STAMP"
    echo "setup: installing requirements/dev.txt with constraints.txt (a new venv takes 3-5 minutes)"
    pip_install -r "$ROOT/requirements/dev.txt" -c "$ROOT/constraints.txt"
    echo "setup: installing requirements/no-deps.txt without their declared dependencies"
    pip_install --no-deps -r "$ROOT/requirements/no-deps.txt"
    echo "setup: installing this repo in editable mode"
    pip_install --no-deps --no-build-isolation -e "$ROOT"
    install_launch_stack
    (cd / && "$VENV/bin/python" -c 'import qdr_ros, qdr_train') ||
        die "the editable install did not make qdr_ros and qdr_train importable."
    echo "$hash" >"$STAMP"
    echo "setup: done ($VENV)"
}

main "$@"
