"""The task table is the one place a task is defined: the schema, the losses and the model file follow it."""

import typing

import pytest

from mixscale.config import TrainConfig
from mixscale.config.schema import TrainConfig as Schema
from mixscale.model.file import MODEL_TASKS
from mixscale.tasks import TASKS, get_task


def test_schema_task_choices_are_the_table():
    assert typing.get_args(Schema.model_fields["task"].annotation) == tuple(TASKS)


def test_model_tasks_are_what_files_record():
    assert MODEL_TASKS == ("segmentation", "regression", "noise2inverse", "detection")
    assert {get_task(t).model_task for t in TASKS} == set(MODEL_TASKS)


@pytest.mark.parametrize("task, loss, classes, image_targets", [
    ("segmentation", "ce", True, False), ("regression", "mse", False, True),
    ("reconstruction", "mse", False, True), ("detection", "ce", True, False),
    ("noise2inverse", "mse", False, True),
])
def test_rows(task, loss, classes, image_targets):
    row = get_task(task)
    assert (row.default_loss, row.classes, row.image_targets) == (loss, classes, image_targets)


def test_default_loss_of_a_config_comes_from_its_row():
    cfg = TrainConfig.model_validate({"task": "regression", "run_dir": "r",
                                      "data": {"train_images": "a.tif", "train_labels": "b.tif"}})
    assert cfg.loss_spec() == "mse"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"task='denoise' is not allowed; expected one of \['segmentation'"):
        get_task("denoise")
