#!/usr/bin/env python3
"""Chance levels of the synthetic world's evaluation sets, scored by `runner score`.

For each task, a predictor that never looks at the image or the question text:
- captioning (COCO, Flickr30K): the first caption of a random training image;
- VQA (VQAv2, OK-VQA, TextVQA, VizWiz): a random training answer (the prior) and the most
  frequent training answer (the majority);
- HatefulMemes: ROC-AUC of a constant score is 50 by definition (not computed).

Each predictor is scored on random subsets of NUM_SAMPLES test items (as an eval cell of that
many queries is: CIDEr's document frequencies depend on the set scored), one per seed 42, 43,
44, and averaged.

Usage: scripts/chance_baselines.py [WORLD_DIR (runs/world)] [RUNNER (target/debug/runner)]
                                   [NUM_SAMPLES (32)]
"""

import collections
import json
import os
import random
import subprocess
import sys
import tempfile

WORLD = sys.argv[1] if len(sys.argv) > 1 else "runs/world"
RUNNER = sys.argv[2] if len(sys.argv) > 2 else "target/debug/runner"
NUM_SAMPLES = int(sys.argv[3]) if len(sys.argv) > 3 else 32
SEEDS = [42, 43, 44]

CAPTIONS = {
    "coco": ("coco/dataset_coco.json", "coco/captions_val2014.json"),
    "flickr30k": ("flickr30k/dataset_flickr30k.json", "flickr30k/dataset_flickr30k_coco_style.json"),
}
VQA = {
    "vqav2": ("vqav2/v2_mscoco_train2014_annotations.json",
              "vqav2/v2_OpenEnded_mscoco_val2014_questions.json",
              "vqav2/v2_mscoco_val2014_annotations.json"),
    "okvqa": ("okvqa/mscoco_train2014_annotations.json",
              "okvqa/OpenEnded_mscoco_val2014_questions.json",
              "okvqa/mscoco_val2014_annotations.json"),
    "textvqa": ("textvqa/train_annotations_vqa_format.json",
                "textvqa/val_questions_vqa_format.json",
                "textvqa/val_annotations_vqa_format.json"),
    "vizwiz": ("vizwiz/train_annotations_vqa_format.json",
               "vizwiz/val_questions_vqa_format.json",
               "vizwiz/val_annotations_vqa_format.json"),
}


def load(rel):
    with open(os.path.join(WORLD, rel)) as f:
        return json.load(f)


def score(metric, predictions, annotations, tmp):
    path = os.path.join(tmp, "predictions.json")
    with open(path, "w") as f:
        json.dump(predictions, f)
    out = subprocess.run(
        [RUNNER, "score", "--metric", metric, "--predictions", path,
         "--annotations", os.path.join(WORLD, annotations), "--json"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["score"]


def mean(xs):
    return sum(xs) / len(xs)


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (karpathy, annotations) in CAPTIONS.items():
            images = load(karpathy)["images"]
            train = [im["sentences"][0]["raw"].strip() for im in images if im["split"] == "train"]
            test = [im for im in images if im["split"] == "test"]
            scores = []
            for seed in SEEDS:
                rng = random.Random(seed)
                subset = rng.sample(test, min(NUM_SAMPLES, len(test)))
                # Image ids as the eval writes them: `cocoid`, or Flickr's file name stem.
                preds = [{"image_id": im["cocoid"] if "cocoid" in im
                          else im["filename"].split(".")[0],
                          "caption": rng.choice(train)} for im in subset]
                # CIDEr x100, as `runner report` shows it.
                scores.append(100 * score("cider", preds, annotations, tmp))
            rows.append((name, "CIDEr", "random training caption", mean(scores)))
        for name, (train_ann, test_q, test_ann) in VQA.items():
            answers = [a["multiple_choice_answer"] if "multiple_choice_answer" in a
                       else collections.Counter(x["answer"] for x in a["answers"]).most_common(1)[0][0]
                       for a in load(train_ann)["annotations"]]
            questions = load(test_q)["questions"]
            top = collections.Counter(answers).most_common(1)[0][0]
            prior, majority = [], []
            for seed in SEEDS:
                rng = random.Random(seed)
                subset = rng.sample(questions, min(NUM_SAMPLES, len(questions)))
                preds = [{"question_id": q["question_id"], "answer": rng.choice(answers)}
                         for q in subset]
                prior.append(score("vqa-accuracy", preds, test_ann, tmp))
                preds = [{"question_id": q["question_id"], "answer": top} for q in subset]
                majority.append(score("vqa-accuracy", preds, test_ann, tmp))
            rows.append((name, "accuracy", "random training answer", mean(prior)))
            rows.append((name, "accuracy", f"majority answer `{top}`", mean(majority)))
    print("| dataset | metric | predictor | score |")
    print("|---|---|---|---|")
    for name, metric, predictor, value in rows:
        print(f"| {name} | {metric} | {predictor} | {value:.1f} |")


if __name__ == "__main__":
    main()
