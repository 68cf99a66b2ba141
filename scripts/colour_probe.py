#!/usr/bin/env python3
"""Does a trained model read colours from its image, as a caption and as a VQA answer?

For VizWiz-style colour questions of the synthetic world's evaluation split whose answer is one
of the eight colours, it scores each colour word after two prompts on the question's image:

  * VQA:     `<image>Question:{question} Short answer:{colour}` (the evaluation prompt);
  * caption: `<image>Output:A picture of a {colour}`.

and counts how often the most likely colour is the annotated one (chance: 1 in 8). A model
that captions from the image but answers from its language prior scores high on the second and
near chance on the first. Built on `runner generate --json`; only the standard library is needed.

    python3 scripts/colour_probe.py experiments/frozen_embeddings.toml \
        [--variant special_embeddings=trainable] [--n 10] [--world runs/world] [--set key=value]
"""

import argparse
import collections
import json
import os

from grounding_probe import logprobs  # the same `runner generate --json` call

COLOURS = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]


def last_logprob(args, prompt, image):
    # The last prompt log-prob scores the prompt's last token: the colour word.
    return logprobs(args, prompt, image)[1][-1]


def best(args, prefix, image):
    scores = [last_logprob(args, prefix + c, image) for c in COLOURS]
    return COLOURS[scores.index(max(scores))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment")
    p.add_argument("--variant")
    p.add_argument("--n", type=int, default=10, help="questions to score")
    p.add_argument("--world", default="runs/world")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()

    qpath = os.path.join(args.world, "vizwiz/val_questions_vqa_format.json")
    apath = os.path.join(args.world, "vizwiz/val_annotations_vqa_format.json")
    questions = json.load(open(qpath))["questions"]
    answers = {a["question_id"]: a for a in json.load(open(apath))["annotations"]}
    hits = collections.Counter()
    n = 0
    for q in questions:
        if n == args.n:
            break
        if "color" not in q["question"].lower():
            continue
        votes = collections.Counter(a["answer"] for a in answers[q["question_id"]]["answers"])
        truth = votes.most_common(1)[0][0]
        if truth not in COLOURS:
            continue
        image = os.path.join(args.world, "vizwiz/val", q["image_id"])
        vqa = best(args, f"<image>Question:{q['question']} Short answer:", image)
        cap = best(args, "<image>Output:A picture of a ", image)
        hits["vqa"] += vqa == truth
        hits["caption"] += cap == truth
        n += 1
        print(f"{q['question_id']}: {truth:7} VQA -> {vqa:7} caption -> {cap}")
    print(f"right of {n}: VQA {hits['vqa']}, caption {hits['caption']} (chance {n / 8:.1f})")


if __name__ == "__main__":
    main()
