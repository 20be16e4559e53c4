"""
tools/export_model.py: the vocabulary as an input with dynamic batch, image size and K. One export per
format of a tiny untrained model (module fixture), then: onnxruntime and TorchScript reproduce the
PyTorch detections at 3 sizes x batch {1, 3} x K {5, 48, 1203}; a vocabulary swap without re-export
(new names embedded by the exported text tower); onnx.checker; both formats refuse a broken input
contract; the baked-vocabulary option; nothing overwritten.
"""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "GridCLIP-Tiny-Predictor.yaml")
# 128 / 213: images of several aspect ratios resize to different sizes (one clipped by the max size).
OPTS = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "213", "MODEL.GRIDCLIP.PROMPT_TEMPLATES", "single"]
VOCABULARY = ["cat", "dog", "red umbrella", "kite"]
#: original image shapes -> resized 128x171, 171x128 and 43x213 (max-size case)
SHAPES = [(480, 640), (640, 480), (200, 1000)]

pytestmark = pytest.mark.skipif(not (importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime")),
                                reason="onnx / onnxruntime not installed (pinned in requirements.txt)")


def _load_tool():
    spec = importlib.util.spec_from_file_location("gridclip_tools_export", os.path.join(REPO_ROOT, "tools", "export_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def export_tool():
    return _load_tool()


@pytest.fixture(scope="module")
def exported(export_tool, tmp_path_factory):
    """(predictor, report, onnx session, torchscript module): one export of a tiny untrained model."""
    from gridclip import GridCLIPPredictor
    from gridclip.checkpoint import GridCLIPCheckpointer
    from gridclip.export.checks import onnx_session

    tmp = tmp_path_factory.mktemp("export")
    env = pytest.MonkeyPatch()
    env.setenv("GRIDCLIP_CACHE", str(tmp / "cache"))  # a private text-embedding cache
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    predictor = GridCLIPPredictor(TINY_CONFIG, vocabulary=VOCABULARY, opts=OPTS, device="cpu")
    GridCLIPCheckpointer(predictor.model, save_dir=str(tmp)).save("tiny")
    report = export_tool.main(["--config-file", TINY_CONFIG, "--vocabulary", ",".join(VOCABULARY),
                               "--output", str(tmp / "out"), "--threads", "1",
                               *OPTS, "MODEL.WEIGHTS", str(tmp / "tiny.pth")])
    session = onnx_session(report["files"]["onnx"])
    scripted = torch.jit.load(report["files"]["torchscript"])
    yield predictor, report, session, scripted
    torch.set_num_threads(threads)
    env.undo()


def _assert_same(reference, outputs, what):
    from gridclip.export.checks import compare_outputs

    check = compare_outputs(reference, outputs)
    assert check["num_detections"] > 0 and check["same_detections"], (what, check)
    assert check["max_box_diff_px"] < 1e-3 and check["max_score_diff"] < 1e-5, (what, check)
    # Same order too: per image, decreasing score (ties aside).
    assert torch.equal(torch.as_tensor(np.asarray(outputs[3])), reference[3]), what


def test_the_tool_checks_its_files_and_writes_the_contract(exported):
    _, report, _, _ = exported
    for fmt in ("torchscript", "onnx"):
        check = report["checks"][fmt]
        assert check["same_detections"] and check["refuses_broken_contract"], check
        assert [b["batch"] for b in check["batches"]] == [1, 3]
    assert report["checks"]["text_encoder"]["max_abs_diff_class_embeddings"] < 1e-5
    with open(report["files"]["info"]) as f:
        info = json.load(f)
    assert info["class_names"] == VOCABULARY and info["inputs"] == ["images", "image_sizes", "class_embeddings"]
    assert info["input_contract"]["min_size"] == 128 and info["input_contract"]["max_size"] == 213
    assert "ResizeShortestEdge(128, 213)" in info["input_contract"]["statement"]
    embeddings = np.load(report["files"]["class_embeddings"], allow_pickle=False)
    assert embeddings.shape == (4, 64) and embeddings.dtype == np.float32


@pytest.mark.parametrize("num_classes", [5, 48, 1203])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [0, 1, 2])
def test_onnxruntime_and_torchscript_reproduce_pytorch(exported, size, batch, num_classes):
    from gridclip.export import InputContract, make_batch
    from gridclip.export.checks import pytorch_detections, run_onnx

    predictor, report, session, scripted = exported
    contract = InputContract(**{k: v for k, v in report["input_contract"].items() if k != "statement"})
    shapes = [SHAPES[(size + i) % 3] for i in range(batch)]  # batch 3: the three sizes, this one first
    images, sizes = make_batch(contract, shapes, seed=100 * size + batch)
    embeddings = F.normalize(torch.randn(num_classes, 64, generator=torch.Generator().manual_seed(num_classes)), dim=1)
    reference = pytorch_detections(predictor.model, images, sizes, embeddings)
    _assert_same(reference, run_onnx(session, images, sizes, embeddings), "onnx")
    with torch.no_grad():
        _assert_same(reference, scripted(images, sizes, embeddings), "torchscript")


def test_vocabulary_swap_without_reexport(exported):
    """New names embedded by text_encoder.onnx (tokens from open_clip's tokenizer) into model.onnx: the predictor's detections."""
    import open_clip

    from gridclip.export import make_batch
    from gridclip.export.checks import onnx_session, pytorch_detections, run_onnx
    from gridclip.export.contract import InputContract
    from gridclip.modeling.text.prompts import build_prompts

    predictor, report, session, _ = exported
    info = report["text_encoder"]
    names = ["zebra", "traffic cone", "blue striped square", "teapot", "violin", "sailboat"]
    tokens = open_clip.get_tokenizer(info["clip_model_name"])(build_prompts(names, info["templates"], info["this_is"]))
    per_prompt = torch.from_numpy(run_onnx(onnx_session(report["files"]["text_encoder"]), tokens)[0])
    embeddings = F.normalize(per_prompt.view(len(names), len(info["templates"]), -1).mean(1), dim=-1)
    predictor.set_vocabulary(names)  # PyTorch: the predictor builds the same names' embeddings itself
    torch.testing.assert_close(embeddings, predictor.model.classifier.test_embeddings, rtol=0, atol=1e-5)
    contract = InputContract(**{k: v for k, v in report["input_contract"].items() if k != "statement"})
    images, sizes = make_batch(contract, SHAPES, seed=7)
    reference = pytorch_detections(predictor.model, images, sizes, predictor.model.classifier.test_embeddings)
    _assert_same(reference, run_onnx(session, images, sizes, embeddings), "onnx, swapped vocabulary")
    predictor.set_vocabulary(VOCABULARY)


def test_onnx_checker_passes_and_dimensions_are_dynamic(exported):
    import onnx

    _, report, _, _ = exported
    for key in ("onnx", "text_encoder"):
        model = onnx.load(report["files"][key])
        onnx.checker.check_model(model, full_check=True)
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        if key == "onnx":
            assert dims == {"images": ["batch", 3, "height", "width"], "image_sizes": ["batch", 2],
                            "class_embeddings": ["num_classes", 64]}
        else:
            assert dims == {"tokens": ["num_prompts", 77]}


@pytest.mark.parametrize("broken", ["canvas too large", "not resized", "batch mismatch", "embedding dim"])
def test_both_formats_refuse_a_broken_input_contract(exported, broken):
    from gridclip.export.checks import run_onnx

    _, report, session, scripted = exported
    images = torch.zeros(1, 3, 128, 192, dtype=torch.uint8)
    sizes = torch.tensor([[128, 171]])
    embeddings = F.normalize(torch.randn(5, 64), dim=1)
    if broken == "canvas too large":
        images = torch.zeros(1, 3, 160, 192, dtype=torch.uint8)
    elif broken == "not resized":
        sizes = torch.tensor([[120, 171]])
    elif broken == "batch mismatch":
        sizes = torch.tensor([[128, 171], [128, 171]])
    else:
        embeddings = torch.randn(5, 32)
    with pytest.raises(Exception, match="Input contract of the exported GridCLIP broken") as error:
        scripted(images, sizes, embeddings)
    assert "ResizeShortestEdge(128, 213)" in str(error.value)
    with pytest.raises(Exception, match="INPUT CONTRACT BROKEN|class_embeddings") as error:
        run_onnx(session, images, sizes, embeddings)
    # ONNX's own shape check names the input; the graph's check names the contract.
    assert ("ResizeShortestEdge(128, 213)" in str(error.value)) != (broken == "embedding dim")
    # The inputs the contract allows run.
    ok_images = torch.zeros(1, 3, 128, 192, dtype=torch.uint8)
    ok_sizes, ok_embeddings = torch.tensor([[128, 171]]), F.normalize(torch.randn(5, 64), dim=1)
    run_onnx(session, ok_images, ok_sizes, ok_embeddings)
    scripted(ok_images, ok_sizes, ok_embeddings)


def test_baked_vocabulary(exported, export_tool, tmp_path):
    import onnx

    from gridclip.export import make_batch
    from gridclip.export.checks import onnx_session, pytorch_detections, run_onnx
    from gridclip.export.contract import InputContract

    predictor, report, _, _ = exported
    weights = report["opts"][report["opts"].index("MODEL.WEIGHTS") + 1]
    baked = export_tool.main(["--config-file", TINY_CONFIG, "--vocabulary", ",".join(VOCABULARY), "--bake-vocabulary",
                              "--format", "onnx", "--no-text-encoder", "--no-check", "--output", str(tmp_path),
                              *OPTS, "MODEL.WEIGHTS", weights])
    assert [i.name for i in onnx.load(baked["files"]["onnx"]).graph.input] == ["images", "image_sizes"]
    contract = InputContract(**{k: v for k, v in report["input_contract"].items() if k != "statement"})
    images, sizes = make_batch(contract, SHAPES, seed=11)
    reference = pytorch_detections(predictor.model, images, sizes, predictor.model.classifier.test_embeddings)
    _assert_same(reference, run_onnx(onnx_session(baked["files"]["onnx"]), images, sizes), "baked onnx")


def test_existing_outputs_are_never_overwritten(export_tool, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.ts").write_text("keep me")
    argv = ["--config-file", TINY_CONFIG, "--format", "torchscript", "--output", str(out)]
    assert export_tool.run_tool(export_tool.cli_main, argv, prog="export_model.py") == 1  # the command line's exit status
    err = capsys.readouterr().err
    assert "model.ts exists" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "model.ts").read_text() == "keep me"


def test_unseen_class_offsets_are_baked_and_refused_as_an_input(exported, export_tool, tmp_path, capsys):
    """
    With MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET, a baked export scores the classes the
    weights were not trained on exactly as the predictor does (and says which in export_info.json);
    the vocabulary-as-input graph, which cannot know them, is refused with one line.
    """
    from gridclip import GridCLIPPredictor
    from gridclip.export import make_batch
    from gridclip.export.checks import onnx_session, pytorch_detections, run_onnx
    from gridclip.export.contract import InputContract

    _, report, _, _ = exported
    weights = report["opts"][report["opts"].index("MODEL.WEIGHTS") + 1]
    names = VOCABULARY + ["zebra", "teapot"]  # the weights were trained on VOCABULARY
    opts = OPTS + ["MODEL.WEIGHTS", weights, "MODEL.GRIDCLIP.INFERENCE.UNSEEN_CLASS_LOGIT_OFFSET", "-0.5",
                   "MODEL.FCOS.SCORE_THRESH_TEST", "0.01"]
    baked = export_tool.main(["--config-file", TINY_CONFIG, "--vocabulary", ",".join(names), "--bake-vocabulary",
                              "--format", "onnx", "--no-text-encoder", "--no-check", "--output", str(tmp_path / "b"),
                              *opts])
    with open(baked["files"]["info"]) as f:
        assert json.load(f)["class_logit_offsets"] == [0.0] * 4 + [-0.5, -0.5]
    predictor = GridCLIPPredictor(TINY_CONFIG, vocabulary=names, opts=opts, device="cpu")
    offsets = predictor.vocabulary_snapshot.logit_offsets
    assert offsets.tolist() == [0.0] * 4 + [-0.5, -0.5]
    contract = InputContract(**{k: v for k, v in report["input_contract"].items() if k != "statement"})
    images, sizes = make_batch(contract, SHAPES, seed=11)
    embeddings = predictor.model.classifier.test_embeddings
    reference = pytorch_detections(predictor.model, images, sizes, embeddings, offsets)
    uncalibrated = pytorch_detections(predictor.model, images, sizes, embeddings)
    unseen = lambda detections: detections[1][detections[2] >= 4]  # noqa: E731  (scores of the unseen classes)
    assert len(unseen(reference)) and len(unseen(uncalibrated)) > len(unseen(reference))  # the offset acts
    _assert_same(reference, run_onnx(onnx_session(baked["files"]["onnx"]), images, sizes), "baked onnx with offsets")

    argv = ["--config-file", TINY_CONFIG, "--vocabulary", ",".join(names), "--format", "onnx", "--no-text-encoder",
            "--output", str(tmp_path / "a"), *opts]
    capsys.readouterr()  # only what the refused command writes (the export above logged)
    assert export_tool.run_tool(export_tool.cli_main, argv, prog="export_model.py") == 1
    err = capsys.readouterr().err
    assert "cannot know which classes are unseen" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() or not os.listdir(tmp_path / "a")
