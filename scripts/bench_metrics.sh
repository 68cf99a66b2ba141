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

# "wall cpu" seconds of a command (the whole process: reading files, tokenizer set-up, scoring);
# cpu = user + sys, which a busy machine inflates less than wall time.
wall() {
  local s e
  s=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$DIR/time.txt" "$@" > "$DIR/out.json"
  e=$(date +%s.%N)
  echo "$(echo "$e - $s" | bc -l) $(awk '{print $1 + $2}' "$DIR/time.txt")"
}

rust_cider=$(wall "$RUNNER" score --metric cider --predictions "$DIR/captions_results.json" \
  --annotations "$DIR/captions_gt.json" --json)
rust_cider_score=$(jq .score "$DIR/out.json")
py_cider=$("$PY" scripts/bench_metrics.py cider "$DIR")

rust_vqa=$(wall "$RUNNER" score --metric vqa-accuracy --predictions "$DIR/vqa_results.json" \
  --annotations "$DIR/vqa_annotations.json" --json)
rust_vqa_score=$(jq .score "$DIR/out.json")
py_vqa=$("$PY" scripts/bench_metrics.py vqa "$DIR" "$OF")

report() { # name "rust_wall rust_cpu" rust_score python_json
  local rw rc py_s py_c py_score
  read -r rw rc <<< "$2"
  py_s=$(echo "$4" | jq .seconds)
  py_c=$(echo "$4" | jq .cpu)
  py_score=$(echo "$4" | jq .score)
  printf '%-13s wall: runner %6.3f s, python %6.3f s, speedup %5.1fx | cpu: runner %6.3f s, python %6.3f s, speedup %5.1fx | scores %s / %s\n' \
    "$1" "$rw" "$py_s" "$(echo "$py_s / $rw" | bc -l)" "$rc" "$py_c" "$(echo "$py_c / $rc" | bc -l)" "$3" "$py_score"
}
echo "runner: $TARGET/debug/runner (dev profile), python: $PY"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
report "CIDEr 5000x5" "$rust_cider" "$rust_cider_score" "$py_cider"
report "VQA 10000" "$rust_vqa" "$rust_vqa_score" "$py_vqa"
