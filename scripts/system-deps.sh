#!/usr/bin/env bash
# Install the named Debian packages when their commands are missing and we may (root or sudo);
# otherwise say exactly what to install. Command name == package name for all we need.
set -euo pipefail
missing=()
for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Echo-Vids needs: ${missing[*]}. Install them with your package manager and run again." >&2; exit 1
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "Echo-Vids needs: ${missing[*]}. Run: sudo apt-get install -y ${missing[*]}" >&2; exit 1
fi
echo "Installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
