#!/usr/bin/env bash
# Benchmark `runner score` (dev-profile binary) against the Python references on the same files,
# in the same run: CIDEr over 5,000 images x 5 references (pycocoevalcap, PTB tokenisation with Java
# included) and VQA accuracy over 10,000 questions (open_flamingo's vqa_metric.py).
#
# Usage: scripts/bench_metrics.sh [OPEN_FLAMINGO_CHECKOUT]
# Needs: /work/venv (pycocoevalcap, pycocotools), Java, CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/work/venv/bin/python}
OF=${1:-/work/.mirror/mlfoundations+open_flamingo/repo}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build -q -p runner
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
# Copy the binary at once: a shared target directory may be rebuilt by another checkout meanwhile.
RUNNER="$DIR/runner"
cp "$TARGET/debug/runner" "$RUNNER"

"$PY" scripts/bench_metrics.py generate "$DIR"

# Wall time of a command in seconds (the whole process: reading files, tokenizer set-up, scoring).
wall() { local s e; s=$(date +%s.%N); "$@" > "$DIR/out.json"; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

rust_cider=$(wall "$RUNNER" score --metric cider --predictions "$DIR/captions_results.json" \
  --annotations "$DIR/captions_gt.json" --json)
rust_cider_score=$(jq .score "$DIR/out.json")
py_cider=$("$PY" scripts/bench_metrics.py cider "$DIR")

rust_vqa=$(wall "$RUNNER" score --metric vqa-accuracy --predictions "$DIR/vqa_results.json" \
  --annotations "$DIR/vqa_annotations.json" --json)
rust_vqa_score=$(jq .score "$DIR/out.json")
py_vqa=$("$PY" scripts/bench_metrics.py vqa "$DIR" "$OF")

report() { # name rust_seconds rust_score python_json
  local py_s py_score
  py_s=$(echo "$4" | jq .seconds)
  py_score=$(echo "$4" | jq .score)
  printf '%-13s runner %7.3f s (score %s) | python %7.3f s (score %s) | speedup %.1fx\n' \
    "$1" "$2" "$3" "$py_s" "$py_score" "$(echo "$py_s / $2" | bc -l)"
}
echo "runner: $TARGET/debug/runner (dev profile), python: $PY"
report "CIDEr 5000x5" "$rust_cider" "$rust_cider_score" "$py_cider"
report "VQA 10000" "$rust_vqa" "$rust_vqa_score" "$py_vqa"
