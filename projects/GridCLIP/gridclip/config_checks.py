"""
Range checks of a GridCLIP config, made where a model or a run is built (``GridCLIP.from_config``,
``tools/train_net.py``'s ``load_config``, ``GridCLIPPredictor`` and so ``tools/demo.py``), and the
``_BASE_`` chain check made before a config file is merged (``get_gridclip_cfg``).

Detectron2 takes any number for a threshold or a size: a negative score threshold is squared away in
"sqrt" mode, NMS thresholds of -0.5 or 1.5 run, ``TOPK_CANDIDATES_TEST 0`` ends in a ``kthvalue``
traceback, ``SOLVER.IMS_PER_BATCH 0`` in an AssertionError, a ``_BASE_`` cycle in a RecursionError.
Here each is one :class:`ConfigValueError` line naming the key, the value and the accepted range.
"""
import math
import os

import yaml

__all__ = ["ConfigValueError", "MODEL_CHECKS", "RUN_CHECKS", "check_config", "check_base_chain"]

BASE_KEY = "_BASE_"


class ConfigValueError(ValueError):
    """A config value outside its range, or a broken ``_BASE_`` chain; the message is one line naming the key."""


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _in(low, high, low_open=False, high_open=False):
    def check(value):
        if not _number(value):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return above and below
    return check


def _int_at_least(low):
    return lambda value: _integer(value) and value >= low


def _each(check):
    return lambda values: isinstance(values, (list, tuple)) and len(values) > 0 and all(check(v) for v in values)


def _three_positive(values):
    return isinstance(values, (list, tuple)) and len(values) == 3 and all(_number(v) and v > 0 for v in values)


_INF = float("inf")

#: (key, check, what the value must be) for every config that builds a model (training or inference)
MODEL_CHECKS = (
    ("MODEL.FCOS.SCORE_THRESH_TEST", _in(0.0, 1.0, high_open=True), "a score threshold in [0, 1)"),
    ("MODEL.FCOS.NMS_THRESH_TEST", _in(0.0, 1.0, low_open=True), "an NMS IoU threshold in (0, 1]"),
    ("MODEL.FCOS.TOPK_CANDIDATES_TEST", _int_at_least(1), "an integer >= 1 (candidates kept per level)"),
    ("TEST.DETECTIONS_PER_IMAGE", _int_at_least(1), "an integer >= 1"),
    ("MODEL.FCOS.PRIOR_PROB", _in(0.0, 1.0, True, True), "a probability in (0, 1)"),
    ("MODEL.FCOS.FOCAL_LOSS_ALPHA", lambda v: v == -1 or _in(0.0, 1.0)(v), "in [0, 1], or -1 for no weighting"),
    ("MODEL.FCOS.FOCAL_LOSS_GAMMA", _in(0.0, _INF), "a number >= 0"),
    ("MODEL.FCOS.CENTER_SAMPLING_RADIUS", _in(0.0, _INF), "a number >= 0"),
    ("MODEL.FCOS.NUM_CONVS", _int_at_least(0), "an integer >= 0"),
    ("MODEL.GRIDCLIP.LOGIT_SCALE_INIT", _in(0.0, _INF, low_open=True), "a number > 0"),
    ("MODEL.GRIDCLIP.GRID_LOSS_WEIGHT", _in(0.0, _INF), "a number >= 0"),
    ("MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT", _in(0.0, _INF), "a number >= 0"),
    ("MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET", _number, "a finite number (0 = the paper)"),
    ("MODEL.PIXEL_STD", _three_positive, "three numbers > 0"),
    ("INPUT.MIN_SIZE_TEST", _int_at_least(0), "an integer >= 0 (the test-time short side, pixels; 0 = no resize)"),
    ("INPUT.MAX_SIZE_TEST", _int_at_least(1), "an integer >= 1 (the test-time long-side limit, pixels)"),
)

