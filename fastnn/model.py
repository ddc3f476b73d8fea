"""A trained model read from a checkpoint: parameters, the task, the class labels and the feature
names, whichever wrote it (``fastnn train --checkpoint``, ``train(checkpoint=, info=)``, or an
estimator's ``save``).  ``fastnn predict`` and the estimators' ``load`` use it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import checkpoint as ckpt_io
from .params import Params
from .reference import softmax


@dataclass
class Model:
    """``params``; ``task``: ``"classify"`` (softmax over ``classes``) or ``"regress"``;
    ``classes``: the labels, in output order; ``feature_names``: the input columns' names, in
    order (None when unknown)."""

    params: Params
    task: str
    classes: Optional[np.ndarray] = None
    feature_names: Optional[list] = None
    target: Optional[str] = None

    @property
    def n_features(self) -> int:
        return self.params.w1.shape[0]

    def outputs(self, x, kernel="auto") -> np.ndarray:
        from .api import predict

        return predict(self.params, x, kernel=kernel)

    def predict(self, x, kernel="auto") -> np.ndarray:
        """Class labels (classify) or the outputs (regress)."""
        z2 = self.outputs(x, kernel)
        if self.task == "classify":
            return self.classes[np.argmax(z2, axis=1)]
        return z2

    def predict_proba(self, x, kernel="auto") -> np.ndarray:
        if self.task != "classify":
            raise ValueError("probabilities: the model is a regression, not a classifier")
        return softmax(self.outputs(x, kernel).astype(np.float64))


def read_model(path) -> Model:
    """The model of a checkpoint file; ``CheckpointError`` if it is not one, ValueError when it
    holds no task (a checkpoint of ``train`` called without ``info``: its params only, a
    regression over unnamed features)."""
    ck = ckpt_io.load(path)
    meta = ck.meta
    if "estimator" in meta:  # written by MLPClassifier/MLPRegressor.save
        classifier = meta["estimator"] == "MLPClassifier"
        classes = (np.array(meta["classes_"], dtype=np.dtype(meta["classes_dtype"]))
                   if classifier else None)
        return Model(ck.params, "classify" if classifier else "regress", classes,
                     meta.get("feature_names_in_"))
    info = meta.get("info") or {}
    task = info.get("task", "regress")
    classes = None
    if task == "classify":
        classes = np.array(info["classes"], dtype=np.dtype(info.get("classes_dtype", "O")))
        if len(classes) != ck.params.w2.shape[1]:
            raise ckpt_io.CheckpointError(f"checkpoint {path!r}: {len(classes)} class labels "
                                          f"for {ck.params.w2.shape[1]} outputs")
    return Model(ck.params, task, classes, info.get("feature_names"), info.get("target"))
