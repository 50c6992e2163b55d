"""k-NN accuracy of an embedding: against scikit-learn, separable vs random data, duplicates, errors."""

import numpy as np
import pytest

from mixscale.metrics import knn_accuracy


@pytest.mark.parametrize("k", [1, 4, 5])
def test_matches_scikit_learn_leave_one_out(k):
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(k)
    labels = rng.integers(0, 3, size=45)
    points = rng.normal(size=(45, 4)) + 0.8 * labels[:, None]  # overlapping classes: some errors
    expected = cross_val_score(KNeighborsClassifier(n_neighbors=k), points, labels, cv=LeaveOneOut()).mean()
    assert knn_accuracy(points, labels, k=k) == pytest.approx(expected, abs=1e-12)
    assert 0.4 < expected < 1.0  # the comparison covers both right and wrong votes


def test_separable_classes_score_one_and_random_labels_score_chance():
    rng = np.random.default_rng(0)
    labels = np.repeat(["circle", "square", "triangle", "annulus"], 50)
    centres = {"circle": (0, 0), "square": (10, 0), "triangle": (0, 10), "annulus": (10, 10)}
    points = np.array([centres[c] for c in labels]) + rng.normal(0, 1, size=(200, 2))
    assert knn_accuracy(points, labels, k=5) == 1.0
    shuffled = rng.permutation(labels)
    assert 0.1 < knn_accuracy(points, shuffled, k=5) < 0.45  # chance is 0.25


def test_hand_example_with_tied_vote_and_duplicates():
    # points on a line; point 2 (label 1) has neighbours 1 (label 0) and 3 (label 1) -> tie -> smallest label 0
    points = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [10.0], [10.0]])
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    # k=2 votes: p0 {1,2}->0 ok; p1 {0,2}->tie->0 ok; p2 {1,3}->tie->0 wrong; p3 {2,1}->tie->0 wrong;
    # duplicates p4..p6 each see the two other copies -> 2 ok
    assert knn_accuracy(points, labels, k=2) == pytest.approx(5 / 7)
    # five copies of one point: a point need not be among its own 3 nearest; exactly one entry is still dropped
    assert knn_accuracy(np.zeros((5, 2)), [0, 0, 0, 0, 1], k=2) == pytest.approx(4 / 5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(embedding=np.zeros((4, 2)), labels=[0, 1, 0], k=1), r"labels must have shape \(4,\)"),
    (dict(embedding=np.zeros((4, 2)), labels=[0, 1, 0, 1], k=4),
     r"k=4 is not allowed; expected an integer in \[1, 3\]"),
    (dict(embedding=np.zeros(4), labels=[0, 1, 0, 1], k=1), r"\(N, D\) array with N >= 2"),
    (dict(embedding=[[0.0], [np.nan]], labels=[0, 1], k=1), "NaN or infinite"),
])
def test_bad_input_names_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        knn_accuracy(kwargs.pop("embedding"), **kwargs)
