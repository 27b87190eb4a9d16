"""EarlyStopping: validates when due, keeps the best weights, stops after `patience` bad checks."""

import pytest
import torch

from genrec_bench.errors import TrainingError
from genrec_bench.training import EarlyStopping


def test_best_weights_are_restored_and_patience_counts_checks():
    model = torch.nn.Linear(1, 1, bias=False)
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.9])
    stopper = EarlyStopping(model, lambda: {"ndcg@10": next(scores)}, patience=2, eval_every=1)
    stops = []
    for epoch in range(1, 6):
        model.weight.data.fill_(epoch)
        stops.append(stopper.update(epoch, {"epoch": epoch, "loss": 1.0}))
        if stops[-1]:
            break
    assert stops == [False, False, False, True] and stopper.best_epoch == 2
    stopper.restore()
    assert model.weight.item() == 2 and not model.training


def test_validates_only_when_due_and_rejects_nan():
    calls = []
    stopper = EarlyStopping(
        torch.nn.Linear(1, 1), lambda: calls.append(1) or {"m": 0.0}, patience=5, eval_every=3, epochs=4
    )
    for epoch in range(1, 5):
        stopper.update(epoch, {"epoch": epoch, "loss": 0.5})
    assert len(calls) == 2  # epoch 3 and the last epoch
    with pytest.raises(TrainingError, match="loss became nan"):
        stopper.update(5, {"loss": float("nan")})
