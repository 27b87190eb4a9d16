"""The ``recbole`` generator: a RecBole sequential model trained and scored on genrec-bench's split.

Training loop: this plugin's own (not RecBole's Trainer), so that RecBole sees exactly the training
examples genrec-bench defines and early stopping runs on genrec-bench's validation metric. It keeps
RecBole's semantics: ``model.calculate_loss`` per batch (after the model's batch ``transform``, e.g.
BERT4Rec's masking), uniform negatives for pairwise losses, RecBole's optimizer, ``clip_grad_norm``,
``eval_step`` and ``stopping_step``.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from genrec_bench.environment import seed_everything
from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.interfaces import Generator
from genrec_bench.training import training_summary

from . import data as rbdata
from .compat import import_recbole, quiet_recbole
from .settings import LEARNERS, build_config, check_settings, resolve_model


class RecBoleGenerator(Generator):
    """``generator: {name: recbole, model: GRU4Rec, config: {hidden_size: 64, epochs: 20}}``.

    ``config`` holds RecBole settings (its model YAML keys and training keys such as ``epochs``,
    ``train_batch_size``, ``learning_rate``, ``stopping_step``); the history cap comes from the protocol.
    """

    def __init__(self, model: str, config: dict | None = None):
        self.name = model
        self.params = dict(config or {})
        self.where = f"generator recbole ({model})"
        self.rb = import_recbole()
        self.model_class = resolve_model(self.rb, model, self.where)
        check_settings(model, self.model_class, self.params, self.where)
        sequences, n_items = rbdata.tiny_sequences()
        with tempfile.TemporaryDirectory(prefix="genrec-recbole-check-") as folder:
            self._build(sequences, n_items, rbdata.TINY_MAX_LEN, Path(folder), torch.device("cpu"))
            self._try_one_step()
        self.model = None
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0

    def _build(self, sequences: list, n_items: int, max_len: int, folder: Path, device: torch.device) -> None:
        """Config, Dataset, model and id maps for these training sequences."""
        rbdata.write_atomic(folder, sequences, n_items)
        self.config = build_config(self.rb, self.name, self.params, folder, max_len, device, self.where)
        try:
            with quiet_recbole():
                self.dataset = self.rb.create_dataset(self.config)
            self.transform = self.rb.construct_transform(self.config)  # first: it sets config keys models read
            self.model = self.model_class(self.config, self.dataset).to(device)
        except (KeyError, ValueError, TypeError, AssertionError, NotImplementedError, AttributeError) as exc:
            raise ConfigError(
                f"{self.where}: RecBole could not build the model on item-id sequences "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "check its config, or pick a model that needs no item features"
            ) from None
        self.item_map = rbdata.id_map(self.dataset, rbdata.ITEM, n_items)
        self.user_map = rbdata.id_map(self.dataset, rbdata.USER, len(sequences))
        self.n_items = n_items

    def _try_one_step(self) -> None:
        """One loss and one scoring pass on the tiny data, so that bad settings fail at construction."""
        examples = rbdata.training_examples(
            rbdata.tiny_sequences()[0], rbdata.TINY_MAX_LEN, self.item_map, self.user_map
        )
        try:
            self._loss(self._interaction(examples, torch.arange(len(examples)), torch.Generator()))
            self.model.eval()
            with torch.no_grad():
                self.model.full_sort_predict(self._interaction(examples, torch.arange(2), None))
        except Exception as exc:
            raise ConfigError(
                f"{self.where}: RecBole's model failed a trial step on tiny data "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "check its config"
            ) from None

    def _interaction(self, ex: rbdata.Examples, rows: torch.Tensor, rng: torch.Generator | None) -> Any:
        c, device = self.config, self.config["device"]
        fields = {
            c["USER_ID_FIELD"]: ex.users[rows],
            c["ITEM_ID_FIELD"] + c["LIST_SUFFIX"]: ex.item_seq[rows],
            c["ITEM_LIST_LENGTH_FIELD"]: ex.item_len[rows],
            c["ITEM_ID_FIELD"]: ex.targets[rows],
        }
        neg = c["train_neg_sample_args"] or {}
        if rng is not None and neg.get("distribution") not in (None, "none"):
            repeat = int(neg.get("sample_num") or 1)
            fields = {k: v.repeat(repeat, *([1] * (v.dim() - 1))) for k, v in fields.items()}
            fields[c["NEG_PREFIX"] + c["ITEM_ID_FIELD"]] = self._negatives(fields[c["ITEM_ID_FIELD"]], rng)
        interaction = self.rb.Interaction({k: v.to(device) for k, v in fields.items()})
        return self.transform(self.dataset, interaction) if rng is not None else interaction

    def _negatives(self, positives: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Uniform negatives over RecBole ids 1..n, never the positive (as RecBole's sampler)."""
        n = int(self.item_map.max()) + 1
        neg = torch.randint(1, n, positives.shape, generator=rng)
        while (clash := neg == positives).any():
            neg[clash] = torch.randint(1, n, (int(clash.sum()),), generator=rng)
        return neg

    def _loss(self, interaction: Any) -> torch.Tensor:
        self.model.train()
        loss = self.model.calculate_loss(interaction)
        return sum(loss) if isinstance(loss, tuple) else loss

    def fit(self, data, tokenizer, validate, ctx) -> None:
        seed_everything(ctx.seed)
        sequences = data.train_sequences()
        self._build(sequences, data.n_items, data.max_history, Path(ctx.work_dir) / "recbole", ctx.device)
        examples = rbdata.training_examples(sequences, data.max_history, self.item_map, self.user_map)
        if len(examples) == 0:
            raise TrainingError(f"{self.where}: no training sequences of 2+ items; the data set is too small")
        c = self.config
        optimizer = self._optimizer()
        rng = ctx.torch_generator()
        best, best_state, bad = -math.inf, None, 0
        epochs = int(c["epochs"])
        for epoch in ctx.progress(range(1, epochs + 1), desc=f"recbole {self.name}", total=epochs):
            start = time.perf_counter()
            loss = self._train_epoch(examples, optimizer, rng, ctx)
            record = {"epoch": epoch, "loss": loss, "train_seconds": time.perf_counter() - start}
            record.update(samples=len(examples), steps=math.ceil(len(examples) / int(c["train_batch_size"])))
            if epoch % int(c["eval_step"] or 1) == 0 or epoch == epochs:
                self.model.eval()
                record["valid"] = score = next(iter(validate().values()))
                if score > best:
                    best, best_state, bad, self.best_epoch = score, copy.deepcopy(self.model.state_dict()), 0, epoch
                else:
                    bad += 1
            self.history.append(record)
            ctx.logger.debug("recbole %s epoch %d: %s", self.name, epoch, record)
            if bad > int(c["stopping_step"]):  # RecBole's early_stopping rule
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        rule = "patience" if bad > int(c["stopping_step"]) else "epoch_cap"
        # RecBole stops after stopping_step + 1 bad validations
        self.training = training_summary(rule, self.history, self.best_epoch, int(c["stopping_step"]) + 1, epochs)

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        kwargs = {"lr": float(c["learning_rate"])}
        if c["weight_decay"]:
            kwargs["weight_decay"] = float(c["weight_decay"])
        return LEARNERS[str(c["learner"]).lower()](self.model.parameters(), **kwargs)

    def _train_epoch(self, examples: rbdata.Examples, optimizer, rng: torch.Generator, ctx) -> float:
        batch_size = int(self.config["train_batch_size"])
        clip = self.config["clip_grad_norm"]
        order = torch.randperm(len(examples), generator=rng)
        total = 0.0
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            loss = self._loss(self._interaction(examples, rows, rng))
            if not torch.isfinite(loss):
                raise TrainingError(f"{self.where}: the loss became {loss.item()}; lower learning_rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), **clip)
            optimizer.step()
            total += loss.item() * len(rows)
        return total / len(examples)

    def generate(self, batch, ctx) -> torch.Tensor:
        c = self.config
        item_seq, item_len = rbdata.histories(batch.items, self.item_map)
        interaction = self.rb.Interaction(
            {
                c["USER_ID_FIELD"]: self.user_map.to(batch.users.device)[batch.users],
                c["ITEM_ID_FIELD"] + c["LIST_SUFFIX"]: item_seq,
                c["ITEM_LIST_LENGTH_FIELD"]: item_len,
            }
        )
        scores = self.model.full_sort_predict(interaction.to(c["device"]))
        return scores.view(len(batch), -1)[:, self.item_map.to(scores.device)].float()

    def health(self) -> dict[str, float]:
        epochs = [r["train_seconds"] for r in self.history]
        return {
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(len(self.history)),
            "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan"),
            "train_seconds_per_epoch": sum(epochs) / len(epochs) if epochs else float("nan"),
            "parameters": float(sum(p.numel() for p in self.model.parameters())) if self.model else 0.0,
        }
