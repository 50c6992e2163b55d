"""The task table: what each task trains on, how it is judged, what it outputs and records.

A task is data, not a branch: code asks the table (``get_task(name).targets``,
``.default_loss``, ``.outputs``) instead of comparing task names. Adding a task
is adding a row here (and the code its new target kind needs, if any).

Examples
--------
>>> get_task("segmentation").default_loss
'ce'
>>> get_task("reconstruction").model_task  # an autoencoder's file predicts like a regression model
'regression'
>>> [t for t in TASKS if get_task(t).classes]
['segmentation', 'detection']
"""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import check_choice


@dataclass(frozen=True)
class Task:
    """One row of the task table.

    Attributes
    ----------
    name : str
    targets : {"labels", "images", "inputs", "subsets", "points"}
        What training compares the output with: integer label maps, float
        images (NaN = unlabelled), the input images themselves, one of K
        independent reconstructions of the same object while the mean of the
        others is the input (Noise2Inverse), or point CSVs.
    target_key : str or None
        The config's ``data`` key that holds the training targets
        (``train_labels``, ``train_points``; None when the inputs are the targets).
    default_loss : str
        The loss when the config names none.
    classes : bool
        The output is class scores: validated with a confusion matrix, softmax at
        prediction, class names in the model file.
    val_metric : str
        The validation metric logged each epoch besides ``val_loss``.
    per_patch : bool
        One output per patch (a patch classifier), not one per pixel.
    model_task : str
        What the model file records: the task prediction needs to know.
    outputs : tuple of str
        The arrays prediction writes (``probabilities`` only when asked for).
    splits : tuple of str
        The allowed ``data.split`` values.
    """

    name: str
    targets: str
    target_key: str | None
    default_loss: str
    classes: bool
    val_metric: str
    per_patch: bool
    model_task: str
    outputs: tuple[str, ...]
    splits: tuple[str, ...]

    @property
    def image_targets(self) -> bool:
        """Float image targets (regression, reconstruction, noise2inverse): de-normalised at prediction."""
        return self.targets in ("images", "inputs", "subsets")


_ROWS = (
    Task("segmentation", "labels", "train_labels", "ce", True, "val_f1_macro", False, "segmentation",
         ("labels", "probabilities"), ("auto", "images", "pixels")),
    Task("regression", "images", "train_labels", "mse", False, "val_mse", False, "regression",
         ("prediction",), ("auto", "images", "pixels")),
    Task("reconstruction", "inputs", None, "mse", False, "val_mse", False, "regression",
         ("prediction",), ("auto", "images")),
    # Noise2Inverse (Hendriksen, Pelt & Batenburg 2020), the X:1 strategy: the input image holds K
    # reconstructions from disjoint projection subsets along its channel axis; the mean of K-1 of them
    # predicts the one left out; prediction averages the K combinations (no clean target is needed)
    Task("noise2inverse", "subsets", None, "mse", False, "val_mse", False, "noise2inverse",
         ("prediction",), ("auto", "images")),
    Task("detection", "points", "train_points", "ce", True, "val_f1_macro", True, "detection",
         ("points",), ("auto", "images", "region")),
)

TASKS: dict[str, Task] = {t.name: t for t in _ROWS}
#: the tasks a model file can record (reconstruction models are recorded as regression)
MODEL_TASKS: tuple[str, ...] = tuple(dict.fromkeys(t.model_task for t in _ROWS))


def get_task(name: str) -> Task:
    """The row of task ``name``; a ``ValueError`` listing the known tasks otherwise."""
    return TASKS[check_choice("task", name, TASKS)]
