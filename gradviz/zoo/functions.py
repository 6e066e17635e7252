"""A catalogue of custom autograd Functions, right and wrong, for tests and the app's examples menu.

Each entry keeps its **source code as a string** (the app runs user code in a sandbox by
exec'ing source) and the name of the class it defines. Correct entries include the kinks
and ties where plain gradcheck raises false alarms; each buggy entry names the check that
catches it and where its shrunk counterexample must land.
"""

from __future__ import annotations

from dataclasses import dataclass
from textwrap import dedent
from typing import Any

import torch

from gradviz.errors import ArgumentError

__all__ = ["FunctionExample", "function_examples", "get_example"]


@dataclass(frozen=True)
class FunctionExample:
    """One Function: its name, whether it is correct, what it shows, and its source."""

    name: str
    class_name: str
    correct: bool
    description: str
    source: str
    shapes: tuple[tuple[int, ...], ...]
    catches: str | None = None  # the check that flags the bug (None when correct)
    severity: str = "failure"  # "warning" when autograd hides the bug (raw_backward)

    def load(self) -> type[torch.autograd.Function]:
        """Executes the source in a fresh namespace and returns the class."""
        namespace: dict[str, Any] = {"__name__": f"gradviz_example_{self.name}"}
        exec(compile(self.source, f"<function example {self.name}>", "exec"), namespace)  # noqa: S102
        return namespace[self.class_name]


def _example(name: str, class_name: str, correct: bool, description: str, source: str,
             shapes: tuple[tuple[int, ...], ...], catches: str | None = None,
             severity: str = "failure") -> FunctionExample:
    return FunctionExample(name, class_name, correct, description, dedent(source).strip() + "\n",
                           shapes, catches, severity)


