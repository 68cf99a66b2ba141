#!/usr/bin/env bash
# Builds `runner` with candle's CUDA backend (`--features cuda`).
#
# With a normal CUDA install (nvcc on PATH, the NVIDIA driver's libcuda present) this is just
#     cargo build --release -p runner --features cuda
# and the script does exactly that.
#
# Without a system CUDA toolkit (these build machines), it takes NVIDIA's compiler and headers
# from PyPI wheels of one CUDA major version (13.0: the device machines' driver is R580), and
# links against stub libraries for the parts that exist only where a GPU driver is (libcuda) or
# that are large (cuBLAS, cuBLASLt, cuRAND, NVRTC). At run time the real libraries are found on
# LD_LIBRARY_PATH: the driver's libcuda, and e.g. a PyTorch environment's nvidia/cu13/lib
# (`scripts/cuda-env.sh` prints the right LD_LIBRARY_PATH from a python that has them).
#
# Environment: CUDA_COMPUTE_CAP (default 90: H100/H200), CUDA_DIR (default .cuda, ignored by git),
# RUNNER_CUDA_FROM_WHEELS=1 to use the wheels even where nvcc exists. Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
if command -v nvcc >/dev/null 2>&1 && [ -z "${RUNNER_CUDA_FROM_WHEELS:-}" ]; then
    exec cargo build --release -p runner --features cuda "$@"
fi

CUDA_DIR="$(realpath -m "${CUDA_DIR:-.cuda}")"
WHEELS="$CUDA_DIR/wheels"
R="$CUDA_DIR/root/nvidia/cu13"
PY="${PYTHON:-python3}"

# 1. Compiler, headers and runtime from PyPI (about 104 MB of wheels).
if [ ! -x "$R/bin/nvcc" ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" \
        nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
        nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85
    for w in "$WHEELS"/*.whl; do
        "$PY" -m zipfile -e "$w" "$CUDA_DIR/root"
    done
    chmod +x "$R"/bin/* "$R"/nvvm/bin/* 2>/dev/null || true
fi
ln -sfn lib "$R/lib64"                              # some build scripts expect $CUDA_ROOT/lib64
ln -sf libcudart.so.13 "$R/lib/libcudart.so"        # candle-kernels links -lcudart

# 2. Link-time stubs: every function the Rust bindings (cudarc) declare, as empty symbols in a
#    shared library with the real SONAME. Nothing calls them: at run time the loader resolves the
#    SONAME to the real library.
cargo fetch --quiet
CUDARC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$CUDARC" ]; then
    echo "error: cudarc's sources were not fetched (is candle-core's cuda feature enabled?)" >&2
    exit 1
fi
STUBS="$R/lib/stubs"
mkdir -p "$STUBS"
make_stub() { # name soname source-dir
    local name="$1" soname="$2" dir="$3" c="$STUBS/$1.c"
    grep -rhoE 'pub fn [A-Za-z0-9_]+\(' "$CUDARC/src/$dir" | sed -E 's/pub fn ([A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u >"$c"
    gcc -shared -fPIC -o "$STUBS/$soname" -Wl,-soname,"$soname" "$c"
    ln -sf "$soname" "$STUBS/lib$name.so"
}
make_stub cuda libcuda.so.1 driver
make_stub cublas libcublas.so.13 cublas
make_stub cublasLt libcublasLt.so.13 cublaslt
make_stub curand libcurand.so.10 curand
make_stub nvrtc libnvrtc.so.13 nvrtc

# 3. Build. cudarc computes its link paths once: start it clean so it sees this root.
export PATH="$R/bin:$PATH" CUDA_ROOT="$R" CUDA_HOME="$R" CUDA_PATH="$R"
export LIBRARY_PATH="$STUBS:$R/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L $STUBS -L $R/lib"
cargo clean --quiet --release -p cudarc --target-dir target/cuda 2>/dev/null || true
cargo build --release -p runner --features cuda --target-dir target/cuda "$@"

echo "built target/cuda/release/runner (CUDA 13.0, sm_${CUDA_COMPUTE_CAP})."
echo "run it where the NVIDIA driver (R580 or newer) is, with libcublas.so.13, libcublasLt.so.13,"
echo "libcurand.so.10 and libcudart.so.13 on LD_LIBRARY_PATH, e.g.:"
echo "    eval \"\$(scripts/cuda-env.sh)\" && target/cuda/release/runner exec experiments/frozen_embeddings.toml --set device=cuda"
