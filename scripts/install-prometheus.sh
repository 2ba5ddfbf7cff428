#!/usr/bin/env bash
# Installs Prometheus from Debian's packages when it is missing. `cargo xtask dashboard` runs its
# own instance (its own configuration, data directory and port, in a temporary directory) to
# draw docs/dashboard.svg; the package's system service is not started by this script.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    echo "prometheus: present ($(prometheus --version 2>&1 | head -n 1))"
    exit 0
fi

if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "prometheus: missing; install it with your package manager (Debian: apt-get install prometheus)" >&2
    exit 1
fi
sudo=""; [ "$(id -u)" != 0 ] && sudo=sudo

# Debian starts a package's service on installation unless policy-rc.d says no (exit 101).
# Say no for the length of this installation only, when no policy is in place already.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    $sudo sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    trap '$sudo rm -f "$policy"' EXIT
fi

echo "prometheus: missing, installing with ${sudo:+sudo }apt-get (the service is not started)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
