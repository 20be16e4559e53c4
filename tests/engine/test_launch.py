"""gridclip.engine.launch runs N CPU processes with gloo when there is no CUDA (via Detectron2 main's launch or its own workers)."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import gridclip
    from detectron2.utils import comm
    from gridclip.engine import launch

    def gather_ranks(out_path):
        gathered = comm.all_gather({"rank": comm.get_rank(), "local_rank": comm.get_local_rank(),
                                    "world": comm.get_world_size(), "local_size": comm.get_local_size(),
                                    "backend": torch.distributed.get_backend()})
        # A CPU model wrapped for DDP (Detectron2's helper) must accept CPU parameters.
        from detectron2.engine import create_ddp_model
        ddp = create_ddp_model(torch.nn.Linear(2, 1), broadcast_buffers=False)
        loss = ddp(torch.ones(1, 2) * (comm.get_rank() + 1)).sum()
        loss.backward()
        grad = ddp.module.weight.grad.tolist()
        if comm.is_main_process():
            json.dump({"gathered": gathered, "ddp_type": type(ddp).__name__, "grad": grad}, open(out_path, "w"))

    if __name__ == "__main__":
        launch(gather_ranks, num_gpus_per_machine=2, dist_url="auto", args=(sys.argv[1],))
    """
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU/gloo path")
def test_two_process_cpu_launch_all_gathers(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    gathered = result["gathered"]
    assert [g["rank"] for g in gathered] == [0, 1]
    assert [g["local_rank"] for g in gathered] == [0, 1]
    assert all(g["world"] == 2 and g["local_size"] == 2 and g["backend"] == "gloo" for g in gathered)
    assert result["ddp_type"] == "DistributedDataParallel"
    # DDP averages the gradients of rank 0 (input 1) and rank 1 (input 2): (1 + 2) / 2 = 1.5.
    assert result["grad"] == [[1.5, 1.5]]


def test_single_process_launch_calls_directly():
    from gridclip.engine import launch

    calls = []
    launch(lambda x: calls.append(x), num_gpus_per_machine=1, args=(7,))
    assert calls == [7]


def test_multi_machine_auto_url_refused():
    from gridclip.engine import launch

    if torch.cuda.is_available():
        pytest.skip("CPU path only")
    with pytest.raises(ValueError, match="dist_url=auto is not supported for multi-machine"):
        launch(print, num_gpus_per_machine=2, num_machines=2, dist_url="auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU/gloo path")
def test_cpu_launch_uses_detectron2s_launcher_where_it_supports_cpu(monkeypatch):
    """Detectron2 main's launch starts gloo without CUDA: used as is; v0.6's asserts CUDA: ours runs."""
    import functools

    import importlib

    from gridclip.compat import detectron2_launch_supports_cpu

    launch_module = importlib.import_module("gridclip.engine.launch")  # the module, not the function
    calls = []
    monkeypatch.setattr(launch_module, "detectron2_launch", lambda main, *a: calls.append(("detectron2", main)))
    monkeypatch.setattr(launch_module.mp, "start_processes", lambda worker, **k: calls.append(("gridclip", worker)))
    launch_module.launch(print, num_gpus_per_machine=2, dist_url="auto")
    supports_cpu, why = detectron2_launch_supports_cpu()
    assert why
    (route, target), = calls
    if supports_cpu:
        assert route == "detectron2"
        assert isinstance(target, functools.partial) and target.func is launch_module._run_cpu_rank
    else:
        assert route == "gridclip" and target is launch_module._cpu_worker
        assert "requires CUDA" in why
