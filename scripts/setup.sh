#!/usr/bin/env bash
# Installs every Debian package lb needs to build, test, demo and benchmark.
# Idempotent and quiet when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang
  libev-dev libssl-dev libcmocka-dev libyaml-dev node-llhttp
  curl wrk python3 slowhttptest iproute2 procps
)
if [ "${LB_SETUP_BENCH:-0}" = 1 ]; then
  packages+=(nginx-light haproxy util-linux)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "setup: installing ${missing[*]}"
# A package that ships a service (nginx, haproxy) must not start it: the scripts
# run their own instances on their own ports.
policy=$(mktemp)
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod +x "$policy"
$sudo mkdir -p /usr/sbin
restore=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  $sudo cp "$policy" /usr/sbin/policy-rc.d
  restore=yes
fi
trap '[ -n "$restore" ] && $sudo rm -f /usr/sbin/policy-rc.d; rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
