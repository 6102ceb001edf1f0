#!/usr/bin/env bash
# System packages the tests need beyond PyPI: Debian's chromium (the offline API docs are
# checked in a real headless browser). Installs it with apt when missing (as root, or via sudo).
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian's chromium (for tests/integration/test_docs_offline.py)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
