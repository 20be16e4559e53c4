"""
Open-vocabulary transfer in the generated world, with the session's pretrained mini-CLIPs
(tests/world/conftest.py) against random-init CLIPs, on a small world split (16 categories, 3 of them
rare: never annotated in training, each a new combination of colours, textures and shapes worn by
base categories):

(b) a GridCLIP trained on the base classes with the pretrained CLIPs scores the novel categories
    better than the same run with random CLIPs: scored among the novel names, the right one wins at
    a novel object far more often;
(c) image-level alignment moves z̄' toward the teacher: cos(z̄', teacher) on held-out images rises
    over training, and not without image alignment (the trained backbone of that run under the same
    initial image head);
(d) swapping the vocabulary to the novel names only (names in no training annotation) finds those
    objects: their boxes are detected with the right novel name more often than with random CLIPs.
"""
import copy
import os
import uuid

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gridclip
from gridclip.world import generate_world_dataset, register_world_datasets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAINED_CONFIG = os.path.join(REPO, "configs", "world", "GridCLIP-World-Pretrained.yaml")
RANDOM_CONFIG = os.path.join(REPO, "configs", "GridCLIP-Tiny-Synthetic.yaml")
# the grid-level mechanism on novel *combinations* of base attributes (world v2's design: no novel-only
# shape, no unannotated novel objects; the default world's additions are measured by the ablation runner)
SMALL_WORLD = dict(num_train_images=160, num_val_images=64, image_size=(96, 96), num_categories=16,
                   num_rare=3, num_frequent=1, rare_max_train_images=2, seed=0, novel_only_shapes=(),
                   unannotated_novel_share=0.0)
SCHEDULE = ["SOLVER.MAX_ITER", "160", "SOLVER.STEPS", "(130,)", "SOLVER.WARMUP_ITERS", "20",
            "SOLVER.IMS_PER_BATCH", "4", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
            "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96", "TEST.EVAL_PERIOD", "0", "SEED", "0",
            # the paper's scoring: the world config's unseen-class offset (-0.5) was chosen on the default world's
            # held-out data, and lowering novel names would hide the novel-name transfer tested here (with it,
            # full-vocabulary novel accuracy 0.06 and exemplar top-1 0.16 here). The offset itself:
            # tests/modeling/test_unseen_class_offset.py, tests/tools/test_export_model.py.
            "MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET", "0.0"]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_world")
    paths = generate_world_dataset(str(root), **SMALL_WORLD)
    assert paths["attribute_coverage"]
    names = register_world_datasets(paths["root"], prefix=f"pytest_{uuid.uuid4().hex[:8]}_world")
    return paths, names


def _train(config_file, opts, output_dir):
    """Train in this process; returns (trained model in eval mode, its image head's initial state or None)."""
    from detectron2.utils.env import seed_all_rng

    from gridclip.engine.trainer import GridCLIPTrainer

    cfg = gridclip.get_gridclip_cfg(config_file, list(opts) + ["OUTPUT_DIR", str(output_dir)])
    cfg.freeze()
    # every RNG, as tools/train_net.py's default_setup does with SEED 0: the training sampler draws its
    # seed from numpy's global state, which otherwise depends on the tests that ran before
    seed_all_rng(0)
    trainer = GridCLIPTrainer(cfg)
    trainer.resume_or_load(resume=False)
    head = trainer.model.image_head
    initial_head = None if head is None else {k: v.clone() for k, v in head.state_dict().items()}
    trainer.train()
    return cfg, trainer.model.eval(), initial_head


@pytest.fixture(scope="module")
def runs(small_world, world_clips, tmp_path_factory):
    _, names = small_world
    out = tmp_path_factory.mktemp("transfer_runs")
    data = ["DATASETS.TRAIN", f"('{names['train_base']}',)", "DATASETS.TEST", "()",
            "MODEL.GRIDCLIP.TEST_VOCABULARY", names["val"],
            "MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR", str(out / "text_cache")]
    result = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches; two threads on a busy 2-core CPU were 5x slower per step
    try:
        _train_all(result, data, world_clips, out)
    finally:
        torch.set_num_threads(threads)
    return result


def _train_all(result, data, world_clips, out):
    result["pretrained"] = _train(PRETRAINED_CONFIG, SCHEDULE + data + world_clips.opts(), out / "pretrained")
    result["pretrained_no_image_align"] = _train(
        PRETRAINED_CONFIG, SCHEDULE + data + world_clips.opts() + ["MODEL.GRIDCLIP.IMAGE_ALIGN", "False"],
        out / "no_image_align",
    )
    result["random_init"] = _train(RANDOM_CONFIG, SCHEDULE + data, out / "random_init")


