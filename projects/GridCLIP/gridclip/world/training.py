"""
One detector training + evaluation in this process, as ``tools/train_net.py`` runs it: the shared
step of the embedded default (:mod:`.embedded_default`) and the ablation runner (:mod:`.ablations`).
"""
from ..engine.defaults import argument_parser, load_config, setup, train_or_evaluate
from ..engine.trainer import GridCLIPTrainer

__all__ = ["train_args", "load_run_config", "train_and_evaluate_all", "evaluate_all", "train_and_evaluate",
           "lvis_metrics"]

#: the LVIS metrics a run reports (summary.json, the random-init cache)
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def train_args(config_file, opts):
    """The parsed command line ``tools/train_net.py --config-file <config_file> <opts>``."""
    return argument_parser().parse_args(["--config-file", config_file] + list(opts))


def load_run_config(config_file, opts):
    """The config of ``config_file`` + ``opts`` as train_net loads it (not frozen; no set-up done)."""
    return load_config(train_args(config_file, opts))


def train_and_evaluate_all(config_file, opts):
    """
    Train ``config_file`` + ``opts`` with GridCLIPTrainer (after Detectron2's default_setup: logging,
    OUTPUT_DIR, config dump, seed).

    Returns:
        (cfg, dict): the frozen config and {test dataset name: its LVIS bbox results} for every
        dataset of ``cfg.DATASETS.TEST``, each evaluated with its own vocabulary.
    """
    cfg = setup(train_args(config_file, opts))
    trainer = GridCLIPTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # DefaultTrainer's final EvalHook stores the results of the evaluation at the end of training.
    return cfg, _results_by_dataset(cfg, getattr(trainer, "_last_eval_results", None))


def evaluate_all(config_file, opts, weights):
    """
    Evaluate the checkpoint ``weights`` of ``config_file`` + ``opts`` on every dataset of its DATASETS.TEST,
    as ``tools/train_net.py --eval-only MODEL.WEIGHTS <weights>`` does (outputs under its OUTPUT_DIR).

    Returns:
        (cfg, dict): as :func:`train_and_evaluate_all`.
    """
    args = argument_parser().parse_args(["--config-file", config_file, "--eval-only"]
                                        + list(opts) + ["MODEL.WEIGHTS", weights])
    cfg = load_config(args)
    return cfg, _results_by_dataset(cfg, train_or_evaluate(args))


def _results_by_dataset(cfg, results):
    """{test dataset name: its bbox results} from DefaultTrainer.test's results (one dataset: not keyed)."""
    if not results:
        raise SystemExit("Finished without evaluation results (is DATASETS.TEST empty?).")
    if len(cfg.DATASETS.TEST) == 1 and cfg.DATASETS.TEST[0] not in results:
        results = {cfg.DATASETS.TEST[0]: results}
    return {name: results[name].get("bbox", results[name]) for name in cfg.DATASETS.TEST}


def train_and_evaluate(config_file, opts):
    """As :func:`train_and_evaluate_all`; returns (cfg, LVIS results of the first test set)."""
    cfg, results = train_and_evaluate_all(config_file, opts)
    return cfg, results[cfg.DATASETS.TEST[0]]


def lvis_metrics(results):
    """The :data:`SUMMARY_KEYS` of LVIS results, rounded to 3 decimals."""
    return {k: round(float(results[k]), 3) for k in SUMMARY_KEYS if k in results}
