"""The paper presets (``fedapp/presets/<setting>.yaml``) and their scaled-down ``<setting>-tiny`` twins.

- Every preset parses and validates through :class:`RunConfig`.
- Every paper setting of FedNCAlign-ML (ML-CIFAR-10, ML-DermaMNIST, VOC 2012, ChestX-ray14, settings 1
  and 2) and of FedLoGe (CIFAR-10/100-LT at IF 50/100 x alpha 0.5/1.0, ImageNet-LT) has a preset
  holding the values its paper states, and a header whose ``# run:`` command (``--nodes`` = the
  paper's client count) parses to a valid config of that preset.
- Every paper preset has a twin and every twin a paper preset; a twin equals its paper preset except
  the keys its header lists as scaled down (``key  paper -> twin``), which must be exactly the keys
  that differ.
- Every twin runs one round, in-process, on 3 nodes, on a tiny fixture written in the dataset's
  published on-disk format (the writers of ``tests/test_datasets_real.py``), with the algorithm of
  its own ``# run:`` command, and leaves one round of finite metrics.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from flwr.common.config import parse_config_args

from fedapp.config import PRESET_DIR, RunConfig, available_presets, load_preset
from fedapp.data.chestx import CHESTX_CLASSES
from tests.conftest import assert_finished
from tests.test_datasets_real import (
    VOC_CLASSES,
    write_chestx,
    write_cifar10,
    write_cifar100,
    write_dermamnist,
    write_imagenet_lt,
    write_voc,
)

TWIN = "-tiny"
MULTILABEL = {  # FedNCAlign-ML: dataset per preset prefix, Tables 1-4
    "ml-cifar10": "ml-cifar10", "ml-dermamnist": "ml-dermamnist", "voc2012": "voc2012",
    "chestx-ray14": "chestx-ray14",
}
NCA_PRESETS = [f"{prefix}-s{setting}" for prefix in MULTILABEL for setting in (1, 2)]
LT_PRESETS = [
    f"{dataset}-if{imbalance}-alpha{alpha}"
    for dataset in ("cifar10-lt", "cifar100-lt") for imbalance in (50, 100) for alpha in ("0.5", "1.0")
]
PAPER_PRESETS = NCA_PRESETS + LT_PRESETS + ["imagenet-lt"]
TWINS = [name + TWIN for name in PAPER_PRESETS]
# What a twin may change (and documents in its header); everything else equals its paper preset.
SCALABLE = {"num-server-rounds", "local-epochs", "backbone", "fraction-fit", "fraction-evaluate", "eval-batch-size"}
SLOW_TWINS = {"ml-cifar10-s1-tiny", "ml-cifar10-s2-tiny"}  # ~47,500 composites whatever the fixture
# Fixture runs: 3 nodes, so that with rho = 0.5 some class is allowed on 2 clients and the Dirichlet
# draw of the multi-label partition matters (with 2 nodes the two allowed sets are complementary).
NODES = 3


def header(name: str) -> list[str]:
    """The leading comment lines of preset ``name``."""
    lines = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()
    comments = []
    for line in lines:
        if not line.startswith("#"):
            break
        comments.append(line)
    return comments


def run_line(name: str) -> tuple[int, dict[str, Any], list[str]]:
    """``--nodes``, the parsed ``-c`` overrides and the argv of the preset's ``# run:`` command."""
    lines = [line for line in header(name) if line.startswith("# run: ")]
    assert len(lines) == 1, f"{name}: expected one '# run:' line"
    argv = shlex.split(lines[0][len("# run: "):])
    assert argv[:3] == ["python", "-m", "fedapp.simulate"], argv
    nodes = int(argv[argv.index("--nodes") + 1])
    overrides = parse_config_args([argv[argv.index("-c") + 1]])
    return nodes, overrides, argv


def scaled_down(twin: str) -> dict[str, tuple[str, str]]:
    """``{key: (paper value, twin value)}`` from the twin header's ``#   key  a -> b`` lines."""
    lines = header(twin)
    start = next(i for i, line in enumerate(lines) if line.startswith("# Scaled down from "))
    listed = {}
    for line in lines[start + 1:]:
        match = re.fullmatch(r"#   ([a-z0-9-]+)\s+(\S+) -> (\S+)", line)
        if not match:
            break
        listed[match[1]] = (match[2], match[3])
    return listed


def as_yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


# ------------------------------------------------------------------------------------ config checks


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_parses_and_validates(name: str) -> None:
    config = RunConfig.from_run_config({"preset": name})
    for key, value in load_preset(name).items():
        assert config.to_kebab()[key] == value, f"{name}: {key} did not reach the config"


