"""Every config under configs/ loads, and builds with random weights, as the paper row it names."""
import glob
import os

import pytest
import torch
from detectron2.modeling import build_model

import gridclip
from gridclip.modeling.text import cache as text_cache
from gridclip.modeling.text.encoding import clip_text_embed_dim
from gridclip.modeling.image_head import teacher_embed_dim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


def load(path, opts=()):
    return gridclip.get_gridclip_cfg(os.path.join(REPO, path), opts)


@pytest.fixture
def fake_text_embeddings(monkeypatch):
    """Random unit vectors instead of running the RN50 text tower over 1203 classes x 63 prompts (hours on CPU).
    The real embeddings are tested in tests/modeling/test_text_embeddings.py."""
    calls = []

    def fake(class_names, clip_model_name, *args, **kwargs):
        calls.append((clip_model_name, len(class_names)))
        dim = clip_text_embed_dim(clip_model_name)
        generator = torch.Generator().manual_seed(len(class_names))
        return torch.nn.functional.normalize(torch.randn(len(class_names), dim, generator=generator), dim=1)

    monkeypatch.setattr(text_cache, "load_text_embeddings", fake)
    return calls


def test_all_expected_configs_exist():
    expected = {
        "configs/GridCLIP-R50-FPN-2x.yaml",
        "configs/GridCLIP-R50-RN-FPN-2x.yaml",
        "configs/GridCLIP-Tiny-Synthetic.yaml",
        "configs/transfer/GridCLIP-R50-COCO.yaml",
        "configs/transfer/GridCLIP-R50-VOC.yaml",
    }
    assert expected <= set(CONFIGS)
    assert len([c for c in CONFIGS if c.startswith("configs/ablations/")]) == 9  # 7 rows of Table 4, 2 of Table 5


# Configs on generated data (the embedded default, configs/world/) need that data registered: tested
# with their runners.
@pytest.mark.parametrize("path", [c for c in CONFIGS if "Tiny-Synthetic" not in c and "/world/" not in c])
def test_config_loads_and_builds(path, fake_text_embeddings):
    cfg = load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "GridCLIP"
    assert cfg.OUTPUT_DIR.startswith("./output/")
    # Random weights, CPU; the architecture is the config's own.
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CLIP.PRETRAINED", "", "MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    assert len(model.train_class_names) == {
        "lvis_v1_train_base": 866, "lvis_v1_train_cf": 866
    }[cfg.DATASETS.TRAIN[0]]
    test_set = cfg.DATASETS.TEST[0]
    expected_test = {"lvis_v1_val": 1203, "lvis_v1_val_cf": 866, "coco_2017_val": 80, "voc_2007_test": 20}[test_set]
    if cfg.DATASETS.TRAIN[0] == "lvis_v1_train_cf":
        expected_test = 866  # Table 4: the closed-set model scores its own classes (rare at AP 0)
    assert len(model.test_class_names) == expected_test
    if cfg.MODEL.GRIDCLIP.IMAGE_ALIGN:
        assert model.teacher_dim == teacher_embed_dim(cfg.MODEL.GRIDCLIP.TEACHER.MODEL_NAME)
    else:
        assert model.teacher_dim is None
    if cfg.MODEL.BACKBONE.NAME == "build_clip_resnet_fpn_backbone":
        has_pool = any("attnpool" in name for name, _ in model.backbone.named_parameters())
        assert has_pool == cfg.MODEL.CLIP.USE_MHSA


def test_paper_rows_differ_only_where_the_paper_says():
    rn = load("configs/GridCLIP-R50-RN-FPN-2x.yaml")
    assert rn.MODEL.GRIDCLIP.TEACHER.MODEL_NAME == "RN50x64-quickgelu"
    main = load("configs/GridCLIP-R50-FPN-2x.yaml")
    assert main.MODEL.GRIDCLIP.TEACHER.MODEL_NAME == "ViT-B-32-quickgelu"
    assert main.SOLVER.IMS_PER_BATCH == 16 and main.SOLVER.MAX_ITER == 24 * 6261
    assert len(main.INPUT.MIN_SIZE_TRAIN) > 1 and main.INPUT.CROP.ENABLED
    switches = {
        "T4-GridCLIP-R50-wo-align": (False, False),
        "T4-GridCLIP-R50-grid-align": (True, False),
        "T4-GridCLIP-R50-image-align": (False, True),
        "T4-GridCLIP-R50": (True, True),
        "T5-GridCLIP-R50-grid-align": (True, False),
        "T5-GridCLIP-R50": (True, True),
    }
    for name, (grid, image) in switches.items():
        cfg = load(f"configs/ablations/{name}.yaml")
        assert (cfg.MODEL.GRIDCLIP.GRID_ALIGN, cfg.MODEL.GRIDCLIP.IMAGE_ALIGN) == (grid, image), name
        # Ablations: no multi-scale, no crop (paper §4.3).
        assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and not cfg.INPUT.CROP.ENABLED, name
        # Every paper table evaluates on lvis_v1_val; Table 4's closed-set model with its own 866
        # classes as the test vocabulary (the paper's protocol: rare categories score AP 0).
        assert cfg.DATASETS.TEST[0] == "lvis_v1_val", name
        closed = name.startswith("T4")
        assert cfg.MODEL.GRIDCLIP.TEST_VOCABULARY == ("lvis_v1_train_cf" if closed else ""), name
        # P6/P7 from [z', C5] in every paper config (paper: "C5 serves as the input of P6, P7")
        assert cfg.MODEL.FPN.TOP_BLOCK_IN == "c5", name
    star = load("configs/ablations/T4-GridCLIP-R50star-wo-align.yaml")
    assert not star.MODEL.CLIP.USE_MHSA
    for transfer in ("COCO", "VOC"):
        cfg = load(f"configs/transfer/GridCLIP-R50-{transfer}.yaml")
        assert cfg.MODEL.FCOS.NMS_THRESH_TEST == 0.6
        assert cfg.MODEL.GRIDCLIP.TEST_VOCABULARY == transfer.lower()