_EXAMPLES = (
    # ------------------------------------------------------------------ correct
    _example("relu", "MyReLU", True,
             "The tutorial's MyReLU: clamp(min=0), gradient masked where input < 0. "
             "At 0 it passes the gradient on, which lies between the one-sided slopes 0 and 1.", """
        import torch

        class MyReLU(torch.autograd.Function):
            @staticmethod
            def forward(ctx, input):
                ctx.save_for_backward(input)
                return input.clamp(min=0)

            @staticmethod
            def backward(ctx, grad_output):
                input, = ctx.saved_tensors
                grad_input = grad_output.clone()
                grad_input[input < 0] = 0
                return grad_input
        """, ((5,),)),
    _example("abs", "MyAbs", True, "|x| with sign(x) as its gradient (0 at the kink).", """
        import torch

        class MyAbs(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.abs()

            @staticmethod
            def backward(ctx, grad_output):
                x, = ctx.saved_tensors
                return grad_output * torch.sign(x)
        """, ((5,),)),
    _example("clamp", "MyClamp", True,
             "clamp(x, -1, 1): gradient 1 inside, 0 outside, 1 on the edges.", """
        import torch

        class MyClamp(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.clamp(-1.0, 1.0)

            @staticmethod
            def backward(ctx, grad_output):
                x, = ctx.saved_tensors
                return grad_output * ((x >= -1.0) & (x <= 1.0)).to(grad_output.dtype)
        """, ((5,),)),
    _example("maximum_split_ties", "Maximum", True,
             "max(a, b) elementwise; on a tie each input gets half "
             "the gradient.", """
        import torch

        class Maximum(torch.autograd.Function):
            @staticmethod
            def forward(ctx, a, b):
                ctx.save_for_backward(a, b)
                return torch.maximum(a, b)

            @staticmethod
            def backward(ctx, grad_output):
                a, b = ctx.saved_tensors
                share_a = (a > b).to(grad_output.dtype) + 0.5 * (a == b).to(grad_output.dtype)
                return grad_output * share_a, grad_output * (1 - share_a)
        """, ((4,), (4,))),
    _example("maximum_first_wins", "MaximumFirstWins", True,
             "max(a, b); on a tie the first input gets the "
             "whole gradient. One-sided, but still between the one-sided slopes: correct.", """
        import torch

        class MaximumFirstWins(torch.autograd.Function):
            @staticmethod
            def forward(ctx, a, b):
                ctx.save_for_backward(a, b)
                return torch.maximum(a, b)

            @staticmethod
            def backward(ctx, grad_output):
                a, b = ctx.saved_tensors
                first = (a >= b).to(grad_output.dtype)
                return grad_output * first, grad_output * (1 - first)
        """, ((4,), (4,))),
    _example("sort", "Sort", True,
             "Sort along the last dim; returns values and indices (several outputs, "
             "indices not differentiable). Backward scatters the gradient back through the "
             "indices.", """
        import torch

        class Sort(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                values, indices = torch.sort(x, dim=-1, stable=True)
                ctx.save_for_backward(indices)
                ctx.mark_non_differentiable(indices)
                return values, indices

            @staticmethod
            def backward(ctx, grad_values, grad_indices):
                indices, = ctx.saved_tensors
                return torch.zeros_like(grad_values).scatter(-1, indices, grad_values)
        """, ((2, 4),)),
    _example("floor", "Floor", True, "floor(x): jumps at integers, slope 0 everywhere else.", """
        import torch

        class Floor(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return torch.floor(x)

            @staticmethod
            def backward(ctx, grad_output):
                return torch.zeros_like(grad_output)
        """, ((5,),)),
    _example("sigmoid", "Sigmoid", True,
             "The logistic sigmoid, gradient s·(1−s) from the saved output.", """
        import torch

        class Sigmoid(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                s = torch.sigmoid(x)
                ctx.save_for_backward(s)
                return s

            @staticmethod
            def backward(ctx, grad_output):
                s, = ctx.saved_tensors
                return grad_output * s * (1 - s)
        """, ((5,),)),
    _example("exp", "Exp", True, "exp(x), gradient from the saved output.", """
        import torch

        class Exp(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = torch.exp(x)
                ctx.save_for_backward(y)
                return y

            @staticmethod
            def backward(ctx, grad_output):
                y, = ctx.saved_tensors
                return grad_output * y
        """, ((5,),)),
    _example("softplus", "Softplus", True,
             "log(1 + exp(x)), computed stably; gradient sigmoid(x).", """
        import torch

        class Softplus(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return torch.nn.functional.softplus(x)

            @staticmethod
            def backward(ctx, grad_output):
                x, = ctx.saved_tensors
                return grad_output * torch.sigmoid(x)
        """, ((5,),)),
    _example("linear", "Linear", True,
             "y = x Wᵀ + b with the bias broadcast over rows; backward reduces "
             "the bias gradient over the rows itself.", """
        import torch

        class Linear(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, weight, bias):
                ctx.save_for_backward(x, weight)
                return x @ weight.t() + bias

            @staticmethod
            def backward(ctx, grad_output):
                x, weight = ctx.saved_tensors
                return grad_output @ weight, grad_output.t() @ x, grad_output.sum(0)
        """, ((3, 4), (2, 4), (2,))),
    _example("sincos", "SinCos", True,
             "Two outputs, sin x and cos x; backward combines both gradients.", """
        import torch

        class SinCos(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return torch.sin(x), torch.cos(x)

            @staticmethod
            def backward(ctx, grad_sin, grad_cos):
                x, = ctx.saved_tensors
                return grad_sin * torch.cos(x) - grad_cos * torch.sin(x)
        """, ((4,),)),
    _example("relu_in_place", "ReLUInPlace", True,
             "ReLU that overwrites its input and says so with "
             "ctx.mark_dirty (like nn.ReLU(inplace=True)); checked on clones of the inputs.", """
        import torch

        class ReLUInPlace(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                x.clamp_(min=0)
                ctx.mark_dirty(x)
                ctx.save_for_backward(x)  # the output: x > 0 exactly where the input was
                return x

            @staticmethod
            def backward(ctx, grad_output):
                y, = ctx.saved_tensors
                return grad_output * (y > 0).to(grad_output.dtype)
        """, ((5,),)),
    # ------------------------------------------------------------------ buggy
    _example("relu_forgot_mask", "ReLUForgotMask", False,
             "Backward passes grad_output through unmasked: "
             "negative inputs get gradient 1 instead of 0.", """
        import torch

        class ReLUForgotMask(torch.autograd.Function):
            @staticmethod
            def forward(ctx, input):
                ctx.save_for_backward(input)
                return input.clamp(min=0)

            @staticmethod
            def backward(ctx, grad_output):
                return grad_output.clone()
        """, ((5,),), "jacobian"),
    _example("relu_wrong_threshold", "ReLUWrongThreshold", False,
             "Backward masks input < 0.5 instead of "
             "input < 0: inputs in [0, 0.5) lose their gradient.", """
        import torch

        class ReLUWrongThreshold(torch.autograd.Function):
            @staticmethod
            def forward(ctx, input):
                ctx.save_for_backward(input)
                return input.clamp(min=0)

            @staticmethod
            def backward(ctx, grad_output):
                input, = ctx.saved_tensors
                grad_input = grad_output.clone()
                grad_input[input < 0.5] = 0
                return grad_input
        """, ((5,),), "jacobian"),
    _example("relu_mutates_grad_output", "ReLUMutatesGradOutput", False,
             "Backward zeroes grad_output in "
             "place instead of a clone: the gradient is right, but other nodes sharing grad_output "
             "see it changed.", """
        import torch

        class ReLUMutatesGradOutput(torch.autograd.Function):
            @staticmethod
            def forward(ctx, input):
                ctx.save_for_backward(input)
                return input.clamp(min=0)

            @staticmethod
            def backward(ctx, grad_output):
                input, = ctx.saved_tensors
                grad_output[input < 0] = 0
                return grad_output
        """, ((5,),), "grad_output_unchanged"),
    _example("linear_wrong_transpose", "LinearWrongTranspose", False,
             "Backward uses Wᵀ for the input "
             "gradient where W belongs; with a square W the shapes still fit.", """
        import torch

        class LinearWrongTranspose(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, weight, bias):
                ctx.save_for_backward(x, weight)
                return x @ weight.t() + bias

            @staticmethod
            def backward(ctx, grad_output):
                x, weight = ctx.saved_tensors
                return grad_output @ weight.t(), grad_output.t() @ x, grad_output.sum(0)
        """, ((2, 3), (3, 3), (3,)), "jacobian"),
    _example("maximum_ties_both", "MaximumTiesBoth", False,
             "max(a, b) whose tie rule gives the full "
             "gradient to both inputs: a step along both moves the max by 1, not 2.", """
        import torch

        class MaximumTiesBoth(torch.autograd.Function):
            @staticmethod
            def forward(ctx, a, b):
                ctx.save_for_backward(a, b)
                return torch.maximum(a, b)

            @staticmethod
            def backward(ctx, grad_output):
                a, b = ctx.saved_tensors
                return grad_output * (a >= b), grad_output * (b >= a)
        """, ((4,), (4,)), "jacobian"),
    _example("linear_missing_bias_reduction", "LinearNoBiasReduction", False,
             "Backward returns the "
             "bias gradient per row without summing; autograd sums it silently, so only a direct "
             "call to backward shows the wrong shape.", """
        import torch

        class LinearNoBiasReduction(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, weight, bias):
                ctx.save_for_backward(x, weight)
                return x @ weight.t() + bias

            @staticmethod
            def backward(ctx, grad_output):
                x, weight = ctx.saved_tensors
                return grad_output @ weight, grad_output.t() @ x, grad_output
        """, ((3, 4), (2, 4), (2,)), "raw_backward", "warning"),
    _example("relu_mutates_input", "ReLUMutatesInput", False,
             "Forward clamps its input in place: the "
             "caller's tensor changes, and autograd later complains about an in-place "
             "operation.", """
        import torch

        class ReLUMutatesInput(torch.autograd.Function):
            @staticmethod
            def forward(ctx, input):
                ctx.save_for_backward(input)
                return input.clamp_(min=0).clone()

            @staticmethod
            def backward(ctx, grad_output):
                input, = ctx.saved_tensors
                return grad_output * (input > 0)
        """, ((5,),), "inputs_unchanged"),
    _example("sigmoid_float32_grad", "SigmoidFloat32Grad", False,
             "Backward computes in float32 and "
             "returns float32 for a float64 input; autograd casts back silently, losing "
             "precision.", """
        import torch

        class SigmoidFloat32Grad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                s = torch.sigmoid(x)
                ctx.save_for_backward(s)
                return s

            @staticmethod
            def backward(ctx, grad_output):
                s, = ctx.saved_tensors
                return (grad_output * s * (1 - s)).float()
        """, ((5,),), "raw_backward", "warning"),
    _example("sigmoid_wrong_sign", "SigmoidWrongSign", False,
             "Backward returns −s·(1−s): wrong sign "
             "everywhere, even at 0.", """
        import torch

        class SigmoidWrongSign(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                s = torch.sigmoid(x)
                ctx.save_for_backward(s)
                return s

            @staticmethod
            def backward(ctx, grad_output):
                s, = ctx.saved_tensors
                return -grad_output * s * (1 - s)
        """, ((5,),), "jacobian"),
)


def function_examples() -> dict[str, FunctionExample]:
    """Every example by name, correct ones first."""
    return {e.name: e for e in _EXAMPLES}


def get_example(name: str) -> FunctionExample:
    examples = function_examples()
    if name not in examples:
        raise ArgumentError("name", name, f"known examples: {', '.join(examples)}")
    return examples[name]
