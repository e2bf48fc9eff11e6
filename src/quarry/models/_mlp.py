"""A multilayer perceptron in PyTorch on the CPU (the optional ``mlp`` extra).

Inputs are standardized with the training segment's mean and standard deviation (missing
values at 0 after that, the training mean); training stops when the validation loss has not
improved for ``patience`` epochs and keeps the best epoch's weights. Deterministic given the
seed: one thread, seeded initialization and shuffling.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from quarry.exceptions import NotFittedError, UsageError
from quarry.models._params import MLP_DEFAULTS, validate_params

__all__ = ["MLPModel"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise UsageError(
            "the mlp model needs PyTorch: pip install 'quarry[mlp]' (or choose lightgbm or linear)"
        ) from None
    return torch


class MLPModel:
    """An MLP regression of the (per-day z-scored) label on the features."""

    name = "mlp"

    def __init__(self, params: Mapping[str, Any] | None = None, *, seed: int = 0) -> None:

        self.config = {**MLP_DEFAULTS, **validate_params("mlp", params)}
        self.seed = seed
        self.net_: Any = None
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        # called with a line per epoch while fitting (quarry.models.train hands it its own)
        self.on_progress: Callable[[str], None] | None = None
        _torch()  # fail early, before any data is prepared

    def __getstate__(self) -> dict[str, Any]:
        # the progress callback belongs to the training session, not to the fitted model
        return {**self.__dict__, "on_progress": None}

    def params(self) -> dict[str, Any]:
        return {**self.config, "seed": self.seed}

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None and self.std_ is not None
        z = (np.where(np.isfinite(x), x, np.nan) - self.mean_) / self.std_
        out: np.ndarray = np.nan_to_num(z, nan=0.0).astype(np.float32)
        return out

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> MLPModel:
        torch = _torch()
        torch.manual_seed(self.seed)
        torch.set_num_threads(1)
        finite = np.where(np.isfinite(x_train), x_train, np.nan)
        self.mean_ = np.nan_to_num(np.nanmean(finite, axis=0))
        std = np.nan_to_num(np.nanstd(finite, axis=0))
        self.std_ = np.where(std > 0, std, 1.0)
        layers: list[Any] = []
        width = x_train.shape[1]
        for hidden in self.config["hidden"]:
            layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
            layers.append(torch.nn.Dropout(self.config["dropout"]))
            width = hidden
        layers.append(torch.nn.Linear(width, 1))
        net = torch.nn.Sequential(*layers)
        opt = torch.optim.Adam(
            net.parameters(), lr=self.config["lr"], weight_decay=self.config["weight_decay"]
        )
        xt = torch.from_numpy(self._inputs(x_train))
        yt = torch.from_numpy(y_train.astype(np.float32))
        xv = torch.from_numpy(self._inputs(x_valid))
        yv = torch.from_numpy(y_valid.astype(np.float32))
        generator = torch.Generator().manual_seed(self.seed)
        best, best_state, waited, best_epoch = float("inf"), copy.deepcopy(net.state_dict()), 0, 0
        epochs = self.config["max_epochs"]
        for epoch in range(1, epochs + 1):
            net.train()
            order = torch.randperm(len(xt), generator=generator)
            for start in range(0, len(xt), self.config["batch_size"]):
                batch = order[start : start + self.config["batch_size"]]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(xt[batch]).squeeze(1), yt[batch])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                valid_loss = float(torch.nn.functional.mse_loss(net(xv).squeeze(1), yv))
            improved = valid_loss < best
            if improved:
                best, best_state, waited = valid_loss, copy.deepcopy(net.state_dict()), 0
                best_epoch = epoch
            if self.on_progress is not None:
                self.on_progress(
                    f"epoch {epoch}/{epochs}: valid loss {valid_loss:.3f}, "
                    f"best {best:.3f} at epoch {best_epoch}"
                )
            if not improved:
                waited += 1
                if waited >= self.config["patience"]:
                    break
        net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        return self

    def predict(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        # torch's thread count is the process's, not a call's: ``threads`` is not applied
        if self.net_ is None:
            raise NotFittedError("the model is not trained yet: call fit first")
        torch = _torch()
        with torch.no_grad():
            out: np.ndarray = self.net_(torch.from_numpy(self._inputs(x))).squeeze(1).numpy()
        return out.astype(np.float64)
