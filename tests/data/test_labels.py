"""Label conventions: mapping, loud errors, and warnings for suspicious files."""

import logging

import numpy as np
import pytest

from mixscale.data import LabelConventionWarning, check_label_convention, prepare_labels


def test_dense_labels_pass_through_as_int64():
    lab = np.array([[0, 1, 2], [-1, 2, 0]], dtype=np.int16)
    out = prepare_labels(lab, num_classes=3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, lab)
    assert out is not lab


def test_scribbles_map_zero_to_ignore_and_shift_classes():
    lab = np.array([[0, 1, 3], [2, 0, 0]], dtype=np.uint8)
    out = prepare_labels(lab, num_classes=3, convention="scribble", ignore_index=-100)
    np.testing.assert_array_equal(out, [[-100, 0, 2], [1, -100, -100]])


def test_unsigned_dense_labels_with_other_ignore_value():
    lab = np.array([0, 1, 255, 1], dtype=np.uint8)
    np.testing.assert_array_equal(prepare_labels(lab, num_classes=2, ignore_index=255), lab)


def test_whole_floats_accepted_fractional_rejected():
    np.testing.assert_array_equal(prepare_labels(np.array([0.0, 1.0, -1.0]), num_classes=2), [0, 1, -1])
    with pytest.raises(ValueError, match=r"non-integer values such as \[0\.5\]"):
        prepare_labels(np.array([0.0, 0.5]), num_classes=2)
    with pytest.raises(ValueError, match="non-finite"):
        prepare_labels(np.array([0.0, np.nan]), num_classes=2)
    with pytest.raises(TypeError, match="integer array, got dtype <U1"):
        prepare_labels(np.array(["a"]), num_classes=2)


def test_values_outside_the_convention_are_named():
    with pytest.raises(ValueError, match=r"values \[3, 7\].*convention='dense'.*allowed: 0\.\.2 and ignore_index=-1"):
        prepare_labels(np.array([0, 3, 7, -1]), num_classes=3)
    with pytest.raises(ValueError, match=r"values \[-1\].*convention='scribble'.*0 \(unlabelled\) and 1\.\.2"):
        prepare_labels(np.array([0, 1, -1]), num_classes=2, convention="scribble")
    with pytest.raises(ValueError, match="suggest convention='scribble'"):
        prepare_labels(np.array([0, 1, 2]), num_classes=2)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match=r"convention='sparse' is not allowed; expected one of \['dense', 'scribble'\]"):
        prepare_labels(np.zeros(3, int), num_classes=2, convention="sparse")
    with pytest.raises(ValueError, match="num_classes=0 is not allowed; expected an integer >= 1"):
        prepare_labels(np.zeros(3, int), num_classes=0)
    with pytest.raises(ValueError, match="ignore_index=1 collides with class 1"):
        prepare_labels(np.zeros(3, int), num_classes=2, ignore_index=1)


def test_labelled_fraction_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="mixscale.data.labels"):
        prepare_labels(np.array([0, 0, 0, 1]), num_classes=1, convention="scribble")
    assert "convention='scribble'" in caplog.text and "25 % of pixels labelled" in caplog.text


def test_dense_file_holding_scribbles_is_flagged():
    lab = np.zeros((50, 50), int)
    lab[10, 10:20] = 1
    lab[30, 5:15] = 2
    with pytest.warns(LabelConventionWarning, match="look like the scribble convention"):
        messages = check_label_convention(lab, convention="dense", num_classes=2)
    assert len(messages) == 1


def test_scribble_file_without_zeros_is_flagged():
    lab = np.random.default_rng(0).integers(1, 3, (20, 20))
    with pytest.warns(LabelConventionWarning, match="labels look dense"):
        messages = check_label_convention(lab, convention="scribble", num_classes=2)
    assert messages == [m for m in messages if "look dense" in m] and len(messages) == 1


def test_missing_class_and_nearly_empty_labels_are_flagged():
    lab = np.full((100, 100), -1)
    lab[0, 0] = 0
    with pytest.warns(LabelConventionWarning) as record:
        messages = check_label_convention(lab, convention="dense", num_classes=3)
    assert len(record) == len(messages) == 3
    assert "class 1 (stored as value 1) has no labelled pixels" in messages
    assert "class 2 (stored as value 2) has no labelled pixels" in messages
    assert "only 1 of 10000 pixels" in messages[2]
    scribble = np.zeros((10, 10), int)
    scribble[:5] = 2
    with pytest.warns(LabelConventionWarning, match=r"class 0 \(stored as value 1\) has no labelled"):
        check_label_convention(scribble, convention="scribble", num_classes=2)


def test_clean_labels_give_no_warning(recwarn):
    lab = np.full((40, 40), -1)
    lab[:10] = 0
    lab[20:25] = 1
    assert check_label_convention(lab, convention="dense", num_classes=2) == []
    scribble = np.zeros((40, 40), int)
    scribble[:3] = 1
    scribble[-3:] = 2
    assert check_label_convention(scribble, convention="scribble", num_classes=2) == []
    assert len(recwarn) == 0
