#!/usr/bin/env python3
"""Helper of scripts/bench_metrics.sh.

  bench_metrics.py generate DIR            write COCO captions (5,000 images x 5 refs) + results and
                                           VQA annotations/questions (10,000 x 10 answers) + results
  bench_metrics.py cider DIR               time pycocoevalcap CIDEr as open_flamingo calls it
                                           (pycocotools loadRes, PTB tokenisation with Java, Cider)
  bench_metrics.py vqa DIR OPEN_FLAMINGO   time open_flamingo's vqa_metric.compute_vqa_accuracy
Each timing mode prints one JSON line {"seconds": wall, "cpu": user+sys of this process and its children
(the Java tokenizer), "score": ...}.
"""

import contextlib
import importlib.util
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

ADJ = "red blue green white black small large young old wooden tall brown yellow empty busy".split()
NOUN = ("man woman dog cat bus train plate pizza table street car bird horse kite surfboard giraffe "
        "elephant bench clock laptop phone sandwich umbrella boat bear zebra sheep cow skateboard").split()
VERB = "sitting standing riding holding eating walking flying parked laying looking".split()
PREP = "on in near next to under behind with over".split()
NUM = "two three four several many".split()


def caption(rng):
    parts = [rng.choice(["A", "a", "The", "An", rng.choice(NUM).capitalize()]), rng.choice(ADJ), rng.choice(NOUN)]
    if rng.random() < 0.2:
        parts.append("'s")
    parts += [rng.choice(["is", "are", ""]), rng.choice(VERB), rng.choice(PREP), "the", rng.choice(ADJ),
              rng.choice(NOUN)]
    if rng.random() < 0.3:
        parts += [",", "with", rng.choice(["a", "two", "some"]), rng.choice(NOUN)]
    text = " ".join(p for p in parts if p).replace(" ,", ",").replace(" 's", "'s")
    return text + rng.choice([".", "", " .", "!"])


ANSWERS = ("yes no 2 two 3 1 0 red blue white black tennis baseball frisbee kitchen pizza surfing skiing dog cat "
           "left right bus train giraffe umbrella none 4 5 green brown").split()


def generate(d):
    rng = random.Random(7)
    os.makedirs(d, exist_ok=True)
    images, anns, results = [], [], []
    for i in range(5000):
        image_id = 100000 + i * 7
        images.append({"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg"})
        for _ in range(5):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "caption": caption(rng)})
        results.append({"image_id": image_id, "caption": caption(rng)})
    with open(os.path.join(d, "captions_gt.json"), "w") as f:
        json.dump({"info": {}, "licenses": [], "type": "captions", "images": images, "annotations": anns}, f)
    with open(os.path.join(d, "captions_results.json"), "w") as f:
        json.dump(results, f)

    questions, vqa_anns, vqa_res = [], [], []
    for i in range(10000):
        qid = 5000000 + i
        top = rng.choice(ANSWERS)
        answers = [{"answer": top if rng.random() < 0.6 else rng.choice(ANSWERS),
                    "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]
        questions.append({"question_id": qid, "image_id": i, "question": "What is it?"})
        vqa_anns.append({"question_id": qid, "image_id": i, "question_type": "what", "answer_type": "other",
                         "answers": answers, "multiple_choice_answer": top})
        pred = rng.choice([top, rng.choice(ANSWERS), top.capitalize() + ".", "the " + top])
        vqa_res.append({"question_id": qid, "answer": pred})
    with open(os.path.join(d, "vqa_annotations.json"), "w") as f:
        json.dump({"info": {}, "license": {}, "data_subtype": "val2014", "data_type": "mscoco",
                   "annotations": vqa_anns}, f)
    with open(os.path.join(d, "vqa_questions.json"), "w") as f:
        json.dump({"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                   "license": {}, "questions": questions}, f)
    with open(os.path.join(d, "vqa_results.json"), "w") as f:
        json.dump(vqa_res, f)


def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_cider(d):
    cpu = cpu_seconds()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
        from pycocotools.coco import COCO
        coco = COCO(os.path.join(d, "captions_gt.json"))
        coco_result = coco.loadRes(os.path.join(d, "captions_results.json"))
        img_ids = coco_result.getImgIds()
        gts = {i: coco.imgToAnns[i] for i in img_ids}
        res = {i: coco_result.imgToAnns[i] for i in img_ids}
        tok = PTBTokenizer()
        gts, res = tok.tokenize(gts), tok.tokenize(res)
        score, _ = Cider().compute_score(gts, res)
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu": cpu_seconds() - cpu, "score": float(score)}))


def time_vqa(d, repo):
    src = subprocess.run(["git", "-C", repo, "show", "HEAD:open_flamingo/eval/vqa_metric.py"],
                         stdout=subprocess.PIPE, check=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "vqa_metric.py")
    with open(path, "wb") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("vqa_metric", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cpu = cpu_seconds()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        acc = mod.compute_vqa_accuracy(os.path.join(d, "vqa_results.json"), os.path.join(d, "vqa_questions.json"),
                                       os.path.join(d, "vqa_annotations.json"))
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu": cpu_seconds() - cpu, "score": acc}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "generate":
        generate(sys.argv[2])
    elif mode == "cider":
        time_cider(sys.argv[2])
    elif mode == "vqa":
        time_vqa(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode}")