def test_get_gridclip_cfg_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="GridCLIP config file not found: .*nope.yaml"):
        gridclip.get_gridclip_cfg(str(tmp_path / "nope.yaml"))
    cfg = gridclip.get_gridclip_cfg(opts=["MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT", "3.0"])
    assert cfg.MODEL.META_ARCHITECTURE == "GridCLIP" and cfg.MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT == 3.0


def test_closed_set_configs_use_the_paper_protocol():
    """Table 4 configs: c+f training, lvis_v1_val with the 866 training classes; the evaluator then
    scores all categories and rare ones count as AP 0 (a named protocol in the written table)."""
    from gridclip.vocabulary import resolve_vocabulary
    from gridclip.engine.trainer import build_evaluator

    cfg = load("configs/ablations/T4-GridCLIP-R50-wo-align.yaml")
    vocabulary = resolve_vocabulary(cfg.MODEL.GRIDCLIP.TEST_VOCABULARY, cfg.DATASETS.TEST[0])
    assert vocabulary == resolve_vocabulary("", cfg.DATASETS.TRAIN[0]) and len(vocabulary) == 866
    from gridclip.evaluation.lvis_evaluation import vocabulary_to_dataset_index
    from detectron2.data import MetadataCatalog

    val = MetadataCatalog.get("lvis_v1_val")
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    # what the evaluator reads from the GT json: each category's name and synonyms
    synonyms = [[c["name"]] + c["synonyms"] for c in sorted(LVIS_CATEGORIES, key=lambda c: c["id"])]
    to_val = vocabulary_to_dataset_index(vocabulary, val.thing_classes, "lvis_v1_val", synonyms)
    assert len(set(to_val.tolist())) == 866  # every class found (Detectron2 names "bull" "horned_cow")
    assert {sorted(LVIS_CATEGORIES, key=lambda c: c["id"])[i]["frequency"] for i in to_val.tolist()} == {"c", "f"}
    try:
        evaluator = build_evaluator(cfg, cfg.DATASETS.TEST[0], output_folder="/nonexistent")
    except FileNotFoundError:
        pytest.skip("lvis_v1_val.json is not installed (the evaluator reads the GT json)")
    assert evaluator.protocol["name"] == "all-categories" and evaluator.protocol["unpredictable"] == 337


def test_count_parameters_finds_the_paper_count(fake_text_embeddings):
    """gridclip.analysis.parameters (tools/count_parameters.py): P6/P7 from [z', C5] with 512-d class
    embeddings is within 0.2 % of the paper's 56.4 M (Table 2); the 1024-d paper config is not."""
    from gridclip.analysis.parameters import PAPER_VARIANTS, count_paper_variants

    variants = [v for v in PAPER_VARIANTS if v[1].endswith(("FPN-2x.yaml", "FPN-2x-512d.yaml")) and not v[2]]
    counts = {config: (n, n_mmdet) for _, config, _, n, n_mmdet in count_paper_variants(variants, repo_root=REPO)}
    n_512, n_512_mmdet = counts["configs/GridCLIP-R50-FPN-2x-512d.yaml"]
    assert abs(n_512 - 56.4e6) / 56.4e6 < 0.002 and abs(n_512_mmdet - 56.4e6) / 56.4e6 < 0.002
    n_1024, _ = counts["configs/GridCLIP-R50-FPN-2x.yaml"]
    assert abs(n_1024 - 56.4e6) / 56.4e6 > 0.02
    assert n_1024 - n_512 == 256 * 512 * 9 + 512  # only the embedding conv (3x3, 256 -> D) differs
