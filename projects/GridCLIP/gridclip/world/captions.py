"""
The generated world's caption corpus: its "web" of image-caption pairs for CLIP pretraining.

Each image shows 1-4 objects drawn uniformly from all 192 (colour, texture, shape) combinations on
the detection data's cluttered backgrounds (:mod:`.render`); its caption names every object, in
varied phrasing: several sentence templates, each object as its category name ("red striped circle")
or with the texture as a phrase ("red circle with stripes"), objects listed in random order. So a
CLIP pretrained on it knows every name, including those the detection split never annotates.

Images are rendered in memory (uint8 arrays) from their own random streams (``seed``, a corpus salt
and the index of a chunk of :data:`CORPUS_CHUNK` images, so forked processes can render chunks side
by side and give the same corpus), never from the detection splits' stream: no detection val image is ever in the corpus.
:func:`zero_shot_split` renders held-out single-object images (another salt) for the zero-shot
classification benchmark over all 192 names.
"""
import numpy as np

from .attributes import TEXTURE_PHRASES, WORLD_OBJECTS, object_name
from .render import render_scene

__all__ = [
    "CAPTION_TEMPLATES",
    "ZERO_SHOT_TEMPLATES",
    "DEFAULT_CORPUS_ARGS",
    "describe_object",
    "make_caption",
    "CORPUS_CHUNK",
    "generate_caption_corpus",
    "zero_shot_split",
]

#: sentence templates; "{}" is the list of objects ("a red striped circle and a blue dotted star")
CAPTION_TEMPLATES = [
    "a photo of {}.",
    "{}.",
    "a picture showing {}.",
    "there is {} in the scene.",
    "an image of {} on a cluttered background.",
    "a drawing of {}.",
    "we can see {}.",
    "{} on a noisy background.",
]
#: prompts of the zero-shot benchmark (and a good choice of the detector's PROMPT_TEMPLATES file)
ZERO_SHOT_TEMPLATES = ["a photo of a {}.", "there is a {} in the scene.", "a drawing of a {}."]

#: the defaults of :func:`generate_caption_corpus`; object side 25-60 % of a 64-px image is
#: 16-38 px, the pixel size of the detection data's objects in its 128-px images
DEFAULT_CORPUS_ARGS = dict(
    num_images=12000, image_size=64, max_objects=4, single_object_fraction=0.7,
    single_object_frac=(0.35, 0.7), multi_object_frac=(0.22, 0.38), seed=0,
)

_CORPUS_SALT = 0x5EED_C0DE
_ZERO_SHOT_SALT = 0x2E50_5407


def _article(phrase):
    return "an" if phrase[0] in "aeiou" else "a"


def describe_object(triple, rng):
    """One object's phrase with its article: the name, or the texture as a phrase (solid may go unsaid)."""
    colour, texture, shape = triple
    style = int(rng.integers(0, 3))
    if style == 0:
        phrase = object_name(triple)
    elif style == 1:
        phrase = f"{colour} {shape} {TEXTURE_PHRASES[texture]}"
    else:
        phrase = f"{texture} {colour} {shape}" if texture != "solid" else f"{colour} {shape}"
    return f"{_article(phrase)} {phrase}"


def make_caption(objects, rng):
    """A caption naming every (colour, texture, shape) triple of ``objects``, in random order."""
    phrases = [describe_object(objects[i], rng) for i in rng.permutation(len(objects))]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))].format(listed)


def _check_size(image_size):
    if int(image_size) < 32:
        raise ValueError(f"caption corpus image_size must be at least 32, got {image_size}.")
    return int(image_size)


#: images per independently seeded chunk of the corpus: chunk k draws from its own stream, so the
#: corpus is the same whatever the number of rendering processes
CORPUS_CHUNK = 250


