"""
``add_gridclip_config(cfg)``: every config key GridCLIP adds to Detectron2's defaults, and every
Detectron2 default it changes.

This file is the one place the keys are documented: one comment per key with its meaning, its
default and, where the paper (or its MMDetection code base) fixes or leaves open a choice, which
choice the default is and which value gives the alternative. The documentation links here instead of
repeating key lists; docs/PAPER.md explains the open choices.

Defaults describe the paper's GridCLIP-R50 (LVIS v1 open-vocabulary, ViT-B/32 teacher) where the
paper fixes a value, Detectron2's FCOS elsewhere; the YAML files under ``configs/`` state only what
differs (the paper configs, e.g., set ``MODEL.FPN.TOP_BLOCK_IN "c5"``).
"""
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .config_checks import check_base_chain

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
    # The detector: "GridCLIP" (gridclip/modeling/meta_arch.py), Detectron2's FCOS with grid- and
    # image-level alignment (paper §3).
    _C.MODEL.META_ARCHITECTURE = "GridCLIP"
    # CLIP ResNet trunk + dense attention pool + grid adapter + FPN (Eq. 1, 2;
    # gridclip/modeling/clip_backbone.py).
    _C.MODEL.BACKBONE.NAME = "build_clip_resnet_fpn_backbone"
    # Input channel order: "RGB", as CLIP was trained.
    _C.INPUT.FORMAT = "RGB"
    # CLIP's normalisation mean, in Detectron2's 0-255 convention (CLIP's mean × 255).
    _C.MODEL.PIXEL_MEAN = list(CLIP_PIXEL_MEAN)
    # CLIP's normalisation std, in Detectron2's 0-255 convention (CLIP's std × 255).
    _C.MODEL.PIXEL_STD = list(CLIP_PIXEL_STD)

    # ---------------------------------------------------------------- CLIP image encoder (Eq. 1)
    _C.MODEL.CLIP = CN()
    # open_clip model name of the backbone CLIP (a ResNet CLIP: RN50-quickgelu, RN50x4, ..., or a
    # config registered by gridclip.modeling.clip_configs such as "GridCLIP-Tiny-RN").
    _C.MODEL.CLIP.MODEL_NAME = "RN50-quickgelu"
    # "openai" (open_clip's download/cache), a local file (state dict or OpenAI TorchScript
    # archive), or "" for random initialisation.
    _C.MODEL.CLIP.PRETRAINED = "openai"
    # Keep CLIP's attention pool (MHSA) run densely over C5, giving z and z̄ (Eq. 1). Default True
    # (the paper's GridCLIP); False = Table 4's "GridCLIP-R50*" (no MHSA; needs IMAGE_ALIGN False).
    _C.MODEL.CLIP.USE_MHSA = True
    # Where open_clip caches downloaded CLIP weights; default "" = open_clip's own cache (honours HF_HOME).
    _C.MODEL.CLIP.CACHE_DIR = ""
    # Norm of the CLIP ResNet trunk's BatchNorms outside the frozen stages: "FrozenBN" (fixed
    # statistics and affine, as the paper's MMDetection FCOS: norm_eval + requires_grad False),
    # "BN" (trainable, batch statistics) or "SyncBN". Default "FrozenBN" (the paper's choice).
    _C.MODEL.CLIP.NORM = "FrozenBN"

    # ---------------------------------------------------------------- FPN (Eq. 2)
    # Backbone features the FPN reads: C3, C4 and the fused [z', C5] ("res5"); default as FCOS.
    _C.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    # Channels of every FPN level P3..P7 (and of the head's towers); default 256, as FCOS.
    _C.MODEL.FPN.OUT_CHANNELS = 256
    # Where P6/P7 come from: default "p5" (Detectron2's FCOS) or "c5" (the paper: "C5 serves as input
    # of P6, P7"; with the grid adapter this is the fused [z', C5], as DenseCLIP's detector's
    # add_extra_convs='on_input'). Every paper config sets "c5".
    _C.MODEL.FPN.TOP_BLOCK_IN = "p5"

    # ---------------------------------------------------------------- FCOS head / detector
    _C.MODEL.FCOS = CN()
    # FPN levels the head runs on; default P3..P7 (FCOS, the paper).
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Number of conv3x3 + norm + ReLU layers in each tower (cls and box); default 4 (FCOS, the paper).
    _C.MODEL.FCOS.NUM_CONVS = 4
    # Norm of the towers' convs; default "GN" (FCOS, the paper).
    _C.MODEL.FCOS.NORM = "GN"
    # Initial probability of foreground; sets the classification bias (of the cosine classifier with
    # grid alignment). Default 0.01 (FCOS).
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    # Sigmoid focal loss alpha of L_grid (Eq. 4); default 0.25 (FCOS).
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    # Sigmoid focal loss gamma of L_grid (Eq. 4); default 2.0 (FCOS).
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Positive locations lie within this many strides of a box's centre; default 1.5 (FCOS).
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Learnable per-level scalar on the box-regression output (MMDetection's FCOSHead ``scales``,
    # each initialised to 1.0). False = none (Detectron2's FCOS: no benefit once the targets are
    # normalised by the stride). Default False; the paper's MMDetection code base: True.
    _C.MODEL.FCOS.REG_SCALE = False
    # Weighting of the GIoU box loss over positive locations: "none" (Detectron2's FCOS: every
    # positive counts 1, normalised by the EMA of the number of positives) or "centerness"
    # (MMDetection's FCOSHead: weighted by each positive's centerness target, normalised by the sum
    # of those targets). Default "none"; the paper's MMDetection code base: "centerness".
    _C.MODEL.FCOS.BOX_REG_WEIGHTING = "none"
    # Inference score threshold; default 0.05 (paper §4.1).
    _C.MODEL.FCOS.SCORE_THRESH_TEST = 0.05
    # Candidates kept per FPN level before NMS; default 1000 (paper §4.1).
    _C.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    # Class-wise NMS IoU; default 0.5 (paper §4.1; its COCO/VOC transfer uses 0.6, configs/transfer/).
    _C.MODEL.FCOS.NMS_THRESH_TEST = 0.5
    # Final score: "sqrt" = sqrt(sigmoid(cls) * sigmoid(ctr)) (Detectron2's FCOS), "product" =
    # sigmoid(cls) * sigmoid(ctr) (threshold and top-k on it), or "mmdet" = MMDetection's FCOS rule
    # (threshold and top-k on sigmoid(cls), then score = sigmoid(cls) * sigmoid(ctr), no sqrt).
    # Default "sqrt"; the paper's MMDetection code base: "mmdet".
    _C.MODEL.FCOS.SCORE_MODE = "sqrt"
    # Detections per image after NMS; default 300 (paper §4.1, LVIS's evaluation limit).
    _C.TEST.DETECTIONS_PER_IMAGE = 300

    # ---------------------------------------------------------------- GridCLIP alignments (Eq. 3, 4)
    _C.MODEL.GRIDCLIP = CN()
    # Grid-level alignment (Eq. 3): the cls branch outputs D-dim embeddings scored by cosine to text
    # embeddings. Default True (GridCLIP); False = a plain learned linear classifier over the training
    # vocabulary (Table 4's "w/o align" and "w image-align" rows).
    _C.MODEL.GRIDCLIP.GRID_ALIGN = True
    # Image-level alignment (§3.3): z̄ → 3 linear layers → L1 to the frozen CLIP teacher's embedding.
    # Default True (GridCLIP); False = Table 4/5's "w grid-align" and "w/o align" rows.
    _C.MODEL.GRIDCLIP.IMAGE_ALIGN = True
    # Weight of L_grid in Eq. 4; default 1.0 (the paper).
    _C.MODEL.GRIDCLIP.GRID_LOSS_WEIGHT = 1.0
    # Weight of L_image in Eq. 4; default 10.0 (the paper; it balances the L1 averaged over batch × dim).
    _C.MODEL.GRIDCLIP.IMAGE_LOSS_WEIGHT = 10.0
    # L_image's strength independent of the teacher's embedding size D: 0 (default) = the mean over batch
    # × dim as written, whose per-image gradient grows as sqrt(512 / D) below the paper's D = 512 (2.8×
    # at the generated world's D = 64); N > 0 = L_image × sqrt(D / N), the strength it has at D = N at any
    # D (512: the paper's ViT-B/32 strength; gridclip/modeling/losses.py, docs/PAPER.md).
    _C.MODEL.GRIDCLIP.IMAGE_LOSS_REFERENCE_DIM = 0
    # Training-health signal: every N iterations log the ratio (and cosine) of the image-loss gradient
    # to the detection-loss gradient on the attention pool and res5 to metrics.json
    # (health/grad_ratio_image_vs_detection/<group>; gridclip/engine/health.py). Costs two extra partial
    # backward passes on those iterations; changes no training number. metrics.json is written every 20
    # iterations with each key's latest value: use a multiple of 20 to keep every measurement. Default 0 = off.
    _C.MODEL.GRIDCLIP.GRADIENT_RATIO_PERIOD = 0
    # Training vocabulary: "" (the first TRAIN dataset's classes; for TEST_VOCABULARY the first TEST
    # dataset's), "lvis" (1203),
    # "lvis_base" (866 common+frequent), "coco", "voc", a registered dataset name, or a text file
    # with one class name per line. Default "" for both: the paper's open-vocabulary protocol trains on
    # the 866 base classes of lvis_v1_train_base and tests on all 1203 of lvis_v1_val; Table 4's
    # closed-set rows test with TEST_VOCABULARY "lvis_v1_train_cf" (rare categories then score AP 0).
    _C.MODEL.GRIDCLIP.TRAIN_VOCABULARY = ""
    # Test vocabulary, same forms as TRAIN_VOCABULARY; it may differ from the training one (with
    # GRID_ALIGN the classifier is swapped without retraining). Default "".
    _C.MODEL.GRIDCLIP.TEST_VOCABULARY = ""
    # Prompt templates for text embeddings: "vild" (ViLD's 63 detection templates), "single"
    # ("a photo of a {}."), or a text file with one template per line containing "{}". Default "vild"
    # (the paper's choice).
    _C.MODEL.GRIDCLIP.PROMPT_TEMPLATES = "vild"
    # ViLD's notebook (FLAGS.this_is) prefixes "This is " to every prompt that starts with "a" or
    # "the" (e.g. "This is a photo of a cat."). Default False: the paper names the templates, not the
    # notebook's flag.
    _C.MODEL.GRIDCLIP.PROMPT_THIS_IS = False
    _C.MODEL.GRIDCLIP.TEXT_ENCODER = CN()
    # The CLIP whose TEXT tower embeds the class names (the class-embedding space the head's
    # embedding conv outputs into). MODEL_NAME "" = the backbone CLIP (MODEL.CLIP.MODEL_NAME with
    # MODEL.CLIP.PRETRAINED; the paper's wording). Another name (e.g. "ViT-B-32-quickgelu", 512-d,
    # the teacher's space as in ViLD) uses its own PRETRAINED ("openai", a local file, "" = random).
    # Default "": the paper's wording (RN50 text, 1024-d). Only the 512-d "ViT-B-32-quickgelu" variant
    # (configs/GridCLIP-R50-FPN-2x-512d.yaml) matches Table 2's 56.4 M parameters.
    _C.MODEL.GRIDCLIP.TEXT_ENCODER.MODEL_NAME = ""
    # Weights of that text encoder when MODEL_NAME is set; default "openai".
    _C.MODEL.GRIDCLIP.TEXT_ENCODER.PRETRAINED = "openai"
    # Cache folder for text embeddings; default "" = $GRIDCLIP_CACHE or ~/.cache/gridclip.
    _C.MODEL.GRIDCLIP.EMBEDDINGS_CACHE_DIR = ""
    # Channels of the grid adapter z → z' (3 × conv3x3, Eq. 2); default 256 (the paper).
    _C.MODEL.GRIDCLIP.ADAPTER_CHANNELS = 256
    # ReLU after the adapter's last conv too; default True (the paper's wording: 3 × (conv + ReLU));
    # False = none after the last.
    _C.MODEL.GRIDCLIP.ADAPTER_FINAL_RELU = True
    # Hidden widths of the image-level head (3 linear layers z̄ → z̄'; output dim = teacher dim);
    # default [1024, 1024] (the paper's 1024 → 1024 → 1024 → 512 with the ViT-B/32 teacher).
    _C.MODEL.GRIDCLIP.IMAGE_HEAD_HIDDEN_DIMS = [1024, 1024]
    # Initial value of the cosine-logit scale (score = scale·cos + bias, Eq. 3); default 1/0.07,
    # CLIP's initial temperature (the paper does not give one).
    _C.MODEL.GRIDCLIP.LOGIT_SCALE_INIT = 1.0 / 0.07
    # Learn that scale during training; default True (False keeps it at LOGIT_SCALE_INIT).
    _C.MODEL.GRIDCLIP.LEARN_LOGIT_SCALE = True
    # Attach each detection's grid embedding (G at its location) to the output instances; default False
    # (GridCLIPPredictor asks for them itself).
    _C.MODEL.GRIDCLIP.RETURN_GRID_EMBEDDINGS = False
    # MODEL.WEIGHTS whose parameter shapes do not fit the model (a checkpoint of another config) is
    # an error listing the parameters; True = load only the weights that fit (the rest stays random).
    # Default False.
    _C.MODEL.GRIDCLIP.ALLOW_PARTIAL_WEIGHTS = False
    # Checkpoints record their class-embedding space (text encoder, its weights, templates); loading one
    # where this config builds another space (e.g. a random text tower instead of the pretrained file) is
    # an error naming both (gridclip/checkpoint.py). True = load it anyway, with a warning. Default False.
    _C.MODEL.GRIDCLIP.ALLOW_TEXT_SPACE_MISMATCH = False
    # Image exemplars for evaluation (train_net.py --eval-only): a JSON list of {"name", "image", "box"}
    # (gridclip/exemplars.py); each name is a class of the test vocabulary, queried by the mean grid
    # embedding of its exemplars instead of its text embedding. Default "" (text only).
    _C.MODEL.GRIDCLIP.TEST_EXEMPLARS = ""

    # ---------------------------------------------------------------- inference speed-ups (exact)
    # (gridclip/modeling/bn_folding.py, decoding.py, meta_arch.py; same detections as without them)
    _C.MODEL.GRIDCLIP.INFERENCE = CN()
    # Fold (frozen or eval-mode) BatchNorms into the preceding convs at inference (no_grad, eval
    # mode only; parameters and checkpoints are unchanged). Default True.
    _C.MODEL.GRIDCLIP.INFERENCE.FOLD_BN = True
    # Run the backbone and head in channels_last memory format at inference; default True.
    _C.MODEL.GRIDCLIP.INFERENCE.CHANNELS_LAST = True
    # Candidate selection per level: "bound" (exact, skips pairs below the k-th best location),
    # "threshold" (the threshold bound only) or "dense" (score every pair; the reference). Default
    # "bound"; all three give the same detections.
    _C.MODEL.GRIDCLIP.INFERENCE.DECODER = "bound"
    # torch.compile the backbone and head for inference (opt-in; a one-off compile of about a minute
    # at R50 size on a CPU, recompiles for new input sizes). Default False.
    _C.MODEL.GRIDCLIP.INFERENCE.COMPILE = False
    # Added at inference to the class logits of test categories outside the training vocabulary of the
    # weights (never seen in training, as positives or as negatives). 0.0 = the paper. A negative value
    # keeps unseen names from outscoring a base object's own name at the same box (docs/WORLD.md,
    # "Naming"); it moves an unseen class's scores alone, so its AP changes only through the score
    # threshold and the per-image detection cap. Not available in the vocabulary-as-input export.
    _C.MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET = 0.0

    # ---------------------------------------------------------------- image-level teacher
    _C.MODEL.GRIDCLIP.TEACHER = CN()
    # Frozen CLIP image encoder computed on the fly by TeacherEmbeddingHook; default
    # "ViT-B-32-quickgelu" (the paper's GridCLIP-R50); "RN50x64-quickgelu" for GridCLIP-R50-RN.
    _C.MODEL.GRIDCLIP.TEACHER.MODEL_NAME = "ViT-B-32-quickgelu"
    # The teacher's weights: default "openai" (open_clip's download/cache), a local file, or "" (random).
    _C.MODEL.GRIDCLIP.TEACHER.PRETRAINED = "openai"
    # Run the teacher under autocast on CUDA (fp16); default True (no effect on a CPU).
    _C.MODEL.GRIDCLIP.TEACHER.AMP = True
    # What the teacher sees of each augmented training image: "center_crop" (CLIP's own inference
    # transform: shortest side -> input size, centre crop; drops 25-45 % of a 4:3-16:9 image) or
    # "letterbox" (the whole image: longest side -> input size, padded to the square input with
    # CLIP's mean colour, i.e. 0 after normalisation), as z̄ sees the whole image.
    # Measured in the generated world (4:3 images, tools/run_ablations.py, 300 it, 1 seed): letterbox
    # 35.4 AP / 22.5 AP_r vs center_crop 35.2 / 21.7, within noise: CLIP's own transform stays default
    # ("center_crop", what the paper's CLIP preprocessing does).
    _C.MODEL.GRIDCLIP.TEACHER.INPUT = "center_crop"
    # The side of the square image the teacher sees: 0 = its model's own (224 for ViT-B/32, 448 for
    # RN50x64); another value resizes its positional embedding to that grid (a multiple of its stride).
    # The world's teachers, pretrained at 64 px, see the 128-px training images at their native size.
    _C.MODEL.GRIDCLIP.TEACHER.INPUT_SIZE = 0
    # Not in the paper: k >= 2 also embeds a k x k grid of crops of the image, each at the model's own input
    # size, and takes the normalised mean of the k*k + 1 embeddings (gridclip.modeling.teacher). 0: the
    # whole image only (the paper's). The world's RN teacher ranks a training image's categories better
    # than the student's z-bar only with CROPS 2 (recall@5 0.408 vs 0.334; docs/WORLD.md).
    _C.MODEL.GRIDCLIP.TEACHER.CROPS = 0
    # Cache teacher embeddings by (image id, flip); only valid for schedules without random crop
    # or multi-scale (the teacher's 224 input is then the same each epoch). Default False.
    _C.MODEL.GRIDCLIP.TEACHER.CACHE_EMBEDDINGS = False

    # ---------------------------------------------------------------- solver (gridclip.engine.solver)
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE also accepts "full_model": clip the global L2 norm of all
    # gradients together (torch.nn.utils.clip_grad_norm_, as MMDetection's grad_clip), besides
    # Detectron2's "value" and "norm" (which clip EACH parameter's gradient separately).
    # configs/Base-GridCLIP.yaml keeps Detectron2's per-parameter "norm" at 35; the paper's
    # MMDetection code base clips the global norm at 35 ("full_model", as the tiny world's configs).
    # (SOLVER.WARMUP_METHOD "constant" / "linear" are Detectron2's and match MMDetection's warm-ups;
    # default "linear", Detectron2's; MMDetection's base FCOS config uses "constant".)

    # ---------------------------------------------------------------- data
    # Your own COCO-format datasets, registered by every process that loads this config (train_net
    # and its --num-gpus workers, the predictor): a list of [name, json file, image folder]. Default [].
    _C.DATASETS.COCO_FORMAT = []
    # Skip (and count, with a warning) images that fail to load during training; default True;
    # False = fail naming the file.
    _C.DATALOADER.SKIP_CORRUPT_IMAGES = True
    # Random crop during training; default False (the ablations' schedule, §4.3); the Table 1 configs
    # enable it with multi-scale training (the paper's recipe).
    _C.INPUT.CROP.ENABLED = False
    # Random flip during training: default "horizontal", or "vertical" or "none".
    _C.INPUT.RANDOM_FLIP = "horizontal"

    # ---------------------------------------------------------------- evaluation
    # Which evaluator; default "" = by dataset name: lvis → LVISEvaluator, coco → COCOEvaluator, voc →
    # PascalVOCDetectionEvaluator.
    _C.TEST.EVALUATOR = ""
    # LVIS box AP backend, same numbers: "faster" (arrays + faster-coco-eval) or "lvis" (lvis-api, the reference).
    _C.TEST.LVIS_EVAL_BACKEND = "faster"
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
        check_base_chain(config_file)  # a _BASE_ cycle or missing base: one line, not a RecursionError
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or ()))
    return cfg