def _val_records(names):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    metadata = MetadataCatalog.get(names["val"])
    return DatasetCatalog.get(names["val"]), metadata


def _read(record):
    from detectron2.data.detection_utils import read_image

    return torch.from_numpy(np.ascontiguousarray(read_image(record["file_name"], format="RGB"))).permute(2, 0, 1)


@torch.no_grad()
def _detect(model, records, vocabulary, score_thresh=0.001):
    model.set_vocabulary(list(vocabulary))
    saved, model.test_score_thresh = model.test_score_thresh, score_thresh
    outputs = []
    try:
        for record in records:
            image = _read(record)
            inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2]}]
            outputs.append(model(inputs)[0]["instances"].to("cpu"))
    finally:
        model.test_score_thresh = saved
    return outputs


def _novel_objects(records, metadata):
    rare = {i for i, f in enumerate(metadata.class_frequencies) if f == "r"}
    return rare, [(i, a) for i, r in enumerate(records) for a in r["annotations"] if a["category_id"] in rare]


def _iou(box, boxes):
    from detectron2.structures import Boxes, BoxMode, pairwise_iou

    gt = Boxes(torch.tensor([BoxMode.convert(box, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)], dtype=torch.float32))
    return pairwise_iou(gt, boxes)[0]


def _novel_accuracy(model, records, metadata):
    """
    Over the novel GT objects: the fraction whose best-scoring overlapping detection (IoU >= 0.5, all
    classes in the vocabulary) carries the right novel name. Rank-based: a model that scores every
    class alike at an object (random text embeddings of names sharing words) gets no credit.
    """
    _, objects = _novel_objects(records, metadata)
    detections = _detect(model, records, metadata.thing_classes)
    correct = []
    for image_index, annotation in objects:
        inst = detections[image_index]
        if not len(inst):
            correct.append(False)
            continue
        overlap = _iou(annotation["bbox"], inst.pred_boxes) >= 0.5
        if not overlap.any():
            correct.append(False)
            continue
        best = inst.scores.masked_fill(~overlap, -1.0).argmax()
        correct.append(int(inst.pred_classes[best]) == annotation["category_id"])
    return float(np.mean(correct)), len(correct)


@torch.no_grad()
def _image_alignment_cosine(backbone_model, head, records, teacher):
    """Mean cos(z̄', teacher embedding) over ``records``: z̄ from ``backbone_model``, z̄' = ``head``(z̄)."""
    from gridclip.modeling.clip_backbone import IMAGE_EMBEDDING_KEY

    images = [_read(r) for r in records]
    batched = backbone_model.preprocess_image([{"image": im} for im in images])
    z_bar = backbone_model.backbone(batched.tensor)[IMAGE_EMBEDDING_KEY]
    student = F.normalize(head.eval()(z_bar), dim=-1)
    target = F.normalize(teacher.encode(images).float(), dim=-1)
    return float((student * target).sum(dim=-1).mean())


def _with_state(head, state):
    head = copy.deepcopy(head)
    head.load_state_dict(state)
    return head


def test_image_alignment_moves_image_embedding_toward_teacher(runs, small_world, world_clips):
    from gridclip.world.pretraining import TEACHER_CLIP
    from gridclip.modeling.teacher import CLIPImageTeacher

    _, names = small_world
    records, _ = _val_records(names)
    teacher = CLIPImageTeacher(TEACHER_CLIP, world_clips.teacher_path)
    _, model, initial_state = runs["pretrained"]
    initial_head = _with_state(model.image_head, initial_state)
    before = _image_alignment_cosine(model, initial_head, records, teacher)
    after = _image_alignment_cosine(model, model.image_head, records, teacher)
    # the run without image alignment has no image head: its trained backbone under the same initial head
    _, unaligned_model, _ = runs["pretrained_no_image_align"]
    assert unaligned_model.image_head is None
    unaligned = _image_alignment_cosine(unaligned_model, initial_head, records, teacher)
    print(f"cos(z̄', teacher): before {before:.3f}, after {after:.3f}, without image alignment {unaligned:.3f}")
    assert after > before + 0.15, (before, after)
    assert after > unaligned + 0.15, (unaligned, after)