def _render_chunk(chunk, num_images, size, max_objects, single_object_fraction, single_object_frac,
                  multi_object_frac, seed):
    """Images [chunk * CORPUS_CHUNK, ...) of the corpus, from chunk ``chunk``'s own random stream."""
    rng = np.random.default_rng([int(seed), _CORPUS_SALT, int(chunk)])
    count_here = min(CORPUS_CHUNK, num_images - chunk * CORPUS_CHUNK)
    images = np.empty((count_here, size, size, 3), dtype=np.uint8)
    captions, objects = [], []
    for i in range(count_here):
        single = max_objects == 1 or rng.random() < single_object_fraction
        count = 1 if single else int(rng.integers(2, max_objects + 1))
        chosen = [int(c) for c in rng.choice(len(WORLD_OBJECTS), size=count, replace=False)]
        triples = [WORLD_OBJECTS[c] for c in chosen]
        lo, hi = single_object_frac if single else multi_object_frac
        images[i], _ = render_scene(triples, size, size, rng, min_frac=lo, max_frac=hi)
        captions.append(make_caption(triples, rng))
        objects.append(chosen)
    return images, captions, objects


def _render_chunk_star(args):
    return _render_chunk(*args)


def _chunk_pool(workers):
    """A process pool of ``workers`` forked renderers, or None where forking is not available."""
    import multiprocessing

    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return multiprocessing.get_context("fork").Pool(workers)


def generate_caption_corpus(
    num_images=12000,
    image_size=64,
    max_objects=4,
    single_object_fraction=0.7,
    single_object_frac=(0.35, 0.7),
    multi_object_frac=(0.22, 0.38),
    seed=0,
    progress=False,
    workers=1,
):
    """
    Render the caption corpus in memory.

    Args:
        num_images (int): corpus size.
        image_size (int): side of the square images.
        max_objects (int): objects per image are 1..max_objects (1..4 by default).
        single_object_fraction (float): share of images with one object; the rest have 2..max_objects.
        single_object_frac, multi_object_frac (tuple[float, float]): object side range, as a fraction
            of the image side, in single- and multi-object images.
        seed (int): with the corpus salt and the chunk index, the only source of randomness.
        progress (bool): show a progress bar.
        workers (int): rendering processes (forked); the corpus does not depend on it (each chunk of
            :data:`CORPUS_CHUNK` images has its own seeded stream).

    Returns:
        dict with ``images`` (uint8 ndarray [N, S, S, 3]), ``captions`` (list[str]) and ``objects``
        (per image the list of indices into :data:`WORLD_OBJECTS`).
    """
    size = _check_size(image_size)
    if not 1 <= int(max_objects) <= 6:
        raise ValueError(f"max_objects must be in 1..6, got {max_objects}.")
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    num_images = int(num_images)
    jobs = [
        (chunk, num_images, size, int(max_objects), single_object_fraction, tuple(single_object_frac),
         tuple(multi_object_frac), seed)
        for chunk in range(-(-num_images // CORPUS_CHUNK))
    ]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_images, desc="caption corpus", unit="img", mininterval=2.0)
    pool = _chunk_pool(min(int(workers), len(jobs)))
    try:
        parts = pool.imap(_render_chunk_star, jobs) if pool is not None else map(_render_chunk_star, jobs)
        images = np.empty((num_images, size, size, 3), dtype=np.uint8)
        captions, objects, filled = [], [], 0
        for chunk_images, chunk_captions, chunk_objects in parts:
            images[filled:filled + len(chunk_images)] = chunk_images
            filled += len(chunk_images)
            captions += chunk_captions
            objects += chunk_objects
            if bar is not None:
                bar.update(len(chunk_images))
    finally:
        if pool is not None:
            pool.terminate()  # every chunk is consumed (or rendering failed): nothing left to wait for
        if bar is not None:
            bar.close()
    return {"images": images, "captions": captions, "objects": objects}


def zero_shot_split(per_object=2, image_size=64, object_frac=(0.35, 0.7), seed=0):
    """
    Held-out single-object images for zero-shot classification: ``per_object`` images of each of
    the 192 world objects, from a random stream no corpus or detection image uses.

    Returns:
        (uint8 ndarray [192 * per_object, S, S, 3], labels: int ndarray of indices into WORLD_OBJECTS)
    """
    size = _check_size(image_size)
    rng = np.random.default_rng([int(seed), _ZERO_SHOT_SALT])
    labels = np.repeat(np.arange(len(WORLD_OBJECTS)), int(per_object))
    images = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i], _ = render_scene([WORLD_OBJECTS[label]], size, size, rng, min_frac=object_frac[0],
                                    max_frac=object_frac[1])
    return images, labels
