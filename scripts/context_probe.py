#!/usr/bin/env python3
"""Does a model get worse the longer its context? Caption loss along a many-shot prompt.

It builds prompts of `--demos` (32) random Flickr30K training captions of the synthetic world in
the evaluation's captioning format, `<image>Output:{caption}<|endofchunk|>` each after its own
image, and reports the mean next-token loss (nats per token) of the captions by their place in
the prompt. The demonstrations are unrelated, so a model that handles long contexts scores about
the same on the last ones as on the first; one whose loss climbs will also fail the 16- and
32-shot cells. `--text` scores the language model alone on the same captions in its pretraining
format (`Output:{caption}` lines separated by `<|endoftext|>`, no images). Built on
`runner generate --json`; only the standard library is needed.

    python3 scripts/context_probe.py experiments/frozen_embeddings.toml \\
        [--variant special_embeddings=trainable] [--text] [--demos 32] [--trials 3] [--set key=value]
"""

import argparse
import json
import os
import random

from grounding_probe import logprobs  # the same `runner generate --json` call

BUCKETS = [(0, 4), (4, 8), (8, 16), (16, 24), (24, 32)]


def demo_losses(args, rng, train):
    demos = rng.sample(train, args.demos)
    caps = [d["sentences"][rng.randrange(len(d["sentences"]))]["raw"] for d in demos]
    if args.text:
        prompt = "".join(f"Output:{c}<|endoftext|>" for c in caps)
        images = []
    else:
        prompt = "".join(f"<image>Output:{c}<|endofchunk|>" for c in caps)
        images = [os.path.join(args.world, "flickr30k/flickr30k-images", d["filename"])
                  for d in demos]
    ids, lp = logprobs(args, prompt, images)
    lp = [None] + lp  # lp[i] scores token i
    # Every demonstration starts with the same token (`<image>`, or `Output` for --text) and
    # scores its tokens after `Output:`, the closing token included.
    starts = [i for i, t in enumerate(ids) if t == ids[0]] + [len(ids)]
    skip = 2 if args.text else 3
    out = []
    for a, b in zip(starts, starts[1:]):
        seg = lp[a + skip:b]
        out.append(-sum(seg) / len(seg))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment")
    p.add_argument("--variant")
    p.add_argument("--text", action="store_true", help="the LM alone, pretraining format")
    p.add_argument("--demos", type=int, default=32)
    p.add_argument("--trials", type=int, default=3, help="prompts to average over")
    p.add_argument("--world", default="runs/world")
    p.add_argument("--set", action="append", default=[], help="passed to runner generate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = json.load(open(os.path.join(args.world, "flickr30k/dataset_flickr30k.json")))
    train = [d for d in data["images"] if d["split"] == "train"]
    rng = random.Random(args.seed)
    runs = [demo_losses(args, rng, train) for _ in range(args.trials)]
    per = [sum(r[k] for r in runs) / len(runs) for k in range(args.demos)]
    for a, b in BUCKETS:
        if b <= args.demos:
            print(f"demonstrations {a + 1:2}-{b:2}: {sum(per[a:b]) / (b - a):.3f} nats per token")


if __name__ == "__main__":
    main()
