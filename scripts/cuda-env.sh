#!/usr/bin/env bash
# Prints an `export LD_LIBRARY_PATH=...` naming the CUDA 13 runtime libraries that a Python
# environment's `nvidia-*` wheels (e.g. PyTorch's) carry, for a runner built by build-cuda.sh:
#     eval "$(scripts/cuda-env.sh)"
set -euo pipefail
PY="${PYTHON:-python3}"
dirs="$("$PY" - <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
found = []
for root in roots:
    for lib in glob.glob(os.path.join(root, "nvidia", "**", "lib"), recursive=True):
        if any(glob.glob(os.path.join(lib, p)) for p in ("libcublas*.so*", "libcurand*.so*", "libcudart*.so*", "libnvrtc*.so*")):
            found.append(lib)
print(":".join(dict.fromkeys(found)))
EOF
)"
if [ -z "$dirs" ]; then
    echo "echo 'no nvidia CUDA libraries found in $PY site-packages' >&2"
    exit 1
fi
echo "export LD_LIBRARY_PATH=\"$dirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