#: checked in addition for a run (``tools/train_net.py``: training or evaluation)
RUN_CHECKS = (
    ("MODEL.GRIDCLIP.TEACHER.INPUT_SIZE", _int_at_least(0),
     "an integer >= 0 (the side of the teacher's square input, a multiple of its stride; 0 = its model's own)"),
    ("MODEL.GRIDCLIP.TEACHER.CROPS", lambda value: _integer(value) and value != 1 and value >= 0,
     "0 (the teacher embeds the whole image only) or an integer >= 2 (also a k x k grid of crops)"),
    ("SOLVER.IMS_PER_BATCH", _int_at_least(1), "an integer >= 1 (images per batch, all processes)"),
    ("SOLVER.MAX_ITER", _int_at_least(1), "an integer >= 1"),
    ("SOLVER.BASE_LR", _in(0.0, _INF, low_open=True), "a finite number > 0"),
    ("SOLVER.MOMENTUM", _in(0.0, 1.0, high_open=True), "in [0, 1)"),
    ("SOLVER.WEIGHT_DECAY", _in(0.0, _INF), "a number >= 0"),
    ("SOLVER.GAMMA", _in(0.0, _INF, low_open=True), "a number > 0"),
    ("SOLVER.STEPS", lambda v: isinstance(v, (list, tuple)) and all(_int_at_least(0)(s) for s in v),
     "a list of iterations >= 0"),
    ("SOLVER.WARMUP_ITERS", _int_at_least(0), "an integer >= 0"),
    ("SOLVER.WARMUP_FACTOR", _in(0.0, 1.0), "in [0, 1]"),
    ("SOLVER.CHECKPOINT_PERIOD", _int_at_least(1), "an integer >= 1"),
    ("DATALOADER.NUM_WORKERS", _int_at_least(0), "an integer >= 0"),
    ("TEST.EVAL_PERIOD", _int_at_least(0), "an integer >= 0 (0 = only at the end)"),
    ("INPUT.MIN_SIZE_TRAIN", _each(_int_at_least(0)), "integers >= 0 (training short sides, pixels; 0 = no resize)"),
    ("INPUT.MAX_SIZE_TRAIN", _int_at_least(1), "an integer >= 1"),
)

_MISSING = object()


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError):
            return _MISSING
    return node


def check_config(cfg, training=True):
    """
    Refuse out-of-range config values with one line naming the key, its value and the range.

    Args:
        cfg: a GridCLIP ``CfgNode`` (keys it lacks are skipped).
        training: also check the run's keys (:data:`RUN_CHECKS`: solver, batch sizes, data loader);
            False checks what building and running a model needs (:data:`MODEL_CHECKS`), e.g. for
            the predictor and the demo.

    Raises:
        ConfigValueError: the first value out of range.
    """
    checks = MODEL_CHECKS + (RUN_CHECKS if training else ())
    for key, check, expected in checks:
        value = _get(cfg, key)
        if value is _MISSING:
            continue
        if not check(value):
            raise ConfigValueError(f"Config value {key} = {value!r} is out of range: it must be {expected}.")
    return cfg


def _base_files(config_file):
    """The ``_BASE_`` files ``config_file`` names, resolved as fvcore's ``load_yaml_with_base`` does."""
    try:
        with open(config_file, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except yaml.YAMLError:
        return []  # the merge reports the syntax error with its line
    if not isinstance(loaded, dict) or BASE_KEY not in loaded:
        return []
    bases = loaded[BASE_KEY]
    bases = bases if isinstance(bases, list) else [bases]
    resolved = []
    for base in bases:
        if not isinstance(base, str) or not base.strip():
            raise ConfigValueError(f"Config {config_file}: {BASE_KEY} must name config files, got {base!r}.")
        if base.startswith("~"):
            base = os.path.expanduser(base)
        if not base.startswith(("/", "https://", "http://")):
            base = os.path.join(os.path.dirname(config_file), base)
        resolved.append(base)
    return resolved


def check_base_chain(config_file):
    """
    Follow ``config_file``'s ``_BASE_`` chain before it is merged: a cycle (a file that is its own base,
    directly or through others) or a missing base file is one line naming the files.

    Raises:
        ConfigValueError: a cycle.
        FileNotFoundError: a base file that does not exist (naming the config that names it).
    """
    def visit(path, chain):
        real = os.path.realpath(path)
        if real in chain:
            names = [os.path.relpath(p) for p in list(chain)[list(chain).index(real):]] + [os.path.relpath(real)]
            raise ConfigValueError(
                f"Config {BASE_KEY} cycle: {' -> '.join(names)}; a config cannot be its own base. Remove one "
                f"of these {BASE_KEY} entries."
            )
        for base in _base_files(path):
            if base.startswith(("https://", "http://")):
                continue
            if not os.path.isfile(base):
                raise FileNotFoundError(f"Config {path} names {BASE_KEY} {base}, which does not exist.")
            visit(base, {**chain, real: None})

    visit(os.fspath(config_file), {})
