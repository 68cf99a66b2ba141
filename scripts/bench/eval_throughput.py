#!/usr/bin/env python
"""open_flamingo's evaluation loop on the files and prompts the Rust benchmark wrote.

Run by hand after `RUNNER_BENCH_DIR=DIR cargo test -p runner --test eval_stage bench_ -- --ignored
--nocapture`:

    python scripts/bench/eval_throughput.py DIR

Builds the reference model from DIR exactly as `create_model_and_transforms` assembles it (open_clip
vision tower from `vision/`, HF MPT from `lm/` with its tokenizer plus the Flamingo tokens,
`FlamingoLMMixin`, `resize_token_embeddings`, `Flamingo(...)`, then `ckpt.safetensors` loaded with
`strict=False`), and runs each cell as `evaluate.py` does: batches of 8 prompts, images through
the open_clip transform into `(B, T_img, 1, 3, S, S)`, left-padded tokens, `Flamingo.generate`
with 3 beams, 20 new tokens, length_penalty 0, stop at <|endofchunk|>, under inference_mode.
`BENCH_THREADS=N` sets torch's thread count (the Rust side: `RAYON_NUM_THREADS=N`).
Prints queries/s and whether the decoded outputs equal the Rust ones.
"""

import json
import os
import shutil
import sys
import time

import safetensors.torch
import torch
from open_clip.model import _build_vision_tower
from open_clip.transform import image_transform
from open_flamingo.src.factory import _infer_decoder_layers_attr_name
from open_flamingo.src.flamingo import Flamingo
from open_flamingo.src.flamingo_lm import FlamingoLMMixin
from open_flamingo.src.utils import extend_instance
from PIL import Image
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def build(root):
    with open(os.path.join(root, "vision", "open_clip_config.json")) as f:
        mc = json.load(f)["model_cfg"]
    visual = _build_vision_tower(mc["embed_dim"], mc["vision_cfg"], quick_gelu=mc["quick_gelu"])
    sd = safetensors.torch.load_file(os.path.join(root, "vision", "open_clip_model.safetensors"))
    visual.load_state_dict({k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")})
    visual.output_tokens = True
    holder = torch.nn.Module()  # Flamingo takes the CLIP model and keeps its `.visual`
    holder.visual = visual
    transform = image_transform(mc["vision_cfg"]["image_size"], is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)

    lm_dir = os.path.join(root, "lm")
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(lm_dir, "tokenizer.json"), unk_token="[UNK]")
    tok.add_special_tokens({"additional_special_tokens": ["<|endofchunk|>", "<image>"]})
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<PAD>"})
    tok.padding_side = "left"
    # transformers 4.33 requires the `format` metadata candle does not write: re-save a copy.
    hf_dir = os.path.join(root, "lm_hf")
    os.makedirs(hf_dir, exist_ok=True)
    for name in ["config.json", "tokenizer.json"]:
        shutil.copy(os.path.join(lm_dir, name), hf_dir)
    safetensors.torch.save_file(safetensors.torch.load_file(os.path.join(lm_dir, "model.safetensors")),
                                os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})
    lang = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True)
    extend_instance(lang, FlamingoLMMixin)
    lang.set_decoder_layers_attr_name(_infer_decoder_layers_attr_name(lang))
    lang.resize_token_embeddings(len(tok))
    model = Flamingo(
        holder, lang, tok.encode("<|endofchunk|>")[-1], tok.encode("<image>")[-1],
        vis_dim=mc["vision_cfg"]["width"], cross_attn_every_n_layers=1,
    )
    ckpt = safetensors.torch.load_file(os.path.join(root, "ckpt.safetensors"))
    missing, unexpected = model.load_state_dict(ckpt, strict=False)
    assert not unexpected, unexpected
    model.eval()
    return model, tok, transform


def run_cell(model, tok, transform, rows, batch_size=8):
    outs = []
    for b in range(0, len(rows), batch_size):
        batch = rows[b:b + batch_size]
        # evaluate.py `_prepare_images`: every prompt's images, zero-padded to the longest list.
        n_img = max(len(r["images"]) for r in batch)
        vision_x = None
        for i, r in enumerate(batch):
            for j, p in enumerate(r["images"]):
                px = transform(Image.open(p))
                if vision_x is None:
                    vision_x = torch.zeros((len(batch), n_img, 1) + px.shape, dtype=px.dtype)
                vision_x[i, j, 0] = px
        enc = tok([r["text"] for r in batch], padding="longest", truncation=True, max_length=2000,
                  return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                vision_x=vision_x, lang_x=enc["input_ids"], attention_mask=enc["attention_mask"],
                min_new_tokens=0, max_new_tokens=20, num_beams=3, length_penalty=0.0,
            )
        out = out[:, enc["input_ids"].shape[1]:]
        outs.extend(tok.batch_decode(out, skip_special_tokens=True))
    return outs


def main():
    root = sys.argv[1]
    with open(os.path.join(root, "bench_inputs.json")) as f:
        cells = json.load(f)
    torch.manual_seed(0)
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    model, tok, transform = build(root)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for shots, cell in cells.items():
        rows = cell["rows"]
        run_cell(model, tok, transform, rows[:2])  # warm-up
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            outs = run_cell(model, tok, transform, rows)
            best = min(best, time.perf_counter() - t)
        same = sum(o == r["raw"] for o, r in zip(outs, rows))
        rust_qps = cell["queries"] / cell["seconds"]
        qps = len(rows) / best
        print(f"open_flamingo (PyTorch, CPU): coco {shots}-shot, 3 beams, batch 8: {len(rows)} queries in "
              f"{best:.3f} s = {qps:.2f} queries/s; runner {rust_qps:.2f} queries/s = {rust_qps / qps:.2f}x; "
              f"identical outputs {same}/{len(rows)}")


if __name__ == "__main__":
    main()
