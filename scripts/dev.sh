#!/usr/bin/env bash
# One entry point for people and CI.
#   bash scripts/dev.sh serve [onvifcam serve flags...]  install into .venv and run the server
#   bash scripts/dev.sh test  [pytest args...]           install everything the tests need, run them
#   bash scripts/dev.sh bench-deps                       also install the benchmark peers and
#                                                        atheris for scripts/fuzz.py
# pip and npm run on the first call, then again only when pyproject.toml or the npm
# lockfile changed (stamps in .venv and node_modules), so `serve` starts in about a second.
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
  # $1: pip extras, e.g. "fast" or "test,fast". pip runs only when .venv is new or broken,
  # or pyproject.toml changed since the last install with these extras (a stamp in .venv
  # holds its hash): the package is installed editable, so source edits need no reinstall.
  if ! .venv/bin/python -c '' 2>/dev/null; then
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then apt_install python3-venv; fi
    "$PY" -m venv --clear .venv
  fi
  local stamp=".venv/.installed-${1//,/-}" want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ ! -x .venv/bin/onvifcam ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$1]"
    echo "$want" >"$stamp"
  fi
}

npm_deps() {
  # the npm `onvif` client for tests/interop/test_onvif_node.py (pinned by the lockfile);
  # `npm ci` wipes node_modules, so it runs only when the lockfile changed since the last one
  local dir=tests/interop/node stamp=tests/interop/node/node_modules/.installed want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # NodeSource's nodejs ships npm itself and conflicts with Debian's npm package
    command -v npm >/dev/null || apt_install npm
    npm ci --prefix "$dir" --no-audit --no-fund >&2
    echo "$want" >"$stamp"
  fi
}

TEST_APT=(ffmpeg gstreamer1.0-tools gstreamer1.0-rtsp gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav iproute2 openssl nodejs chromium nginx-light libnginx-mod-rtmp)
BENCH_APT=(python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 nginx-light srt-tools
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
    npm_deps
    .venv/bin/ruff check onvifcam tests scripts
    .venv/bin/ruff format --check onvifcam tests scripts
    # pytest exits 5 when it collected no tests: that is a failure here too. Three
    # pytest-xdist workers: the interop tests mostly wait on real peers, so three overlap
    # well on two cores; loadgroup keeps a file with a module-scoped server on one worker
    # (tests/conftest.py). `-n 0` after `test` runs everything in this process.
    exec .venv/bin/python -m pytest -p no:cacheprovider --durations=20 -n 3 --dist loadgroup "$@"
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
