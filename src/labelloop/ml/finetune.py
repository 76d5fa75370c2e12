"""Fine-tuning the pretrained network itself (the optional `--head finetune`), scikit-learn contract.

X is uint8 N×S×S×3 centre crops (ml.embeddings.centre_crop). The last stage, the head convolution and a new
linear layer train with AdamW and horizontal flips; the earlier stages stay frozen (BatchNorm in eval mode), which
keeps CPU training to seconds per epoch on a few hundred images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from labelloop.ml.pretrained import DEFAULT_MODEL


class FineTunedClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, model_name: str = DEFAULT_MODEL, weights: str | Path | None = None, multilabel: bool = False,
                 epochs: int = 5, lr: float = 1e-3, batch_size: int = 16, random_state: int = 0):
        self.model_name = model_name
        self.weights = weights
        self.multilabel = multilabel
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.random_state = random_state

    def _network(self, outputs: int):
        from labelloop.ml.pretrained import create_timm_model

        network = create_timm_model(self.model_name, self.weights, num_classes=outputs)
        trainable = ("blocks.6.", "conv_head.", "bn2.", "classifier.")
        for name, parameter in network.named_parameters():
            parameter.requires_grad = name.startswith(trainable)
        return network

    def _batches(self, X: np.ndarray):
        from labelloop.ml.embeddings import to_batch
        from labelloop.ml.pretrained import normalisation

        mean, std = normalisation(self.model_name)
        for start in range(0, len(X), self.batch_size):
            yield to_batch(list(X[start : start + self.batch_size]), mean, std)

    def fit(self, X: np.ndarray, y: np.ndarray) -> FineTunedClassifier:
        import torch

        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        X, y = np.asarray(X), np.asarray(y)
        if self.multilabel:
            self.classes_ = np.arange(y.shape[1])
            targets = torch.as_tensor(y, dtype=torch.float32)
            loss_function = torch.nn.BCEWithLogitsLoss()
        else:
            self.classes_ = np.unique(y)
            targets = torch.as_tensor(np.searchsorted(self.classes_, y), dtype=torch.long)
            loss_function = torch.nn.CrossEntropyLoss()
        network = self._network(len(self.classes_))
        optimiser = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=self.lr,
                                      weight_decay=1e-4)
        started = time.perf_counter()
        self.loss_curve_ = []
        for _ in range(self.epochs):
            network.train()
            for module in network.modules():  # frozen stages keep their ImageNet statistics
                if isinstance(module, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
            order = rng.permutation(len(X))
            total = 0.0
            for start in range(0, len(X), self.batch_size):
                index = order[start : start + self.batch_size]
                batch = next(self._batches(X[index]))
                flip = torch.as_tensor(rng.random(len(index)) < 0.5)
                batch[flip] = torch.flip(batch[flip], dims=[3])
                loss = loss_function(network(batch), targets[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(index)
            self.loss_curve_.append(round(total / max(len(X), 1), 5))
        self.training_seconds_ = time.perf_counter() - started
        self.network_ = network.eval()
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch

        outputs = []
        with torch.inference_mode():
            for batch in self._batches(np.asarray(X)):
                logits = self.network_(batch)
                outputs.append(torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1))
        return torch.cat(outputs).numpy().astype(np.float64) if outputs else np.zeros((0, len(self.classes_)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(X)
        return (proba >= 0.5).astype(int) if self.multilabel else self.classes_[proba.argmax(axis=1)]
