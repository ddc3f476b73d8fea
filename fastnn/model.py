"""A trained model read from a checkpoint: parameters, the task, the class labels and the feature
names, whichever wrote it (``fastnn train --checkpoint``, ``train(checkpoint=, info=)``, or an
estimator's ``save``).  ``fastnn predict`` and the estimators' ``load`` use it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import checkpoint as ckpt_io
from .params import Params
from .reference import OUTPUTS, output_layer


@dataclass
class Model:
    """``params``; ``task``: ``"classify"`` or ``"regress"``; ``classes``: the labels, in
    output order; ``feature_names``: the input columns' names, in order (None when unknown);
    ``activation``: the hidden layer's; ``output``: the output layer's (``identity``, ``exp``,
    ``softmax`` over the classes, or ``logistic``: one output for two classes, or one per label
    of a multilabel model)."""

    params: Params
    task: str
    classes: Optional[np.ndarray] = None
    feature_names: Optional[list] = None
    target: Optional[str] = None
    activation: str = "relu"
    output: Optional[str] = None

    def __post_init__(self):
        if self.output is None:
            self.output = "softmax" if self.task == "classify" else "identity"

    @property
    def n_features(self) -> int:
        return self.params.w1.shape[0]

    @property
    def multilabel(self) -> bool:
        return self.output == "logistic" and self.params.w2.shape[1] > 1

    def outputs(self, x, kernel="auto") -> np.ndarray:
        """The output layer's values: the regression's predictions, or the class (label)
        probabilities."""
        from .api import predict

        z = predict(self.params, x, kernel=kernel, activation=self.activation)
        return output_layer(self.output, z.astype(np.float64))

    def predict(self, x, kernel="auto") -> np.ndarray:
        """Class labels (classify: an indicator matrix for a multilabel model) or the outputs
        (regress)."""
        out = self.outputs(x, kernel)
        if self.task != "classify":
            return out
        if self.output != "logistic":
            return self.classes[np.argmax(out, axis=1)]
        if self.multilabel:
            return (out > 0.5).astype(int)
        return self.classes[(out[:, 0] > 0.5).astype(int)] if len(self.classes) > 1 else \
            np.repeat(self.classes[:1], len(out))

    def predict_proba(self, x, kernel="auto") -> np.ndarray:
        """A column per class (two, ``1 - p`` and ``p``, for one logistic output)."""
        if self.task != "classify":
            raise ValueError("probabilities: the model is a regression, not a classifier")
        out = self.outputs(x, kernel)
        if self.output == "logistic" and not self.multilabel:
            return np.hstack([1 - out, out])
        return out


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
        fitted = meta.get("fitted") or {}
        return Model(ck.params, "classify" if classifier else "regress", classes,
                     meta.get("feature_names_in_"),
                     activation=(meta.get("settings") or {}).get("activation", "relu"),
                     output=fitted.get("out_activation_"))
    info = meta.get("info") or {}
    task = info.get("task", "regress")
    classes = None
    if task == "classify":
        classes = np.array(info["classes"], dtype=np.dtype(info.get("classes_dtype", "O")))
        if len(classes) != ck.params.w2.shape[1]:
            raise ckpt_io.CheckpointError(f"checkpoint {path!r}: {len(classes)} class labels "
                                          f"for {ck.params.w2.shape[1]} outputs")
    return Model(ck.params, task, classes, info.get("feature_names"), info.get("target"),
                 activation=meta.get("activation", "relu"),
                 output=OUTPUTS.get(meta.get("loss"), None))
