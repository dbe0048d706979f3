#!/usr/bin/env bash
# Set up sqzdse on a fresh Debian/Ubuntu machine (Python >= 3.11): system packages, then the package.
# Debian's dataset-fashion-mnist ships the real Fashion-MNIST, so the demo and the tests run offline.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
if command -v pyenv >/dev/null; then pyenv rehash; fi  # expose the sqzdse console script
