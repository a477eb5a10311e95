#!/usr/bin/env bash
# Idempotent set-up for building wavemamba on Debian/Ubuntu:
#   - system packages: libasound2-dev, pkg-config (apt, as root or via sudo; else prints the command)
#   - .venv with torch==2.11.0 (the libtorch we link), and the link .venv/libtorch -> its torch dir
#   - with CUDA=1: the pinned nvcc 13.0 wheels, and the link .venv/cuda -> their toolkit dir
# A second run only checks a stamp file and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
CUDA_WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85"
APT_PACKAGES="libasound2-dev pkg-config"
PYTHON=${PYTHON:-python3}
stamp=".venv/.setup-ok-torch${TORCH_VERSION}"
cuda_stamp=".venv/.setup-ok-cuda13"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- system packages -------------------------------------------------------------------------
missing=()
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"
  else
    echo "wavemamba needs these Debian packages: ${missing[*]}" >&2
    echo "Install them with:  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  say "installing ${missing[*]} with apt"
  $sudo apt-get install -y "${missing[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update >/dev/null && $sudo apt-get install -y "${missing[@]}"
  }
fi

# --- python venv with torch (libtorch) ---------------------------------------------------------
if [ ! -f "$stamp" ] || [ ! -e .venv/libtorch/lib/libtorch_cpu.so ]; then
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PYTHON" -m venv .venv || {
      echo "could not create a venv: install python3-venv (sudo apt-get install -y python3-venv)" >&2
      exit 1
    }
  fi
  if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    say "installing torch==$TORCH_VERSION into .venv (about 4.6 GB with its CUDA libraries)"
    .venv/bin/pip install --disable-pip-version-check -q "torch==$TORCH_VERSION"
  fi
  torch_dir=$(.venv/bin/python -c "import torch, os; print(os.path.dirname(torch.__file__))")
  ln -sfn "$torch_dir" .venv/libtorch
  touch "$stamp"
  say "libtorch: $torch_dir"
fi

# --- optional: nvcc for --features cuda --------------------------------------------------------
if [ "${CUDA:-0}" = 1 ] && { [ ! -f "$cuda_stamp" ] || [ ! -x .venv/cuda/bin/nvcc ]; }; then
  say "installing the CUDA 13.0 compiler wheels into .venv"
  # shellcheck disable=SC2086
  .venv/bin/pip install --disable-pip-version-check -q $CUDA_WHEELS
  cu13=$(.venv/bin/python -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13'))")
  [ -x "$cu13/bin/nvcc" ] || { echo "nvcc not found under $cu13/bin after installing the wheels" >&2; exit 1; }
  ln -sfn "$cu13" .venv/cuda
  touch "$cuda_stamp"
  say "nvcc: $cu13/bin/nvcc"
fi
