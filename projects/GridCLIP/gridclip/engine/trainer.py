"""
``GridCLIPTrainer``: Detectron2's DefaultTrainer with GridCLIP's data loaders, the on-the-fly CLIP
teacher hook, evaluator selection by dataset, per-dataset test vocabularies and paper-style tables.
"""
import logging
import os
from collections import OrderedDict

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluators,
    PascalVOCDetectionEvaluator,
    inference_on_dataset,
    print_csv_format,
)
from detectron2.utils import comm

from ..data.build import build_gridclip_test_loader, build_gridclip_train_loader
from ..vocabulary import resolve_vocabulary
from ..evaluation import GridCLIPLVISEvaluator, format_paper_table, write_paper_table
from ..checkpoint import GridCLIPCheckpointer
from ..compat import default_trainer_restores_inner_state, detectron2_compiled_ops
from ..run_lock import OutputDirLock
from ..utils import unwrap_model
from .health import FiniteLossHook, GradientRatioHook
from .solver import build_optimizer
from .teacher_hook import TeacherEmbeddingHook

__all__ = [
    "GridCLIPTrainer",
    "build_evaluator",
    "evaluator_type_of",
    "lock_output_dir",
    "register_generated_datasets",
]

logger = logging.getLogger(__name__)


def register_generated_datasets(cfg, generate=True):
    """
    Register the generated datasets ``cfg`` names (the world's ``world_v1_*``), generating them first
    if missing and ``generate``: :func:`gridclip.world.register_config_world_datasets`. Imported when
    called, as :mod:`gridclip.world` builds on the engine.
    """
    from ..world.datasets import register_config_world_datasets

    return register_config_world_datasets(cfg, generate=generate)


def lock_output_dir(output_dir):
    """
    The main process's :class:`gridclip.run_lock.OutputDirLock` on ``output_dir`` (taken; other ranks and
    remote folders get an unheld one). A live run holding it: :class:`OutputDirLockedError` naming it.
    """
    lock = OutputDirLock(output_dir, "OUTPUT_DIR")
    if output_dir and "://" not in output_dir and comm.is_main_process():
        lock.acquire()
    return lock


def evaluator_type_of(cfg, dataset_name):
    """"lvis", "coco" or "pascal_voc": TEST.EVALUATOR if set, else the dataset's metadata / name."""
    if cfg.TEST.EVALUATOR:
        return cfg.TEST.EVALUATOR
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type:
        return evaluator_type
    for key in ("lvis", "coco", "voc"):
        if key in dataset_name:
            return "pascal_voc" if key == "voc" else key
    raise ValueError(
        f"Cannot tell which evaluator to use for dataset {dataset_name!r}: its metadata has no "
        "evaluator_type. Set TEST.EVALUATOR to 'lvis', 'coco' or 'pascal_voc'."
    )


