"""
``add_gridclip_config(cfg)``: every config key GridCLIP adds to Detectron2's defaults.

Defaults describe the paper's GridCLIP-R50 (LVIS v1 open-vocabulary, ViT-B/32 teacher); the YAML
files under ``configs/`` state only what differs.
"""
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_gridclip_config", "get_gridclip_cfg", "CLIP_PIXEL_MEAN", "CLIP_PIXEL_STD"]

# CLIP's normalisation in Detectron2's 0-255 RGB convention (mean/std of CLIP's preprocess × 255).
CLIP_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
CLIP_PIXEL_STD = [68.5005327, 66.6321579, 70.32316305]


def add_gridclip_config(cfg):
    """Add GridCLIP's keys to a Detectron2 ``CfgNode`` (in place). Safe to call twice."""
    if hasattr(cfg.MODEL, "GRIDCLIP"):
        return cfg
    _C = cfg

    # ---------------------------------------------------------------- input / model defaults
    _C.MODEL.META_ARCHITECTURE = "GridCLIP"
    _C.MODEL.BACKBONE.NAME = "build_clip_resnet_fpn_backbone"
    # CLIP's images are RGB, normalised with CLIP's mean/std.
    _C.INPUT.FORMAT = "RGB"
    _C.MODEL.PIXEL_MEAN = list(CLIP_PIXEL_MEAN)
    _C.MODEL.PIXEL_STD = list(CLIP_PIXEL_STD)

    # ---------------------------------------------------------------- CLIP image encoder (Eq. 1)
    _C.MODEL.CLIP = CN()
    # open_clip model name of the backbone CLIP (a ResNet CLIP: RN50-quickgelu, RN50x4, ..., or a
    # config registered by gridclip.modeling.clip_configs such as "GridCLIP-Tiny-RN").
    _C.MODEL.CLIP.MODEL_NAME = "RN50-quickgelu"
    # "openai" (open_clip's download/cache), a local file (state dict or OpenAI TorchScript
    # archive), or "" for random initialisation.
    _C.MODEL.CLIP.PRETRAINED = "openai"
    # Keep CLIP's attention pool (MHSA) run densely over C5 (z, z̄). False = Table 4's "R50*".
    _C.MODEL.CLIP.USE_MHSA = True
    # Where open_clip caches downloads ("" = open_clip's default, honours HF_HOME).
    _C.MODEL.CLIP.CACHE_DIR = ""
    # Norm of the CLIP ResNet trunk's BatchNorms outside the frozen stages: "FrozenBN" (fixed
    # statistics and affine, as the paper's MMDetection FCOS: norm_eval + requires_grad False),
    # "BN" (trainable, batch statistics) or "SyncBN".
    _C.MODEL.CLIP.NORM = "FrozenBN"

    # ---------------------------------------------------------------- FPN (Eq. 2)
    # Output features of the FPN; GridCLIP's head reads all five.
    _C.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    _C.MODEL.FPN.OUT_CHANNELS = 256
    # Where P6/P7 come from: "p5" (Detectron2's FCOS) or "c5" (the paper: "C5 serves as input of
    # P6, P7"; with the grid adapter this is the fused [z', C5]).
    _C.MODEL.FPN.TOP_BLOCK_IN = "p5"

    # ---------------------------------------------------------------- FCOS head / detector
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Number of conv3x3 + norm + ReLU layers in each tower (cls and box).
    _C.MODEL.FCOS.NUM_CONVS = 4
    _C.MODEL.FCOS.NORM = "GN"
    # Initial probability of foreground; sets the classification bias.
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Learnable per-level scalar on the box-regression output (MMDetection's FCOSHead ``scales``,
    # each initialised to 1.0). False = none (Detectron2's FCOS: no benefit once the targets are
    # normalised by the stride).
    _C.MODEL.FCOS.REG_SCALE = False
    # Weighting of the GIoU box loss over positive locations: "none" (Detectron2's FCOS: every
    # positive counts 1, normalised by the EMA of the number of positives) or "centerness"
    # (MMDetection's FCOSHead: weighted by each positive's centerness target, normalised by the sum
    # of those targets).
    _C.MODEL.FCOS.BOX_REG_WEIGHTING = "none"
    # Inference (paper §4.1): score threshold, candidates per level, class-wise NMS IoU.
    _C.MODEL.FCOS.SCORE_THRESH_TEST = 0.05
    _C.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    _C.MODEL.FCOS.NMS_THRESH_TEST = 0.5
    # Final score: "sqrt" = sqrt(sigmoid(cls) * sigmoid(ctr)) (Detectron2's FCOS), "product" =
    # sigmoid(cls) * sigmoid(ctr) (threshold and top-k on it), or "mmdet" = MMDetection's FCOS rule
    # (threshold and top-k on sigmoid(cls), then score = sigmoid(cls) * sigmoid(ctr), no sqrt).
    _C.MODEL.FCOS.SCORE_MODE = "sqrt"
    # Paper: 300 detections per image.
    _C.TEST.DETECTIONS_PER_IMAGE = 300

    # ---------------------------------------------------------------- GridCLIP alignments (Eq. 3, 4)
    _C.MODEL.GRIDCLIP = CN()
    # Grid-level alignment: cls branch outputs D-dim embeddings scored by cosine to text embeddings.
    # False = a plain learned linear classifier over the training vocabulary ("w/o align").
    _C.MODEL.GRIDCLIP.GRID_ALIGN = True
    # Image-level alignment: z̄ → 3 linear layers → L1 to the frozen CLIP teacher's embedding.
    _C.MODEL.GRIDCLIP.IMAGE_ALIGN = True
    _C.MODEL.GRIDCLIP.GRID_LOSS_WEIGHT = 1.0
    _C.MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT = 10.0
    # Training / test vocabularies: "" (the first TRAIN / TEST dataset's classes), "lvis" (1203),
    # "lvis_base" (866 common+frequent), "coco", "voc", a registered dataset name, or a text file
    # with one class name per line.
    _C.MODEL.GRIDCLIP.TRAIN_VOCABULARY = ""
    _C.MODEL.GRIDCLIP.TEST_VOCABULARY = ""
    # Prompt templates for text embeddings: "vild" (ViLD's 63 detection templates), "single"
    # ("a photo of a {}."), or a text file with one template per line containing "{}".
    _C.MODEL.GRIDCLIP.PROMPT_TEMPLATES = "vild"
    # ViLD's notebook (FLAGS.this_is) prefixes "This is " to every prompt that starts with "a" or
    # "the" (e.g. "This is a photo of a cat."). Off by default: the paper does not say.
    _C.MODEL.GRIDCLIP.PROMPT_THIS_IS = False
    # The CLIP whose TEXT tower embeds the class names (the class-embedding space the head's
    # embedding conv outputs into). MODEL_NAME "" = the backbone CLIP (MODEL.CLIP.MODEL_NAME with
    # MODEL.CLIP.PRETRAINED; the paper's wording). Another name (e.g. "ViT-B-32-quickgelu", 512-d,
    # the teacher's space as in ViLD) uses its own PRETRAINED ("openai", a local file, "" = random).
    _C.MODEL.GRIDCLIP.TEXT_ENCODER = CN()
    _C.MODEL.GRIDCLIP.TEXT_ENCODER.MODEL_NAME = ""
    _C.MODEL.GRIDCLIP.TEXT_ENCODER.PRETRAINED = "openai"
    # Cache folder for text embeddings ("" = $GRIDCLIP_CACHE or ~/.cache/gridclip).
    _C.MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR = ""
    # Channels of the grid adapter z → z' (3 × conv3x3, paper: 256).
    _C.MODEL.GRIDCLIP.ADAPTER_CHANNELS = 256
    # ReLU after the adapter's last conv too (the paper's wording); False = none after the last.
    _C.MODEL.GRIDCLIP.ADAPTER_FINAL_RELU = True
    # Hidden widths of the image-level head (3 linear layers z̄ → z̄'; output dim = teacher dim).
    _C.MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS = [1024, 1024]
    # Initial value of the learnable cosine-logit scale (score = scale·cos + bias).
    _C.MODEL.GRIDCLIP.LOGIT_SCALE_INIT = 1.0 / 0.07
    _C.MODEL.GRIDCLIP.LEARN_LOGIT_SCALE = True
    # Attach each detection's grid embedding (G at its location) to the output instances.
    _C.MODEL.GRIDCLIP.RETURN_GRID_EMBEDDINGS = False
    # MODEL.WEIGHTS whose parameter shapes do not fit the model (a checkpoint of another config) is
    # an error listing the parameters; True = load only the weights that fit (the rest stays random).
    _C.MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS = False

    # ---------------------------------------------------------------- inference speed-ups (exact)
    # (gridclip/modeling/inference_optimization.py, decoding.py; same detections as without them)
    _C.MODEL.GRIDCLIP.INFERENCE = CN()
    # Fold (frozen or eval-mode) BatchNorms into the preceding convs at inference (no_grad, eval
    # mode only; parameters and checkpoints are unchanged).
    _C.MODEL.GRIDCLIP.INFERENCE.FOLD_BN = True
    # Run the backbone and head in channels_last memory format at inference.
    _C.MODEL.GRIDCLIP.INFERENCE.CHANNELS_LAST = True
    # Candidate selection per level: "bound" (exact, skips pairs below the k-th best location),
    # "threshold" (the threshold bound only) or "dense" (score every pair; the reference).
    _C.MODEL.GRIDCLIP.INFERENCE.DECODER = "bound"
    # torch.compile the backbone and head for inference (opt-in; a one-off compile of about a minute
    # at R50 size on a CPU, recompiles for new input sizes).
    _C.MODEL.GRIDCLIP.INFERENCE.COMPILE = False

    # ---------------------------------------------------------------- image-level teacher
    _C.MODEL.GRIDCLIP.TEACHER = CN()
    # Frozen CLIP image encoder computed on the fly by TeacherEmbeddingHook (ViT-B/32 default;
    # "RN50x64-quickgelu" for GridCLIP-R50-RN).
    _C.MODEL.GRIDCLIP.TEACHER.MODEL_NAME = "ViT-B-32-quickgelu"
    _C.MODEL.GRIDCLIP.TEACHER.PRETRAINED = "openai"
    # Run the teacher under autocast on CUDA (fp16).
    _C.MODEL.GRIDCLIP.TEACHER.AMP = True
    # What the teacher sees of each augmented training image: "center_crop" (CLIP's own inference
    # transform: shortest side -> input size, centre crop; drops 25-45 % of a 4:3-16:9 image) or
    # "letterbox" (the whole image: longest side -> input size, padded to the square input with
    # CLIP's mean colour, i.e. 0 after normalisation), as z̄ sees the whole image.
    # Measured in the generated world (4:3 images, tools/run_ablations.py, 300 it, 1 seed): letterbox
    # 35.4 AP / 22.5 AP_r vs center_crop 35.2 / 21.7, within noise: CLIP's own transform stays default.
    _C.MODEL.GRIDCLIP.TEACHER.INPUT = "center_crop"
    # Cache teacher embeddings by (image id, flip); only valid for schedules without random crop
    # or multi-scale (the teacher's 224 input is then the same each epoch).
    _C.MODEL.GRIDCLIP.TEACHER.CACHE_EMBEDDINGS = False

    # ---------------------------------------------------------------- solver (gridclip.engine.solver)
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE also accepts "full_model": clip the global L2 norm of all
    # gradients together (torch.nn.utils.clip_grad_norm_, as MMDetection's grad_clip), besides
    # Detectron2's "value" and "norm" (which clip EACH parameter's gradient separately).
    # (SOLVER.WARMUP_METHOD "constant" / "linear" are Detectron2's and match MMDetection's warm-ups.)

    # ---------------------------------------------------------------- data
    # Your own COCO-format datasets, registered by every process that loads this config (train_net
    # and its --num-gpus workers, the predictor): a list of [name, json file, image folder].
    _C.DATASETS.COCO_FORMAT = []
    # Skip (and count, with a warning) images that fail to load during training; False = fail.
    _C.DATALOADER.SKIP_CORRUPT_IMAGES = True
    _C.INPUT.CROP.ENABLED = False
    # Random horizontal flip during training ("horizontal", "vertical" or "none").
    _C.INPUT.RANDOM_FLIP = "horizontal"

    # ---------------------------------------------------------------- evaluation
    # Which evaluator ("" = by dataset name: lvis → LVISEvaluator, coco → COCOEvaluator, voc →
    # PascalVOCDetectionEvaluator).
    _C.TEST.EVALUATOR = ""
    return cfg


def get_gridclip_cfg(config_file=None, opts=()):
    """
    Detectron2's defaults + GridCLIP's keys, then ``config_file`` (if given) and ``opts`` (a flat
    ``[KEY, VALUE, ...]`` list). Returned unfrozen.
    """
    cfg = add_gridclip_config(get_cfg())
    if config_file:
        config_file = os.fspath(config_file)
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"GridCLIP config file not found: {config_file}")
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or ()))
    return cfg
