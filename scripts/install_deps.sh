#!/usr/bin/env bash
# Installs the Debian packages dtrain needs to build, test and train (root or sudo).
# Usage: scripts/install_deps.sh [--with-torch]   (--with-torch: PyTorch for the reference tools)
# Also makes .venv-tb (when missing): a virtual environment over the system Python with the
# `tensorboard` package from PyPI (not in Debian 12), which tests/test_tensorboard.sh reads the
# events files of output.tensorboard with; `.venv-tb/bin/tensorboard --logdir runs/` views them.
set -euo pipefail
pkgs=(build-essential cmake pkg-config zlib1g-dev libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools
      libdnnl-dev libinih-dev libcmocka-dev dataset-fashion-mnist strace python3-venv
      python3-numpy python3-h5py python3-pil  # tools/dtrain_tools/pack_images.py (your own data)
      clang libclang-rt-14-dev libomp-dev)  # the last three: the fuzz build (tests/fuzz/run.sh)
if [[ "${1:-}" == "--with-torch" ]]; then
  pkgs+=(python3-torch python3-matplotlib)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$(dirname "$0")/../.venv-tb"
if [[ ! -x "$venv/bin/tensorboard" ]]; then
  echo "installing tensorboard (PyPI) into .venv-tb"
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check tensorboard
fi