def build_evaluator(cfg, dataset_name, output_folder=None):
    """LVISEvaluator (+ per-category AP), COCOEvaluator (fast with a compiled Detectron2) or PascalVOC, by dataset."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = evaluator_type_of(cfg, dataset_name)
    if evaluator_type == "lvis":
        # The model's test vocabulary may be a subset of the dataset's classes (Table 4's closed-set model
        # on lvis_v1_val): the evaluator maps it to the dataset's ids and names the protocol.
        return GridCLIPLVISEvaluator(
            dataset_name, tasks=("bbox",), output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            vocabulary=resolve_vocabulary(cfg.MODEL.GRIDCLIP.TEST_VOCABULARY, dataset_name),
            backend=cfg.TEST.LVIS_EVAL_BACKEND,
        )
    if evaluator_type == "coco":
        # Detectron2's fast COCO evaluator (same numbers as pycocotools, faster accumulate) is a compiled
        # op: used with a compiled Detectron2, the pycocotools path with the v0.6 sdist's placeholder.
        return COCOEvaluator(
            dataset_name, tasks=("bbox",), output_dir=output_folder,
            use_fast_impl=detectron2_compiled_ops()[0], max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    if evaluator_type == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    raise ValueError(f"Unsupported evaluator type {evaluator_type!r} for dataset {dataset_name!r}")


class GridCLIPTrainer(DefaultTrainer):
    """
    DefaultTrainer for GridCLIP. Differences from Detectron2's:

    - GridCLIP's dataset mapper / loaders (CLIP normalisation, multi-scale + crop, corrupt-image skip);
    - :class:`TeacherEmbeddingHook` when ``MODEL.GRIDCLIP.IMAGE_ALIGN`` is on (frozen CLIP teacher on
      the training device, outside the model, checkpoints, DDP and the optimizer);
    - AMP falls back to fp32 SimpleTrainer on a machine without CUDA (AMPTrainer requires CUDA);
    - evaluation sets each test dataset's vocabulary on the model and writes a paper-style table;
    - the main process holds a lock on OUTPUT_DIR from construction until ``train`` ends: a second
      training into the same folder is refused naming the first (:mod:`gridclip.run_lock`).
    """

    def __init__(self, cfg):
        if cfg.SOLVER.AMP.ENABLED and not torch.cuda.is_available():
            logger.warning("SOLVER.AMP.ENABLED is set but CUDA is not available: training in fp32.")
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.AMP.ENABLED = False
            cfg.freeze()
        # One training per OUTPUT_DIR: the main process holds its lock until train() ends (or it exits).
        self.output_lock = lock_output_dir(cfg.OUTPUT_DIR)
        try:
            super().__init__(cfg)
        except BaseException:
            self.output_lock.release()
            raise

    def train(self):
        try:
            return super().train()
        finally:
            self.output_lock.release()

    @classmethod
    def build_train_loader(cls, cfg):
        return build_gridclip_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_gridclip_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # Detectron2's SGD + CLIP_TYPE "full_model" (global-norm clipping, MMDetection's grad_clip).
        return build_optimizer(cfg, model)

    def state_dict(self):
        ret = super().state_dict()
        if "_trainer" not in ret:
            # Detectron2 v0.6's DefaultTrainer checkpoints only the iteration and hook states (main adds
            # "_trainer" itself): without it a resumed run restarts SGD momentum and the AMP grad scaler.
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        if "_trainer" not in state_dict:
            # A checkpoint of an older run (Detectron2 v0.6's DefaultTrainer did not save it); main's
            # DefaultTrainer.load_state_dict would raise KeyError, so restore what the checkpoint has.
            logger.warning("The checkpoint has no optimizer state (older run): SGD momentum restarts from zero.")
            TrainerBase.load_state_dict(self, state_dict)
            return
        super().load_state_dict(state_dict)
        if not default_trainer_restores_inner_state():
            self._trainer.load_state_dict(state_dict["_trainer"])

    def build_hooks(self):
        # Atomic, pickle-free, vocabulary-aware checkpoints (the PeriodicCheckpointer hook takes this one).
        self.checkpointer = GridCLIPCheckpointer.from_checkpointer(
            self.checkpointer, allow_text_space_mismatch=self.cfg.MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH)
        hooks = super().build_hooks()
        hooks.insert(0, FiniteLossHook(self.checkpointer))
        if self.cfg.MODEL.GRIDCLIP.IMAGE_ALIGN:
            # First, so the iterator is wrapped before any other hook's before_train runs a step.
            hooks.insert(0, TeacherEmbeddingHook(self.cfg))
            if self.cfg.MODEL.GRIDCLIP.GRADIENT_RATIO_PERIOD > 0:  # opt-in health signal (engine/health.py)
                hooks.append(GradientRatioHook(self.cfg.MODEL.GRIDCLIP.GRADIENT_RATIO_PERIOD))
        return hooks

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        Evaluate ``model`` on every ``cfg.DATASETS.TEST`` dataset, each with its own vocabulary
        (``MODEL.GRIDCLIP.TEST_VOCABULARY`` if set, else the dataset's classes). Writes
        ``paper_table.md`` per dataset under OUTPUT_DIR/inference/<dataset>/ and returns
        {dataset: results}.
        """
        if isinstance(evaluators, DatasetEvaluators):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(f"{len(cfg.DATASETS.TEST)} test datasets but {len(evaluators)} evaluators")
        detector = unwrap_model(model)
        results = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            if hasattr(detector, "set_vocabulary"):
                detector.set_vocabulary(resolve_vocabulary(cfg.MODEL.GRIDCLIP.TEST_VOCABULARY, dataset_name))
            data_loader = cls.build_test_loader(cfg, dataset_name)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, dataset_name)
            results_i = inference_on_dataset(model, data_loader, evaluator)
            results[dataset_name] = results_i
            if comm.is_main_process() and results_i:
                logger.info("Evaluation results for {} in csv format:".format(dataset_name))
                print_csv_format(results_i)
                title = getattr(evaluator, "paper_table_title", dataset_name)  # names the LVIS protocol
                table = format_paper_table(results_i, title=title)
                logger.info("Paper-style table for %s:\n%s", dataset_name, table)
                out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
                os.makedirs(out_dir, exist_ok=True)
                write_paper_table(results_i, os.path.join(out_dir, "paper_table.md"), title=title)
                if isinstance(evaluator, COCOEvaluator):  # LVIS writes its own per-category AP JSON
                    from ..evaluation.coco_per_category import write_coco_per_category_ap

                    write_coco_per_category_ap(results_i, dataset_name, out_dir)
        if len(results) == 1:
            results = list(results.values())[0]
        return results
