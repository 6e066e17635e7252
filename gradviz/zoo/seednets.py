"""The seed programs that train in plain NumPy, kept as NumPy code (no torch in this module).

The weight arrays may be NumPy views of a torch module's float64 parameters
(``param.detach().numpy()`` shares memory, as seed 000 shows with ``from_numpy``): every
update here is in place, so the module sees the new weights without a copy and can be
traced, drawn and checkpointed like any other preset.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "TwoLayerNumpy", "NeuralNetWork"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^−x), what seed 004 takes from ``scipy.special.expit``."""
    # e^−x overflows to inf for x < −709 and the quotient is then the right 0.0
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


class TwoLayerNumpy:
    """Seed 003's warm-up: a two-layer ReLU net with its backward pass derived by hand.

    h = x·w1, h_relu = max(h, 0), y_pred = h_relu·w2, loss = Σ(y_pred − y)².
    """

    def __init__(self, w1: np.ndarray, w2: np.ndarray) -> None:
        self.w1 = w1  # (D_in, H), updated in place
        self.w2 = w2  # (H, D_out), updated in place

    @classmethod
    def random(
        cls, d_in: int = 1000, h: int = 100, d_out: int = 10, rng: np.random.Generator | None = None
    ) -> TwoLayerNumpy:
        rng = np.random.default_rng(0) if rng is None else rng
        return cls(rng.standard_normal((d_in, h)), rng.standard_normal((h, d_out)))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = x.dot(self.w1)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(self.w2)
        return h, h_relu, y_pred

    def gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss and the hand-derived gradients (grad_w1, grad_w2), as the tutorial writes them."""
        h, h_relu, y_pred = self.forward(x)
        loss = float(np.square(y_pred - y).sum())
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h_relu = grad_y_pred.dot(self.w2.T)
        grad_h = grad_h_relu.copy()
        grad_h[h < 0] = 0
        grad_w1 = x.T.dot(grad_h)
        return loss, grad_w1, grad_w2

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One step of plain gradient descent; returns the loss before the update."""
        loss, grad_w1, grad_w2 = self.gradients(x, y)
        self.w1 -= lr * grad_w1
        self.w2 -= lr * grad_w2
        return loss


class NeuralNetWork:
    """Seed 004's 784-250-10 sigmoid net written from scratch (its class name kept).

    Weights: wih (hidden × input) ~ N(0, hidden^−½), who (output × hidden) ~ N(0, output^−½),
    no biases. ``train`` takes one sample, with e = targets − outputs:

    * Δwho = lr·(e·o·(1−o))·hᵀ — exactly −lr × ∂/∂who of ½·Σ(targets − outputs)².
    * Δwih = lr·((whoᵀ·e)·h·(1−h))·inputsᵀ — the tutorial sends the raw errors e back
      through who, skipping the output sigmoid's derivative o·(1−o). So this is *not*
      −lr × ∂/∂wih of that loss; it is that gradient with the output sigmoid's backward
      replaced by the identity (straight-through). ``exact_gradient=True`` sends back
      e·o·(1−o) instead, which makes both updates plain gradient descent.
    """

    def __init__(
        self,
        input_nodes: int = 784,
        hidden_nodes: int = 250,
        output_nodes: int = 10,
        learning_rate: float = 0.1,
        *,
        rng: np.random.Generator | None = None,
        wih: np.ndarray | None = None,
        who: np.ndarray | None = None,
        exact_gradient: bool = False,
    ) -> None:
        self.in_nodes = input_nodes
        self.h_nodes = hidden_nodes
        self.o_nodes = output_nodes
        self.lr = learning_rate
        self.exact_gradient = exact_gradient
        rng = np.random.default_rng(0) if rng is None else rng
        self.wih = (
            wih
            if wih is not None
            else rng.normal(0.0, pow(self.h_nodes, -0.5), (self.h_nodes, self.in_nodes))
        )
        self.who = (
            who
            if who is not None
            else rng.normal(0.0, pow(self.o_nodes, -0.5), (self.o_nodes, self.h_nodes))
        )
        self.activation_function = sigmoid

    def _forward(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden_outputs = self.activation_function(np.dot(self.wih, inputs))
        final_outputs = self.activation_function(np.dot(self.who, hidden_outputs))
        return hidden_outputs, final_outputs

    def train(self, inputs_list: np.ndarray, targets_list: np.ndarray) -> float:
        """Update the weights from one sample; returns ½·Σ(t − o)² before the update."""
        inputs = np.array(inputs_list, ndmin=2, dtype=np.float64).T
        targets = np.array(targets_list, ndmin=2, dtype=np.float64).T
        hidden_outputs, final_outputs = self._forward(inputs)
        output_errors = targets - final_outputs
        # taken before who changes, as the tutorial does
        if self.exact_gradient:
            hidden_errors = np.dot(self.who.T, output_errors * final_outputs * (1 - final_outputs))
        else:
            hidden_errors = np.dot(self.who.T, output_errors)
        self.who += self.lr * np.dot(
            output_errors * final_outputs * (1 - final_outputs), np.transpose(hidden_outputs)
        )
        self.wih += self.lr * np.dot(
            hidden_errors * hidden_outputs * (1 - hidden_outputs), np.transpose(inputs)
        )
        return float(0.5 * np.square(output_errors).sum())

    def query(self, inputs_list: np.ndarray) -> np.ndarray:
        """The net's outputs for one sample, as a column (output_nodes × 1)."""
        inputs = np.array(inputs_list, ndmin=2, dtype=np.float64).T
        return self._forward(inputs)[1]

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """Train on each row of a batch in turn (the tutorial's batch is one row).

        Returns the mean of the per-sample losses.
        """
        self.lr = lr
        losses = [self.train(x[i], y[i]) for i in range(len(x))]
        return float(np.mean(losses))
