"""Metrics agree with scikit-learn and with hand counts."""
import numpy as np
from sklearn import metrics as skm

from nas import metrics


def _predictions(seed, n=200, k=4):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels] * rng.random((n, 1))
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  return labels, probs


def test_agree_with_sklearn():
  for seed in range(3):
    labels, probs = _predictions(seed)
    preds = probs.argmax(axis=1)
    result = metrics.classification_metrics(labels, probs)
    assert np.isclose(result['accuracy'], skm.accuracy_score(labels, preds))
    assert np.isclose(result['balanced_accuracy'], skm.balanced_accuracy_score(labels, preds))
    assert np.isclose(result['macro_f1'], skm.f1_score(labels, preds, average='macro'))
    assert np.isclose(result['auc'], skm.roc_auc_score(labels, probs, multi_class='ovr'))
    assert np.allclose(result['sensitivity'], skm.recall_score(labels, preds, average=None))
    assert result['confusion_matrix'] == skm.confusion_matrix(labels, preds).tolist()
    assert result['num_examples'] == len(labels)


def test_specificity_by_hand():
  labels = np.array([0, 0, 1, 1, 2, 2])
  preds = np.array([0, 1, 1, 1, 2, 0])
  probs = np.eye(3)[preds]
  result = metrics.classification_metrics(labels, probs)
  # class 0: negatives are 4 samples (1, 1, 2, 2), one of them (the last) predicted 0.
  assert np.allclose(result['specificity'], [3 / 4, 3 / 4, 1.0])
  assert np.allclose(result['sensitivity'], [1 / 2, 1.0, 1 / 2])


def test_binary_auc_and_absent_class():
  labels = np.array([0, 0, 1, 1])
  probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
  result = metrics.classification_metrics(labels, probs)
  assert np.isclose(result['auc'], skm.roc_auc_score(labels, probs[:, 1]))
  one_class = metrics.classification_metrics(np.array([1, 1]), probs[:2])
  assert np.isnan(one_class['auc'])
  assert one_class['sensitivity'][0] is None


def test_expected_calibration_error_by_hand():
  # Two confident right answers in the top bin, two 0.55-confident answers (one right) in
  # the bin [8/15, 9/15): ECE = 2/4 * |1 - 0.95| + 2/4 * |0.5 - 0.55| = 0.05.
  labels = np.array([0, 1, 0, 1])
  probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.55, 0.45]])
  result = metrics.calibration(labels, probs)
  assert np.isclose(result['ece'], 0.05)
  bins = result['calibration']
  assert bins['count'][14] == 2 and bins['count'][8] == 2 and sum(bins['count']) == 4
  assert np.isclose(bins['accuracy'][8], 0.5) and np.isclose(bins['confidence'][14], 0.95)
  assert bins['accuracy'][0] is None  # an empty bin


def test_best_threshold_accuracy_against_every_cut():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 300)
  # Rounded scores, so that ties are thresholds that cannot split.
  scores = np.round(labels * 0.3 + rng.random(300), 1)
  every_cut = max(np.mean((scores >= t) == labels) for t in [*np.unique(scores), np.inf])
  assert np.isclose(metrics.best_threshold_accuracy(labels, scores), every_cut)
  assert metrics.best_threshold_accuracy(labels, scores) >= np.mean((scores >= 0.5) == labels)


def test_shifted_class_shares_finds_the_new_mix():
  # A calibrated model of two overlapping Gaussians trained at a 50/50 mix, applied to images
  # of which 80% are positive: EM recovers the 80%, and argmax of the unadjusted probs does not.
  rng = np.random.default_rng(0)
  labels = (rng.random(20_000) < 0.8).astype(int)
  x = rng.normal(labels * 1.0, 1.0)
  positive = 1 / (1 + np.exp(-(x - 0.5)))  # the 50/50 posterior of N(1, 1) against N(0, 1)
  probs = np.stack([1 - positive, positive], axis=1)
  shares, adjusted = metrics.shifted_class_shares(probs, np.array([0.5, 0.5]))
  assert abs(shares[1] - 0.8) < 0.02
  assert np.mean(adjusted.argmax(1) == labels) > np.mean(probs.argmax(1) == labels) + 0.03