def _novel_recall(model, records, metadata):
    """Fraction of novel GT objects found (IoU >= 0.5, right name) among each image's top detections, novel vocabulary only."""
    rare, objects = _novel_objects(records, metadata)
    rare = sorted(rare)
    vocabulary = [metadata.thing_classes[c] for c in rare]
    by_image = {}
    for image_index, annotation in objects:
        by_image.setdefault(image_index, []).append(annotation)
    chosen = sorted(by_image)
    detections = _detect(model, [records[i] for i in chosen], vocabulary)
    found = 0
    for image_index, inst in zip(chosen, detections):
        annotations = by_image[image_index]
        top = inst[inst.scores.argsort(descending=True)[: 2 * len(annotations)]]
        for annotation in annotations:
            label = rare.index(annotation["category_id"])
            ok = (top.pred_classes == label) & (_iou(annotation["bbox"], top.pred_boxes) >= 0.5) if len(top) else []
            found += int(len(top) > 0 and bool(ok.any()))
    return found / max(1, len(objects))


@pytest.fixture(scope="module")
def novel_metrics(runs, small_world):
    _, names = small_world
    records, metadata = _val_records(names)
    metrics = {}
    for run in ("pretrained", "random_init"):
        model = runs[run][1]
        metrics[run] = {"novel_only_recall": _novel_recall(model, records, metadata)}
        metrics[run]["full_vocabulary_accuracy"], metrics[run]["num_novel_objects"] = _novel_accuracy(
            model, records, metadata)
    print(f"novel metrics: {metrics}")
    return metrics


def test_pretrained_clips_score_novel_categories_better_than_random(novel_metrics):
    # Scored among the novel names (never annotated in training), the right name wins at a novel
    # object twice as often with the pretrained CLIPs. Measured when written: 0.80 vs 0.29 and 0.69 vs
    # 0.34 in two runs (0.61 vs 0.44 with a weaker fixture CLIP); with the current fixture and seeded
    # trainings 0.83 vs 0.31 (0.49 vs 0.37 when its corpus had 70 % single objects, as make demo's); with the
    # RN teacher (world v3's) 0.74 vs 0.29. With all 16 names in the
    # vocabulary the gap is small at this scale (0.31-0.40 vs 0.23-0.37: base names win most novel
    # objects); `make demo` has AP_r 26.8 vs 2.1.
    pretrained, random_init = (novel_metrics[r]["novel_only_recall"] for r in ("pretrained", "random_init"))
    assert novel_metrics["pretrained"]["num_novel_objects"] >= 16
    assert pretrained > random_init + 0.15, novel_metrics


def test_novel_only_vocabulary_finds_never_annotated_objects(novel_metrics):
    # Swapping the vocabulary to the 3 novel names finds most novel objects with the right name among
    # each image's top detections (measured 0.69-0.80 with earlier fixtures; now 0.83 on Detectron2 v0.6
    # and main alike). With all 16 names, base names win most novel objects at this scale: the best
    # detection at a novel object carries its novel name above the 1/16 chance, by a margin that varied
    # from 0.11 to 0.40 over fixtures and runs (now 0.11; random CLIPs 0.0).
    assert novel_metrics["pretrained"]["novel_only_recall"] >= 0.45, novel_metrics
    assert novel_metrics["pretrained"]["full_vocabulary_accuracy"] > 1 / 16, novel_metrics


def test_exemplars_of_novel_categories_find_them_far_better_than_chance(runs, small_world, tmp_path):
    # One image exemplar per novel category, from one val image each (gridclip.world.exemplar_eval); on
    # the other val images, with the base names as text and the novel categories as exemplars, the best
    # detection at a novel object carries its exemplar's name far above the 1/16 chance (text names at
    # this scale: 0.11, see above).
    from gridclip import GridCLIPPredictor
    from gridclip.file_io import read_json
    from gridclip.world.exemplar_eval import evaluate_queries

    paths, _ = small_world
    cfg = runs["pretrained"][0]
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    gt = read_json(paths["val_json"])
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    predictor = GridCLIPPredictor(str(config), os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), vocabulary=names,
                                  device="cpu", confidence_threshold=0.001)
    result = evaluate_queries(predictor, gt, paths["root"], modes=("exemplars",))
    print(f"exemplar queries: {result}")
    assert result["protocol"]["novel_categories"] == 3 and result["exemplars"]["novel_objects"] >= 10
    assert result["exemplars"]["novel_top1"] >= 4 / len(names), result