def test_every_paper_preset_has_a_twin_and_every_twin_a_paper_preset() -> None:
    names = set(available_presets())
    assert set(PAPER_PRESETS) <= names, f"missing paper presets: {sorted(set(PAPER_PRESETS) - names)}"
    twins = {n for n in names if n.endswith(TWIN)}
    assert twins == set(TWINS), (sorted(twins - set(TWINS)), sorted(set(TWINS) - twins))
    for twin in twins:
        assert twin.removesuffix(TWIN) in names


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_preset_header_and_run_command(name: str) -> None:
    lines = header(name)
    assert lines and lines[0].startswith("# "), f"{name} must start with its comment header"
    text = "\n".join(lines)
    assert "Table" in text and "Paper values:" in text and "chosen here:" in text
    nodes, overrides, argv = run_line(name)
    expected_nodes = 10 if name in NCA_PRESETS else 20 if name == "imagenet-lt" else 40
    assert nodes == expected_nodes, f"{name}: --nodes {nodes}, the paper has {expected_nodes} clients"
    assert "--engine" not in argv  # the paper commands run on Flower's simulation
    assert overrides["preset"] == name and overrides["data-root"]
    config = RunConfig.from_run_config(overrides)
    assert config.preset == name and config.algorithm == overrides["algorithm"]


@pytest.mark.parametrize("name", NCA_PRESETS)
def test_fedncalign_presets_hold_the_paper_values(name: str) -> None:
    config = RunConfig.from_run_config({"preset": name})
    prefix, setting = name.rsplit("-s", 1)
    assert config.dataset == MULTILABEL[prefix] and config.partition == "dirichlet"
    assert (config.num_server_rounds, config.local_epochs, config.batch_size) == (100, 1, 32)
    assert (config.optimizer, config.weight_decay, config.fraction_fit) == ("adamw", 0.01, 1.0)
    assert config.lambda_contrastive == 1.0 and config.lambda_rejection in (1.0, 0.01)
    assert config.backbone in ("resnet18", "resnet18-cifar") and config.val_fraction > 0
    if prefix == "voc2012":  # "each client is limited to a maximum of half the total classes"
        assert config.class_presence_ratio == 0.5
    if prefix in ("voc2012", "chestx-ray14"):  # complex backgrounds
        assert config.lambda_rejection == 0.01
    other = RunConfig.from_run_config({"preset": f"{prefix}-s{3 - int(setting)}"})
    harder, easier = (config, other) if setting == "2" else (other, config)
    assert harder.alpha < easier.alpha  # setting 2 is the more skewed one (Table 1)


@pytest.mark.parametrize("name", LT_PRESETS + ["imagenet-lt"])
def test_fedloge_presets_hold_the_paper_values(name: str) -> None:
    config = RunConfig.from_run_config({"preset": name})
    assert (config.num_server_rounds, config.optimizer, config.sparsity) == (500, "sgd", 0.6)
    assert config.partition == "dirichlet" and config.fedloge_classifier == "sse-c"
    if name == "imagenet-lt":
        assert (config.dataset, config.alpha, config.local_epochs) == ("imagenet-lt", 0.1, 3)
        assert (config.fraction_fit, config.sse_c_norm) == (0.4, 1.6)
        assert (config.many_shot_min, config.few_shot_max) == (100, 20)
        return
    match = re.fullmatch(r"(cifar10-lt|cifar100-lt)-if(\d+)-alpha([\d.]+)", name)
    assert match
    assert (config.dataset, config.imbalance_factor, config.alpha) == (match[1], float(match[2]), float(match[3]))
    assert (config.local_epochs, config.fraction_fit, config.sse_c_norm) == (5, 1.0, 1.0)


@pytest.mark.parametrize("twin", TWINS)
def test_twin_equals_its_paper_preset_but_the_documented_keys(twin: str) -> None:
    paper = twin.removesuffix(TWIN)
    paper_values = RunConfig.from_run_config({"preset": paper}).to_kebab()
    twin_values = RunConfig.from_run_config({"preset": twin}).to_kebab()
    differing = {k for k in paper_values if paper_values[k] != twin_values[k] and k != "preset"}
    listed = scaled_down(twin)
    assert set(listed) == differing, f"{twin}: documented {sorted(listed)}, differing {sorted(differing)}"
    assert differing <= SCALABLE, f"{twin} changes {sorted(differing - SCALABLE)}"
    for key, (before, after) in listed.items():
        assert (before, after) == (as_yaml_text(paper_values[key]), as_yaml_text(twin_values[key])), key
    assert (twin_values["num-server-rounds"], twin_values["local-epochs"]) == (1, 1)
    assert twin_values["backbone"] in ("cnn", paper_values["backbone"])
    nodes, overrides, _ = run_line(twin)
    assert overrides["preset"] == twin and nodes == run_line(paper)[0]
    RunConfig.from_run_config(overrides)


