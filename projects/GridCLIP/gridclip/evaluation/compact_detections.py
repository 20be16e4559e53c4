"""
``CompactDetections``: an evaluation's box detections as four numpy arrays instead of one Python dict
per detection.

Detectron2's ``LVISEvaluator`` keeps ``instances_to_coco_json`` dicts (about 0.5 kB each): 5.9 M of
them for LVIS val at 300 detections per image, gathered to rank 0 as pickled lists. The arrays hold
the same values (28 bytes per detection) in the same order: ``bbox`` is Detectron2's float32
XYXY -> XYWH conversion, ``score`` the float32 score, so ``float(x)`` of an element equals the value
in Detectron2's dict, and :meth:`write_json` writes byte for byte the ``lvis_instances_results.json``
Detectron2 writes.
"""
import json
from dataclasses import dataclass

import numpy as np
from detectron2.structures import BoxMode

__all__ = ["CompactDetections"]

#: detections per json.dumps call when streaming the results file
_JSON_CHUNK = 100_000


@dataclass
class CompactDetections:
    """
    Box detections of many images, in processing order.

    Attributes:
        image_id (np.ndarray): [N] int64.
        category_id (np.ndarray): [N] int64: the model's class index (``pred_classes``) until
            :meth:`with_category_ids` maps it to the dataset's category ids.
        bbox (np.ndarray): [N, 4] float32, XYWH_ABS.
        score (np.ndarray): [N] float32.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls):
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    @classmethod
    def from_instances(cls, instances, image_id):
        """Detections of one image from a CPU ``Instances`` (``pred_boxes`` XYXY_ABS, ``scores``, ``pred_classes``)."""
        n = len(instances)
        if n == 0:
            return cls.empty()
        boxes = BoxMode.convert(instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        return cls(
            np.full(n, int(image_id), np.int64),
            instances.pred_classes.numpy().astype(np.int64, copy=False),
            np.asarray(boxes, dtype=np.float32).reshape(n, 4),
            instances.scores.numpy().astype(np.float32, copy=False),
        )

    @classmethod
    def from_coco_json(cls, results):
        """From a list of ``{"image_id", "category_id", "bbox", "score"}`` dicts (tests, tools)."""
        if not results:
            return cls.empty()
        return cls(
            np.array([r["image_id"] for r in results], np.int64),
            np.array([r["category_id"] for r in results], np.int64),
            np.array([r["bbox"] for r in results], np.float32).reshape(-1, 4),
            np.array([r["score"] for r in results], np.float32),
        )

    @classmethod
    def concatenate(cls, parts):
        parts = [p for p in parts if p is not None]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.image_id for p in parts]),
            np.concatenate([p.category_id for p in parts]),
            np.concatenate([p.bbox for p in parts]).reshape(-1, 4),
            np.concatenate([p.score for p in parts]),
        )

    def __len__(self):
        return int(self.score.shape[0])

    @property
    def nbytes(self):
        return int(self.image_id.nbytes + self.category_id.nbytes + self.bbox.nbytes + self.score.nbytes)

    def with_category_ids(self, index_to_category_id):
        """
        A copy with ``category_id`` mapped from the model's class index to dataset category ids.

        Args:
            index_to_category_id (dict[int, int]): class index -> category id (every index present must
                be a key, as in Detectron2's reverse ``thing_dataset_id_to_contiguous_id``).
        """
        if len(self) == 0:
            return self
        size = max(max(index_to_category_id) + 1, int(self.category_id.max()) + 1)
        lookup = np.full(size, -1, np.int64)
        for index, category_id in index_to_category_id.items():
            lookup[int(index)] = int(category_id)
        mapped = lookup[self.category_id]
        if (mapped < 0).any():
            bad = int(self.category_id[mapped < 0][0])
            raise KeyError(f"class index {bad} has no dataset category id")
        return CompactDetections(self.image_id, mapped, self.bbox, self.score)

    def to_coco_json(self, start=0, stop=None):
        """Detections ``start:stop`` as Detectron2's ``instances_to_coco_json`` dicts (same key order, values)."""
        stop = len(self) if stop is None else min(stop, len(self))
        image_ids = self.image_id[start:stop].tolist()
        category_ids = self.category_id[start:stop].tolist()
        boxes = self.bbox[start:stop].tolist()
        scores = self.score[start:stop].tolist()
        return [
            {"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(image_ids, category_ids, boxes, scores)
        ]

    def write_json(self, f):
        """Write ``json.dumps(self.to_coco_json())`` to the text file ``f`` in chunks (bounded memory)."""
        f.write("[")
        for start in range(0, len(self), _JSON_CHUNK):
            if start:
                f.write(", ")
            f.write(json.dumps(self.to_coco_json(start, start + _JSON_CHUNK))[1:-1])
        f.write("]")

    def state(self):
        """Plain dict of the four arrays (pickles compactly; for ``comm.gather`` and ``np.savez``)."""
        return {"image_id": self.image_id, "category_id": self.category_id, "bbox": self.bbox, "score": self.score}

    @classmethod
    def from_state(cls, state):
        return cls(
            np.asarray(state["image_id"], np.int64), np.asarray(state["category_id"], np.int64),
            np.asarray(state["bbox"], np.float32).reshape(-1, 4), np.asarray(state["score"], np.float32),
        )
