#!/usr/bin/env bash
# gradviz's two commands on a fresh machine:
#   ./run.sh app    install what is missing, then start the app on 127.0.0.1:8501
#   ./run.sh test   install what is missing (also Chromium), then run the whole suite
# Extra arguments go to streamlit (app) or pytest (test).
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-}"
[[ $mode == app || $mode == test ]] || { echo "usage: ./run.sh app|test [args...]" >&2; exit 2; }
shift

# pip repeats a warning per package for index folders some machines configure; hide those.
quiet() { grep -v "^WARNING: Location '" || true; }
say() { printf '\033[1m[gradviz]\033[0m %s\n' "$*"; }

find_python() {
  # The machine's default python3 first: the local torch wheel is built for it.
  for py in python3 python3.11 python3.12 python3.13; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return
    fi
  done
  echo "gradviz needs Python 3.11 or newer (with venv); install it and run again" >&2
  exit 1
}

apt_install() {  # apt_install <command it provides> <debian package>
  command -v "$1" >/dev/null && return
  if [[ $(id -u) -ne 0 ]]; then
    echo "gradviz needs '$1' (Debian/Ubuntu package '$2'): run 'sudo apt-get install -y $2' and try again" >&2
    exit 1
  fi
  say "installing $2 with apt-get"
  if [[ -z ${GRADVIZ_APT_UPDATED:-} ]]; then apt-get update -qq; export GRADVIZ_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# The virtual environment and Python packages.
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv"
  "$(find_python)" -m venv .venv
fi
PY=.venv/bin/python
if ! $PY -c 'import torch' 2>/dev/null; then
  # A bare 'torch' requirement resolved from scratch can pull a multi-GB CUDA build; this
  # pin takes the CPU wheel these machines keep on disk (pip's find-links).
  say "installing torch 2.13.0 (CPU)"
  $PY -m pip install -q torch==2.13.0 2>&1 | quiet
fi
extras="[models]"; [[ $mode == test ]] && extras="[test]"
stamp=".venv/.gradviz-$mode-$(sha1sum pyproject.toml | cut -c1-12)"
if [[ ! -f $stamp ]]; then
  say "installing gradviz$extras and its dependencies"
  $PY -m pip install -q -e ".$extras" 2>&1 | quiet
  touch "$stamp"
fi

# Graphviz's dot lays out every drawing; Chromium runs the browser tests.
apt_install dot graphviz
[[ $mode == test ]] && apt_install chromium chromium

if [[ $mode == app ]]; then
  say "starting the app on http://127.0.0.1:${GRADVIZ_PORT:-8501}"
  exec $PY -m streamlit run streamlit_app.py --server.address 127.0.0.1 \
    --server.port "${GRADVIZ_PORT:-8501}" --server.headless true --browser.gatherUsageStats false "$@"
fi
# Tiny tensors run fastest on one thread per test worker; two workers use both cores.
export OMP_NUM_THREADS=1
exec $PY -m pytest -n 2 -q "$@"
