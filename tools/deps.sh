#!/usr/bin/env bash
# Install what cnf needs to build and test, from Debian's packages, skipping
# what is already there. Safe to run any number of times. Needs root (or sudo)
# only when something is missing.
set -euo pipefail

# strace: tests/e2e_files.sh delivers signals at a chosen system call with it;
# Open MPI: mpirun -np N cnf train|eval (CMake's CNF_MPI=AUTO finds it)
packages=(build-essential cmake pkg-config libgsl-dev libopenblas-dev libhdf5-dev
          hdf5-tools check libpng-dev strace libopenmpi-dev openmpi-bin)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "cnf: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "cnf: need root to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
# Another apt or dpkg (an unattended upgrade, a second build) may hold the
# lock: wait for it rather than fail at once. CNF_APT_LOCK_TIMEOUT in seconds.
lock=(-o "DPkg::Lock::Timeout=${CNF_APT_LOCK_TIMEOUT:-600}")
$sudo apt-get "${lock[@]}" update -qq
$sudo apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
