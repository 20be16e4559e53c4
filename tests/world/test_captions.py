"""The world's caption corpus: deterministic, all 192 objects, 1-4 objects per image, captions name them."""
import numpy as np

from gridclip.world import WORLD_OBJECTS, generate_caption_corpus, zero_shot_split
from gridclip.world.attributes import TEXTURE_PHRASES
from gridclip.world.captions import CAPTION_TEMPLATES


def test_corpus_is_deterministic_covers_all_objects_and_names_each_object():
    corpus = generate_caption_corpus(num_images=240, seed=0)
    again = generate_caption_corpus(num_images=240, seed=0)
    other = generate_caption_corpus(num_images=20, seed=1)
    assert np.array_equal(corpus["images"], again["images"]) and corpus["captions"] == again["captions"]
    assert not np.array_equal(corpus["images"][:20], other["images"])
    assert corpus["images"].shape == (240, 64, 64, 3) and corpus["images"].dtype == np.uint8

    counts = [len(o) for o in corpus["objects"]]
    assert min(counts) == 1 and max(counts) == 4
    assert len({c for objs in corpus["objects"] for c in objs}) > 130  # 240 images already show most of 192
    phrasings = set()
    for caption, objects in zip(corpus["captions"], corpus["objects"]):
        for index in objects:
            colour, texture, shape = WORLD_OBJECTS[index]
            # each object is named: its colour and shape, and its texture (word or phrase) unless solid
            assert colour in caption and shape in caption, (caption, WORLD_OBJECTS[index])
            assert texture == "solid" or texture in caption or TEXTURE_PHRASES[texture] in caption, caption
        # the template: the one with the longest fixed prefix + suffix that frames the caption
        framing = [t for t in CAPTION_TEMPLATES if caption.startswith(t.split("{}")[0]) and caption.endswith(t.split("{}")[1])]
        phrasings.add(max(framing, key=len))
    assert len(phrasings) >= 5  # varied templates

    # objects are drawn: an image's pixels hold each object's colour
    image, (colour, _, _) = corpus["images"][0], WORLD_OBJECTS[corpus["objects"][0][0]]
    from gridclip.world.attributes import COLOURS

    assert (np.linalg.norm(image.reshape(-1, 3).astype(float) - COLOURS[colour], axis=1) < 40).sum() > 20


def test_zero_shot_split_is_held_out_single_objects_of_every_name():
    images, labels = zero_shot_split(per_object=1)
    assert images.shape[0] == len(WORLD_OBJECTS) and sorted(labels.tolist()) == list(range(len(WORLD_OBJECTS)))
    corpus = generate_caption_corpus(num_images=100, seed=0)
    flat = {img.tobytes() for img in corpus["images"]}
    assert not any(img.tobytes() in flat for img in images)


def test_corpus_is_the_same_rendered_by_one_or_several_processes():
    from gridclip.world.captions import CORPUS_CHUNK

    num_images = 2 * CORPUS_CHUNK + 7  # two full chunks and a partial one
    serial = generate_caption_corpus(num_images=num_images, seed=3, workers=1)
    forked = generate_caption_corpus(num_images=num_images, seed=3, workers=2)
    assert forked["images"].shape == (num_images, 64, 64, 3)
    assert np.array_equal(serial["images"], forked["images"])
    assert serial["captions"] == forked["captions"] and serial["objects"] == forked["objects"]
    # the chunks are different images (each its own stream), not one chunk repeated
    assert not np.array_equal(serial["images"][:CORPUS_CHUNK], serial["images"][CORPUS_CHUNK:2 * CORPUS_CHUNK])
