"""
The benchmark's results (:func:`gridclip.analysis.benchmark.run_benchmark`) as markdown: machine,
settings, FLOPs, one table per precision with the ratios to the FCOS peers, the speed-up ladder and
the parameter breakdowns.
"""
from .fcos_peer import PEER_NAME, SAME_VOCAB_PEER_NAME

__all__ = ["format_markdown", "format_parameter_tables", "format_parameters_ratio", "format_speedups"]


def format_speedups(rows, results) -> str:
    """The speed-up ladder of :func:`gridclip.analysis.speedups.measure_speedups` as a markdown table."""
    s = results["settings"]
    lines = [
        f"### Exact inference speed-ups, GridCLIP ({s['input_size'][0]}×{s['input_size'][1]}, "
        f"{s['gridclip_classes']['test']} test classes, {results['machine']['torch_threads']} torch threads, "
        f"{s['iters']} interleaved iterations)",
        "",
        "| step (cumulative) | latency min / median (ms) | speed-up vs before (min / median) | CPU time min / median (ms) "
        "| CPU-time speed-up (min / median) | detections vs before |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        d = row["detections_vs_before"]
        if d.get("same_count") and d.get("same_classes"):
            same = f"{d['num_detections']}, same classes, boxes ±{d['max_box_diff_px']:.1e} px, scores ±{d['max_score_diff']:.1e}"
        else:
            same = (f"{d['num_detections']}; {d.get('matched_within_1px', 0):.0%} matched within 1 px (same class)"
                    + (f", confident ones {d['confident_matched_within_1px']:.0%}" if "confident_matched_within_1px" in d else ""))
        lines.append(f"| {row['step']} | {row['latency_ms_min']:.0f} / {row['latency_ms_median']:.0f} | "
                     f"{row['speedup_vs_before_min']:.2f}× / {row['speedup_vs_before_median']:.2f}× | "
                     f"{row['cpu_ms_min']:.0f} / {row['cpu_ms_median']:.0f} | "
                     f"{row['cpu_speedup_vs_before_min']:.2f}× / {row['cpu_speedup_vs_before_median']:.2f}× | {same} |")
    return "\n".join(lines) + "\n"


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def format_parameters_ratio(ratios) -> str:
    """The inference parameters of GridCLIP over the two FCOS peers, as one line."""
    return (f"Inference parameters ratio (GridCLIP / FCOS same vocabulary): {ratios['parameters']:.2f}× "
            f"(/ FCOS 80 classes: {ratios['parameters_vs_fcos_80']:.2f}×)")


def format_parameter_tables(results) -> str:
    """One markdown table per model: its parameter breakdown and inference total."""
    lines = []
    for name, entry in results["models"].items():
        lines += [f"### Parameters: {name}", "", "| part | parameters |", "|---|---:|"]
        for part in entry["parameters"]["parts"]:
            label = part["part"] + (" (training only, not counted)" if part["training_only"] else "")
            lines.append(f"| {label} | {part['parameters'] / 1e6:.2f} M |")
        lines += [f"| **inference total** | **{entry['parameters']['inference_total'] / 1e6:.2f} M** |", ""]
    return "\n".join(lines)


def format_markdown(results) -> str:
    """The benchmark as markdown: machine, settings, FLOPs, one table per precision, parameter breakdowns."""
    m, s = results["machine"], results["settings"]
    names = list(results["models"])
    device = m["gpu_name"] or (
        f"CPU only, no GPU: {m['cpu_model']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads)")
    lines = [
        f"## Benchmark: {' vs '.join(names)}",
        "",
        f"Machine: {device}; Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}"
        + (f", CUDA {m['cuda']}" if m["cuda"] else "") + ".",
        f"Input {s['input_size'][0]}×{s['input_size'][1]}; inference batch 1 (models interleaved), training batch "
        f"{s['train_batch']}; {s['iters']} timed iterations after {s['warmup']} warm-up; random weights; GridCLIP "
        f"vocabularies {s['gridclip_classes']['train']} train / {s['gridclip_classes']['test']} test classes; "
        f"AMP = {s['amp_dtype']} autocast; peak memory = {s['memory_measure'].replace('_', ' ')}.",
        "",
    ]
    ratios = results["ratios"]
    with_peers = SAME_VOCAB_PEER_NAME in names and PEER_NAME in names
    ratio_header = " | GridCLIP / FCOS same vocab. | GridCLIP / FCOS 80 |" if with_peers else " |"
    ratio_cols = 2 if with_peers else 0

    if any("flops" in results["models"][n] for n in names):
        lines += ["| FLOPs (fvcore) | " + " | ".join(names) + ratio_header, "|---|" + "---:|" * (len(names) + ratio_cols)]
        cells = [_fmt(results["models"][n].get("flops", {}).get("total", 0) / 1e9, ".1f") + " G" for n in names]
        line = "| inference GFLOPs | " + " | ".join(cells)
        if with_peers:
            line += f" | {_fmt(ratios.get('flops_vs_fcos_same_vocab'), '.2f')}× | {_fmt(ratios.get('flops_vs_fcos_80'), '.2f')}× |"
        else:
            line += " |"
        lines += [line, ""]
        if ratios.get("latency_ratio_over_flop_ratio") is not None:
            lines += [
                f"Fair-peer ratio: time {ratios['latency_vs_fcos_same_vocab']:.2f}× (min {ratios['latency_min_vs_fcos_same_vocab']:.2f}×) "
                f"for {ratios['flops_vs_fcos_same_vocab']:.2f}× the FLOPs: time ratio / FLOP ratio = "
                f"{ratios['latency_ratio_over_flop_ratio']:.3f} (1 = GridCLIP costs exactly its extra FLOPs).",
                "",
            ]
            if "cpu_time_ratio_over_flop_ratio" in ratios:
                lines += [
                    f"On CPU time (the thread's, robust to other processes on a shared machine): "
                    f"{ratios['cpu_time_vs_fcos_same_vocab']:.2f}× for {ratios['flops_vs_fcos_same_vocab']:.2f}× the "
                    f"FLOPs: {ratios['cpu_time_ratio_over_flop_ratio']:.3f}.",
                    "",
                ]
    for precision in s["precisions"]:
        header = "| " + precision + " | " + " | ".join(names) + ratio_header
        lines += [header, "|---|" + "---:|" * (len(names) + ratio_cols)]
        precision_ratios = ratios.get(precision, {})
        rows = [
            ("inference latency, mean (ms)", "inference", "latency_ms", ".1f", "inference_latency"),
            ("inference latency, min (ms)", "inference", "latency_ms_min", ".1f", "inference_latency_min"),
            ("inference CPU time, min (ms)", "inference", "cpu_ms_min", ".1f", "inference_cpu_time_min"),
            ("inference CPU time, median (ms)", "inference", "cpu_ms_median", ".1f", "inference_cpu_time_median"),
            ("inference FPS", "inference", "fps", ".2f", None),
            ("inference peak memory (MB)", "inference", "peak_memory_mb", ".0f", "inference_peak_memory"),
            ("train step time (s)", "train", "step_time_s", ".3f", "train_step_time"),
            ("train images/s", "train", "images_per_s", ".2f", None),
            ("teacher hook share of step", "train", "teacher_share", ".1%", None),
            ("train peak memory (MB)", "train", "peak_memory_mb", ".0f", "train_peak_memory"),
        ]
        for label, phase, key, spec, ratio_key in rows:
            cells = []
            for name in names:
                entry = results["models"][name].get(precision, {})
                if "skipped" in entry:
                    cells.append("skipped")
                    continue
                part = entry.get(phase, {})
                cells.append("skipped" if "skipped" in part or not part or key not in part
                             else _fmt(part.get(key), spec))
            if all(cell == "skipped" for cell in cells):
                continue  # the reason is listed under the table
            line = f"| {label} | " + " | ".join(cells)
            if with_peers:
                same = precision_ratios.get(ratio_key) if ratio_key else None
                f80 = (ratios.get("fcos_80", {}).get(precision) or {}).get(ratio_key) if ratio_key else None
                line += "".join(" | " + (_fmt(v, ".2f") + "×" if v else "") for v in (same, f80)) + " |"
            else:
                line += " |"
            lines.append(line)
        skipped = {
            f"{name} {phase}": part["skipped"]
            for name in names
            for phase, part in (
                [("", results["models"][name][precision])] if "skipped" in results["models"][name].get(precision, {})
                else results["models"][name].get(precision, {}).items()
            )
            if isinstance(part, dict) and "skipped" in part
        }
        if skipped:
            lines.append("")
        for what, reason in skipped.items():
            lines.append(f"- {precision} skipped ({what.strip()}): {reason}")
        lines.append("")
    if "parameters" in ratios:
        lines += [format_parameters_ratio(ratios), ""]
    if results.get("speedups"):
        lines.append(format_speedups(results["speedups"], results))
    lines.append(format_parameter_tables(results))
    return "\n".join(lines)
