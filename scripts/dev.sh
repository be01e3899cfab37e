#!/usr/bin/env bash
# One entry point for people and CI.
#   bash scripts/dev.sh serve [onvifcam serve flags...]  install into .venv and run the server
#   bash scripts/dev.sh test  [pytest args...]           install everything the tests need, run them
#   bash scripts/dev.sh bench-deps                       also install the benchmark peers and
#                                                        atheris for scripts/fuzz.py
# Works on a fresh Debian 12 (Python 3.11) as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PY="${PYTHON:-python3}"

apt_install() {
  # Install the Debian packages that are missing (one apt-get update at most).
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]}" >&2
    $SUDO apt-get update -q >&2
    # through env: sudo resets the environment, so a plain VAR=... prefix would not reach apt
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "${missing[@]}" >&2
  fi
}

venv() {
  # $1: pip extras, e.g. "fast" or "test,fast"
  if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then apt_install python3-venv; fi
  if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$1]"
}

TEST_APT=(ffmpeg gstreamer1.0-tools gstreamer1.0-rtsp gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav iproute2 openssl nodejs)
BENCH_APT=(python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 nginx-light
  libnginx-mod-rtmp)

cmd="${1:-serve}"
shift || true
case "$cmd" in
  serve)
    venv fast
    exec .venv/bin/onvifcam serve "$@"
    ;;
  test)
    apt_install "${TEST_APT[@]}"
    venv "test,fast"
    # the npm `onvif` client for tests/interop/test_onvif_node.py (pinned by the lockfile);
    # NodeSource's nodejs ships npm itself and conflicts with Debian's npm package
    command -v npm >/dev/null || apt_install npm
    npm ci --prefix tests/interop/node --no-audit --no-fund >&2
    .venv/bin/ruff check onvifcam tests scripts
    .venv/bin/ruff format --check onvifcam tests scripts
    # pytest exits 5 when it collected no tests: that is a failure here too.
    exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
    ;;
  bench-deps)
    apt_install "${TEST_APT[@]}" "${BENCH_APT[@]}"
    venv "test,fast,fuzz"
    ;;
  *)
    echo "usage: bash scripts/dev.sh serve|test|bench-deps [args...]" >&2
    exit 2
    ;;
esac
