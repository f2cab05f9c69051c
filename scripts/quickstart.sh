#!/usr/bin/env bash
# Set-up and main job in one command: installs the packages, builds, and trains
# ResNet-preact-20 on the real Fashion-MNIST (configs/quickstart.ini). Extra arguments go to
# dtrain, for example: scripts/quickstart.sh --set train.epochs=1
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
exec ./dtrain configs/quickstart.ini "$@"
