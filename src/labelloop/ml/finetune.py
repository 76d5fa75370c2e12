"""Fine-tuning the pretrained network itself (the optional `--head finetune`), scikit-learn contract.

`LastStageClassifier` (the head since 2026-12-07): the network's stages 0-5 run once per image and its mirror
(`TrunkMaps`, kept in memory for the job); its last stage, head convolution and a new linear layer train on those
maps, so the calibration can afford to cross-fit it (5 fold models and a final one).
`FineTunedClassifier` (before): the same layers trained on uint8 centre crops, the whole network run every epoch;
kept so that models saved with it still predict.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from labelloop.ml.pretrained import DEFAULT_MODEL


def _targets(y: np.ndarray, multilabel: bool, label_smoothing: float = 0.0):
    """(classes, training targets, loss) from class indices, or from an N×K 0/1 matrix (multi-label)."""
    import torch

    if multilabel:
        return np.arange(y.shape[1]), torch.as_tensor(y, dtype=torch.float32), torch.nn.BCEWithLogitsLoss()
    classes = np.unique(y)
    return (classes, torch.as_tensor(np.searchsorted(classes, y), dtype=torch.long),
            torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing))


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
        self.classes_, targets, loss_function = _targets(y, self.multilabel)
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


TRUNK_MODEL = "tf_efficientnet_lite2"
TRUNK_STAGES = 6  # stages 0-5 run once per image; stage 6 and the head convolution are trained


def _trunk(model_name: str, weights: str | Path | None):
    import torch

    from labelloop.ml.inference import fold_batch_norms
    from labelloop.ml.pretrained import create_timm_model

    network = create_timm_model(model_name, weights, num_classes=0).eval()
    trunk = torch.nn.Sequential(network.conv_stem, network.bn1, *network.blocks[:TRUNK_STAGES])
    # as the Embedder runs its network: batch norms folded into the convolutions, channels-last memory
    return fold_batch_norms(trunk)[0].to(memory_format=torch.channels_last)


class TrunkMaps:
    """`maps(crops)` -> float16 N×2×C×h×w: the output of the network's stages 0-5 for each crop and its mirror.

    What `LastStageClassifier` trains on: computed once per image for a whole train job, so each of the
    calibration's fits only runs the last stage (lite2 at 260 px: 208×9×9 per view, 67 KB an image)."""

    def __init__(self, model_name: str = TRUNK_MODEL, weights: str | Path | None = None):
        from labelloop.ml.embeddings import Embedder

        self.model_name = model_name
        self.weights = weights
        self.image_size = Embedder(model_name, weights).image_size  # the size the network was trained at
        self._network = None

    def maps(self, crops) -> np.ndarray:
        import torch

        from labelloop.ml.embeddings import to_batch
        from labelloop.ml.pretrained import normalisation

        if self._network is None:
            self._network = _trunk(self.model_name, self.weights)
        batch = to_batch(list(crops), *normalisation(self.model_name)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            views = [self._network(batch), self._network(torch.flip(batch, dims=[3]))]
        return torch.stack(views, dim=1).to(torch.float16).numpy()


class LastStageClassifier(ClassifierMixin, BaseEstimator):
    """The network's last stage, head convolution and a new linear layer trained on cached `TrunkMaps` (X:
    N×2×C×h×w, the two views of each image); scikit-learn contract, so the calibration can cross-fit it.

    Each epoch reads one view of each image at random (mirror augmentation); the batch norms keep their ImageNet
    statistics (a few hundred images give noisy batch statistics); one-cycle AdamW. No label smoothing by default:
    the calibration may soften probabilities but never sharpens them, so smoothed (under-confident) probabilities
    cost coverage (0.1 on hymenoptera: 8 % of the items pre-labelled instead of 81 %, docs/benchmarks.md). With
    `label_smoothing` > 0 the probabilities are mapped back (p - ε/K, renormalised): 63 % there, still less.
    Probabilities average the two views."""

    def __init__(self, model_name: str = TRUNK_MODEL, weights: str | Path | None = None, multilabel: bool = False,
                 epochs: int = 30, lr: float = 1e-3, batch_size: int = 32, label_smoothing: float = 0.0,
                 random_state: int = 0):
        self.model_name = model_name
        self.weights = weights
        self.multilabel = multilabel
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.label_smoothing = label_smoothing
        self.random_state = random_state

    def _network(self, outputs: int):
        import torch

        from labelloop.ml.pretrained import create_timm_model

        network = create_timm_model(self.model_name, self.weights, num_classes=outputs)
        network.conv_stem, network.bn1 = torch.nn.Identity(), torch.nn.Identity()
        network.blocks = network.blocks[TRUNK_STAGES:]  # the trunk's stages live in the cache, not in the model
        return network

    def _frozen_norms(self, network) -> None:
        import torch

        network.train()
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()

    def fit(self, X: np.ndarray, y: np.ndarray) -> LastStageClassifier:
        import torch

        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim != 5:
            raise ValueError(f"expected N×views×C×h×w trunk maps, got an array of shape {X.shape}")
        self.classes_, targets, loss_function = _targets(y, self.multilabel, self.label_smoothing)
        network = self._network(len(self.classes_))
        optimiser = torch.optim.AdamW(network.parameters(), lr=self.lr, weight_decay=1e-4)
        steps = max(1, -(-len(X) // self.batch_size)) * self.epochs
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=self.lr, total_steps=steps)
        started = time.perf_counter()
        self.loss_curve_ = []
        for _ in range(self.epochs):
            self._frozen_norms(network)
            order = rng.permutation(len(X))
            views = rng.integers(0, X.shape[1], len(X))
            total = 0.0
            for start in range(0, len(X), self.batch_size):
                index = order[start : start + self.batch_size]
                batch = torch.from_numpy(X[index, views[index]].astype(np.float32))
                loss = loss_function(network(batch), targets[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += float(loss.detach()) * len(index)
            self.loss_curve_.append(round(total / max(len(X), 1), 5))
        self.training_seconds_ = time.perf_counter() - started
        self.network_ = network.eval()
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch

        X = np.asarray(X)
        if not len(X):
            return np.zeros((0, len(self.classes_)))
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(X), 256):
                chunk = torch.from_numpy(X[start : start + 256].astype(np.float32))
                logits = self.network_(chunk.flatten(0, 1)).unflatten(0, chunk.shape[:2])
                proba = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=2)
                outputs.append(proba.mean(dim=1))
        proba = torch.cat(outputs).numpy().astype(np.float64)
        if self.label_smoothing and not self.multilabel:
            # trained towards (1 - e) one-hot + e / K: map back to the scale of the classes themselves (the same
            # order within each class; probabilities the calibration may soften but could not sharpen)
            proba = np.maximum(proba - self.label_smoothing / proba.shape[1], 1e-6)
            proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(X)
        return (proba >= 0.5).astype(int) if self.multilabel else self.classes_[proba.argmax(axis=1)]