def _naming(model, records, metadata, score_threshold):
    """gridclip.evaluation.naming over the val objects, one name per object as the demo pictures draw them."""
    from gridclip.evaluation.naming import naming_accuracy

    detections = _detect(model, records, metadata.thing_classes, score_thresh=score_threshold)
    xyxy = [[[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
             for a in r["annotations"]] for r in records]
    return naming_accuracy(
        xyxy, [[a["category_id"] for a in r["annotations"]] for r in records],
        [d.pred_boxes.tensor.numpy() for d in detections], [d.scores.numpy() for d in detections],
        [d.pred_classes.numpy() for d in detections], score_threshold=score_threshold,
        novel_classes=[i for i, f in enumerate(metadata.class_frequencies) if f == "r"], one_name_per_object_iou=0.5,
    )


def test_demo_names_what_it_boxes_far_above_chance(runs, small_world):
    # What a picture shows: every val object's best-overlapping drawn detection (score >= 0.1, one name per
    # object) carries its name, among all 16 names (chance 1/16 = 6 %). Base objects were trained on; with
    # random CLIPs the same schedule names almost nothing. Measured when written (fixture CLIPs, 160
    # iterations): base 0.61 (113 / 185) against 0.05 with random CLIPs; novel 0.20 against 0.0.
    _, names = small_world
    records, metadata = _val_records(names)
    pretrained = _naming(runs["pretrained"][1], records, metadata, 0.1)
    random_init = _naming(runs["random_init"][1], records, metadata, 0.1)
    print(f"naming accuracy: pretrained {pretrained['base']} / {pretrained['novel']}, "
          f"random init {random_init['base']} / {random_init['novel']}")
    assert pretrained["base"]["objects"] >= 100
    assert pretrained["base"]["accuracy"] >= 4 / 16, pretrained
    assert pretrained["base"]["accuracy"] > random_init["base"]["accuracy"] + 0.15, (pretrained, random_init)


def test_novel_knowledge_measures_what_the_pretrained_clip_brings(runs, small_world, tmp_path):
    # gridclip.world.novel_knowledge (the Table 5 verdict's measurements): the pretrained run's grid embeddings
    # at ground-truth boxes and its attention pool's z̄ name objects far above chance (1/16) and far above
    # the random-init run's; "" weights measure the untrained detector, i.e. its CLIP's own attention pool.
    from gridclip.file_io import read_json
    from gridclip.world.novel_knowledge import novel_knowledge

    paths, _ = small_world
    gt = read_json(paths["val_json"])
    results = {}
    for run in ("pretrained", "random_init"):
        cfg = runs[run][0]
        config = tmp_path / f"{run}.yaml"
        config.write_text(cfg.dump())
        results[run] = novel_knowledge(str(config), os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), paths["val_json"],
                                       paths["val_images"], novel_only_shapes=())
    untrained = novel_knowledge(str(tmp_path / "pretrained.yaml"), "", paths["val_json"], paths["val_images"],
                                novel_only_shapes=())
    print(f"novel knowledge: {results}, untrained {untrained}")
    grid, pool = results["pretrained"]["grid_embedding_at_gt_boxes"], results["pretrained"]["attention_pool"]
    assert grid["base"]["objects"] == sum(c["frequency"] != "r" for c in gt["categories"] for a in gt["annotations"]
                                          if a["category_id"] == c["id"])
    assert grid["base"]["top1"] > 3 / 16 and pool["base"]["top1"] > 2 / 16, results
    assert grid["base"]["top1"] > results["random_init"]["grid_embedding_at_gt_boxes"]["base"]["top1"] + 0.15, results
    assert untrained["grid_embedding_at_gt_boxes"] is None and untrained["attention_pool"]["novel"]["objects"] == 3 * 4


def test_kept_checkpoints_are_evaluated_as_train_net_eval_only_does(runs, small_world, world_clips, tmp_path):
    # gridclip.world.training.evaluate_all (the ablation runner's way of adding a protocol to a finished run)
    # evaluates a kept model_final.pth on the LVIS protocol: the pretrained run beats the random-init run
    # on the novel categories, and the per-category AP lands under the evaluation's own OUTPUT_DIR.
    from gridclip.world.training import evaluate_all

    _, names = small_world
    results = {}
    for run, config, extra in (("pretrained", PRETRAINED_CONFIG, world_clips.opts()), ("random_init", RANDOM_CONFIG, [])):
        weights = os.path.join(runs[run][0].OUTPUT_DIR, "model_final.pth")
        out = tmp_path / run
        opts = SCHEDULE + extra + ["DATASETS.TEST", f"('{names['val']}',)", "OUTPUT_DIR", str(out)]
        _, by_dataset = evaluate_all(config, opts, weights)
        results[run] = by_dataset[names["val"]]
        assert (out / "inference" / names["val"] / "per_category_ap.json").is_file()
    print(f"evaluate_all: {results}")
    assert results["pretrained"]["APr"] > results["random_init"]["APr"] + 5, results
