#!/usr/bin/env python3
"""Does a trained model look at its image? A diagnostic built on `runner generate --json`.

For training examples of the synthetic world it scores the same text twice, once after the
example's own image and once after another example's image, and reports the mean log-prob gap
(own minus other, in nats) of the tokens that depend on the image:

  * captions: every caption token of LAION-style pairs (`<image>{caption}<|endofchunk|>`);
  * answers:  the answer tokens of VQA-format prompts
              (`<image>Question:{q} Short answer:{a}<|endofchunk|>`), per dataset.

A model that ignores its images scores 0 on both. Only the standard library is needed.

    python3 scripts/grounding_probe.py experiments/frozen_embeddings.toml \
        [--variant special_embeddings=trainable] [--n 16] [--world runs/world] [--set key=value]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile

RUNNER = os.environ.get("RUNNER", "./target/debug/runner")
VQA = {
    "vqav2": ("vqav2/v2_OpenEnded_mscoco_train2014_questions.json",
              "vqav2/v2_mscoco_train2014_annotations.json", "coco/train2014",
              lambda q: "COCO_train2014_%012d.jpg" % q["image_id"]),
    "vizwiz": ("vizwiz/train_questions_vqa_format.json",
               "vizwiz/train_annotations_vqa_format.json", "vizwiz/train",
               lambda q: q["image_id"]),
}


def logprobs(args, prompt, image):
    """Prompt ids and the log-prob of each prompt token after the first; `image` is one path
    or a list of paths (one per `<image>`)."""
    images = image if isinstance(image, list) else [image]
    cmd = [RUNNER, "generate", args.experiment, "--max-new-tokens", "1", "--num-beams", "1",
           "--json", "--prompt", prompt] + [a for i in images for a in ("--image", i)]
    if args.variant:
        cmd += ["--variant", args.variant]
    for s in args.set:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"runner generate failed: {out.stderr.strip()}")
    res = json.loads(out.stdout)
    return res["prompt_ids"], [x for x in res["prompt_logprobs"] if x is not None]


def gap(args, prompt, own, other, first):
    """Summed log-prob gap of the prompt's tokens from index `first` (before the final eoc)."""
    _, a = logprobs(args, prompt, own)
    _, b = logprobs(args, prompt, other)
    # prompt_logprobs[i] scores token i + 1; the last one scores <|endofchunk|>.
    return sum(a[first - 1:-1]) - sum(b[first - 1:-1])


def captions(args, rng, tmp):
    with tarfile.open(os.path.join(args.world, "laion/000.tar")) as tar:
        members = {m.name: m for m in tar.getmembers()}
        keys = sorted({n.rsplit(".", 1)[0] for n in members})
        picked = rng.sample(keys, 2 * args.n)
        pairs = []
        for k in picked:
            cap = tar.extractfile(members[k + ".txt"]).read().decode().strip()
            path = os.path.join(tmp, k + ".png")
            with open(path, "wb") as f:
                f.write(tar.extractfile(members[k + ".png"]).read())
            pairs.append((cap, path))
    gaps = []
    for i in range(args.n):
        (cap, own), (_, other) = pairs[2 * i], pairs[2 * i + 1]
        gaps.append(gap(args, f"<image>{cap}<|endofchunk|>", own, other, first=1))
    return sum(gaps) / len(gaps)


def answers(args, rng, name):
    qpath, apath, images, file_of = VQA[name]
    qs = json.load(open(os.path.join(args.world, qpath)))["questions"]
    ans = {a["question_id"]: a["multiple_choice_answer"]
           for a in json.load(open(os.path.join(args.world, apath)))["annotations"]}
    qs = [q for q in qs if ans[q["question_id"]] != "unanswerable"]
    picked = rng.sample(qs, 2 * args.n)
    gaps = []
    for i in range(args.n):
        own, other = (os.path.join(args.world, images, file_of(x))
                      for x in picked[2 * i:2 * i + 2])
        q = picked[2 * i]
        head = f"<image>Question:{q['question']} Short answer:"
        # The answer's first token index: the length of the prompt without it.
        ids, _ = logprobs(args, head, own)
        prompt = f"{head}{ans[q['question_id']]}<|endofchunk|>"
        gaps.append(gap(args, prompt, own, other, first=len(ids)))
    return sum(gaps) / len(gaps)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiment")
    p.add_argument("--variant")
    p.add_argument("--n", type=int, default=16, help="examples per probe")
    p.add_argument("--world", default="runs/world")
    p.add_argument("--set", action="append", default=[], help="passed to runner generate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"captions (pairs): {captions(args, rng, tmp):+.3f} nats per caption")
    for name in VQA:
        print(f"answers ({name}): {answers(args, rng, name):+.3f} nats per answer")


if __name__ == "__main__":
    main()
