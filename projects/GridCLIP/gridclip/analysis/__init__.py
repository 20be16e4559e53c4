"""
Analysis of GridCLIP beside Detectron2's FCOS: parameter counts (:mod:`.parameters`), FLOPs
(:mod:`.flops`), the FCOS peer decoding with GridCLIP's decoder (:mod:`.fcos_peer`), timing and peak
memory (:mod:`.timing`), the exact inference speed-ups one by one (:mod:`.speedups`), the machine
(:mod:`.machine`), the whole benchmark (:mod:`.benchmark`) and its markdown report (:mod:`.report`).
``tools/benchmark.py`` and ``tools/count_parameters.py`` are their command lines.
"""