# ------------------------------------------------------------------------------- fixtures on disk


def _voc_fixture(rng: np.random.Generator) -> dict[str, dict[str, list[tuple[str, int]]]]:
    fixture: dict[str, dict[str, list[tuple[str, int]]]] = {"train": {}, "val": {}}
    for split, count in (("train", 40), ("val", 16)):
        for i in range(count):
            classes = rng.choice(len(VOC_CLASSES), size=int(rng.integers(1, 3)), replace=False)
            fixture[split][f"2008_{split}{i:03d}"] = [(VOC_CLASSES[c], 0) for c in classes]
    return fixture


def _chestx_rows(rng: np.random.Generator, count: int) -> dict[str, str]:
    rows = {}
    for i in range(count):
        classes = rng.choice(len(CHESTX_CLASSES), size=int(rng.integers(0, 3)), replace=False)
        rows[f"{i:08d}_000.png"] = "|".join(CHESTX_CLASSES[c] for c in classes) or "No Finding"
    return rows


def _imagenet_lists() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    wnids = [f"n{c:08d}" for c in range(10)]
    train = [(f"train/{wnids[c]}/{wnids[c]}_{j}.JPEG", c)
             for c, n in enumerate([12, 10, 8, 6, 5, 4, 3, 3, 2, 2]) for j in range(n)]
    test = [(f"val/{wnids[c]}/ILSVRC2012_val_{c:04d}{j}.JPEG", c) for c in range(10) for j in range(2)]
    return train, test


# Per dataset: how to write its tiny fixture under a root. CIFAR needs >= 100 training images per
# class (the long-tail profile takes n_max = the smallest class, IF up to 100); the loaders' own
# composite counts (ml-cifar10: 500 per class pair) do not depend on the fixture.
WRITERS: dict[str, Callable[[Path], None]] = {
    "ml-cifar10": lambda root: write_cifar10(root, per_class_per_batch=20, test_per_class=2),
    "cifar10-lt": lambda root: write_cifar10(root, per_class_per_batch=20, test_per_class=2),
    "cifar100-lt": lambda root: write_cifar100(root, train_per_class=100, test_per_class=1),
    "ml-dermamnist": lambda root: write_dermamnist(root),
    "voc2012": lambda root: write_voc(root, _voc_fixture(np.random.default_rng(0))),
    "chestx-ray14": lambda root: write_chestx(root, _chestx_rows(np.random.default_rng(1), 56), num_train=40),
    "imagenet-lt": lambda root: write_imagenet_lt(root, *_imagenet_lists()),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``data_root(dataset)``: a folder with that dataset's tiny fixture, written once per module."""
    written: dict[str, Path] = {}

    def get(dataset: str) -> Path:
        if dataset not in written:
            root = tmp_path_factory.mktemp(dataset)
            WRITERS[dataset](root)
            written[dataset] = root
        return written[dataset]

    return get


def _finite_or_none(row: dict[str, Any]) -> list[str]:
    return [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]


@pytest.mark.parametrize(
    "twin", [pytest.param(t, marks=pytest.mark.slow) if t in SLOW_TWINS else t for t in TWINS]
)
def test_twin_runs_one_round_on_a_fixture(twin: str, data_root, tmp_path: Path) -> None:
    from fedapp.inprocess import run_inprocess

    config = RunConfig.from_run_config({"preset": twin})
    _, command, _ = run_line(twin)
    run_dir = tmp_path / "run"
    overrides = {
        "preset": twin,
        "algorithm": command["algorithm"],  # the twin's own run command
        "data-root": str(data_root(config.dataset)),
        "output-dir": str(run_dir),
        "min-partition-size": 1,  # fixture-sized: a few dozen samples per client
        "local-test-size": 20,  # fixture-sized: the fixtures' test sets hold 20-100 images
    }
    run_inprocess(overrides, NODES)
    rows, summary = assert_finished(run_dir, 1)
    assert summary["rounds"] == config.num_server_rounds == 1
    row = rows[0]
    assert not row["round_skipped"] and row["clients_ok"] >= 1
    assert _finite_or_none(row) == [], f"non-finite metrics in metrics.jsonl: {_finite_or_none(row)}"
    assert any(k.startswith("train_") for k in row) and any(k.startswith("test_") for k in row)
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key, value in load_preset(twin).items():  # the twin's values reached the run
        assert written[key] == value, key
    assert json.loads((run_dir / "summary.json").read_text())["final"]
