"""THE place to add a preset: one `Preset(...)` declaration in `TABLE`, in display order.

A declaration names its network (`build_with(lambda generator, seed: Net(...))`, the class
in `models` with its NumPy reading registered beside it), its data (`gradviz.train.data`),
its loss (`losses`), how it updates (`UPDATE_STYLES`) and, for comparisons, its weight
layout (`builders.slots_*`). The programs of one tutorial share their settings through
`_QUADRANT` (seed 002) and `_SEED003`. `register(*TABLE)` at the end enters them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from gradviz.train import data as gdata
from gradviz.train.builder import on_meta, spec_to_text
from gradviz.train.recipe import Preset, register
from gradviz.zoo.presets.builders import (
    CNN_SPEC,
    KERAS_SPEC,
    NN_SPEC,
    build_with,
    build_with_topology,
    cnn_model,
    keras_model,
    linear_sigmoid_net,
    loose,
    nn_sequential,
    random64,
    regression_model,
    scratch_numpy_program,
    seed003_generator,
    seed003_linear_init,
    slots_folded,
    slots_linears,
    slots_loose,
    slots_quadrant_params,
    slots_scratch,
    slots_single,
    slots_softmax,
    slots_topology,
    slots_two_sigmoid,
    slots_weighted,
    tensors_manual_step,
    two_layer_numpy_program,
)
from gradviz.zoo.presets.losses import (
    categorical_crossentropy,
    half_sum_squared_error,
    mean_squared_error,
    mse_mean,
    mse_sum,
    quadrant_loss,
    sum_squared_error,
)
from gradviz.zoo.presets.models import (
    DynamicNet,
    FoldedBiasNet,
    LooseTwoLayer,
    MyReLUTwoLayer,
    QuadrantParams,
    ScratchNet,
    SingleNeuron,
    SoftmaxNet,
    TopologyNet,
    TwoLayerNet,
    TwoLayerSigmoid,
    WeightedSumNet,
)

# seed 002's seven programs: one net, one data set, one loss, written seven ways
_QUADRANT: Mapping[str, Any] = MappingProxyType(
    {
        "seed_program": "002",
        "task": "classification",
        "loss": quadrant_loss,
        "loss_name": "Σ −t·log p − (1−t)·log(1−p) / N",
        "make_data": gdata.quadrants,
        "steps": 10_000,
        "tutorial": MappingProxyType({"accuracy": 0.955}),
        "input_shape": (2,),
        "spec": "2-3-3-4 sigmoid",
    }
)
# seed 003's programs: random regression data, 500 steps, summed losses
_SEED003: Mapping[str, Any] = MappingProxyType(
    {
        "seed_program": "003",
        "task": "random-regression",
        "make_data": gdata.random_regression,
        "steps": 500,
        "input_shape": (1000,),
        "loss_reduction": "sum",
    }
)
_MSE_SUM_NAME = "MSELoss(reduction='sum')"

# the presets in the order the app lists them
TABLE: tuple[Preset, ...] = (
    Preset(
        name="single-neuron",
        description="Seed 000: a single sigmoid unit y = σ(Σ wᵢxᵢ + b), the smallest graph",
        seed_program="000",
        task="regression",
        loss=mse_mean,
        loss_name="MSE (mean)",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 1.0}),
        make_model=build_with(lambda g, s: SingleNeuron(2, g)),
        make_data=lambda s: gdata.neuron_data(s, n_in=2),
        steps=500,
        input_shape=(2,),
        weight_slots=slots_single,
    ),
    Preset(
        name="two-layer-sigmoid",
        description="Seed 000: two stacked sigmoid layers y = f₂(f₁(x·W₁)·W₂), no biases",
        seed_program="000",
        task="regression",
        loss=mse_mean,
        loss_name="MSE (mean)",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 1.0}),
        make_model=build_with(lambda g, s: TwoLayerSigmoid(3, 2, 1, g)),
        make_data=lambda s: gdata.neuron_data(s, n_in=3),
        steps=1000,
        input_shape=(3,),
        spec="3-2-1 sigmoid nobias",
        weight_slots=slots_two_sigmoid,
    ),
    Preset(
        name="mnist-cnn",
        description="Seed 001: MNIST CNN (conv1, conv2 + Dropout2d, fc1, fc2, log_softmax) "
        "with nll_loss, SGD lr 0.01 momentum 0.5, test loop and checkpoints",
        seed_program="001",
        task="classification",
        loss=F.nll_loss,
        loss_name="nll_loss",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.01, "momentum": 0.5}),
        make_model=build_with(cnn_model),
        make_data=lambda s: gdata.shipped_digits("cnn"),
        epochs=3,
        batch_size=64,
        test_batch_size=1000,
        input_shape=(1, 28, 28),
        spec=spec_to_text(CNN_SPEC),
        digit_layout="cnn",
        tutorial=MappingProxyType({"seed": 1, "mean": 0.1307, "std": 0.3081}),
    ),
    Preset(
        name="quadrant-params",
        description="Seed 002 (1): 2-3-3-4 sigmoid net as six loose Parameters, updated "
        "by hand through .data and grad.zero_()",
        update="manual-data",
        optimizer=None,
        hyper=MappingProxyType({"lr": 0.5}),
        make_model=build_with(lambda g, s: QuadrantParams(g)),
        weight_slots=slots_quadrant_params,
        **_QUADRANT,
    ),
    Preset(
        name="quadrant-sgd",
        description="Seed 002 (2): the same loose Parameters trained with torch.optim.SGD "
        "lr 0.5, 10 000 full-batch steps (tutorial accuracy 0.955)",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.5}),
        make_model=build_with(lambda g, s: QuadrantParams(g)),
        weight_slots=slots_quadrant_params,
        **_QUADRANT,
    ),
    Preset(
        name="quadrant-folded-bias",
        description="Seed 002 (3): an nn.Module with each bias folded into W as an extra "
        "row, fed by a column of ones",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.5}),
        make_model=build_with(lambda g, s: FoldedBiasNet(g)),
        weight_slots=slots_folded,
        **_QUADRANT,
    ),
    Preset(
        name="quadrant-weighted-sum",
        description="Seed 002 (4): a reusable 'weightedsum' layer module (MAC1..MAC3) "
        "with a sigmoid after each",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.5}),
        make_model=build_with(lambda g, s: WeightedSumNet(g)),
        weight_slots=slots_weighted,
        **_QUADRANT,
    ),
    Preset(
        name="quadrant-softmax",
        description="Seed 002 (5): MyLayer with the sigmoid built in, output passed "
        "through softmax(dim=1) (a different function: see get_weights)",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.5}),
        make_model=build_with(lambda g, s: SoftmaxNet(g)),
        weight_slots=slots_softmax,
        **{
            **_QUADRANT,
            "tutorial": MappingProxyType({}),
            "spec": spec_to_text(
                [
                    {"type": "Linear", "in_features": 2, "out_features": 3},
                    {"type": "Sigmoid"},
                    {"type": "Linear", "out_features": 3},
                    {"type": "Sigmoid"},
                    {"type": "Linear", "out_features": 4},
                    {"type": "Sigmoid"},
                    {"type": "Softmax", "dim": 1},
                ]
            ),
        },
    ),
    Preset(
        name="quadrant-sequential",
        description="Seed 002: nn.Sequential of MyLayers built from a topology list with "
        "add_module (build(topology=[2, 10, 4]) for the tutorial's run)",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.5}),
        make_model=build_with_topology(lambda g, t: TopologyNet(t, g)),
        weight_slots=slots_topology,
        **_QUADRANT,
    ),
    Preset(
        name="quadrant-linear-sigmoid",
        description="Seed 002: nn.Sequential of nn.Linear + nn.Sigmoid pairs added in a "
        "loop (nn.Linear's default init)",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.5}),
        make_model=build_with_topology(linear_sigmoid_net),
        weight_slots=slots_linears,
        **_QUADRANT,
    ),
    Preset(
        name="two-layer-numpy",
        description="Seed 003: two-layer ReLU net in plain NumPy, forward and backward "
        "derived by hand (1000-100-10, no biases, lr 1e-6)",
        loss=sum_squared_error,
        loss_name="Σ(y_pred − y)²",
        update="numpy",
        optimizer=None,
        hyper=MappingProxyType({"lr": 1e-6}),
        make_model=build_with(lambda g, s: loose(s, LooseTwoLayer, torch.float64)),
        weight_slots=slots_loose,
        numpy_fn=two_layer_numpy_program,
        **{**_SEED003, "make_data": random64},
    ),
    Preset(
        name="two-layer-tensors",
        description="Seed 003: the same net with torch tensors and a hand-written backward "
        "(no autograd)",
        loss=sum_squared_error,
        loss_name="Σ(y_pred − y)²",
        update="manual-backward",
        optimizer=None,
        hyper=MappingProxyType({"lr": 1e-6}),
        make_model=build_with(lambda g, s: loose(s, LooseTwoLayer, torch.float32)),
        weight_slots=slots_loose,
        manual_step_fn=tensors_manual_step,
        **_SEED003,
    ),
    Preset(
        name="two-layer-autograd",
        description="Seed 003: the same net with autograd: x.mm(w1).clamp(min=0).mm(w2), "
        "weights updated under torch.no_grad()",
        loss=sum_squared_error,
        loss_name="Σ(y_pred − y)²",
        update="manual-no_grad",
        optimizer=None,
        hyper=MappingProxyType({"lr": 1e-6}),
        make_model=build_with(lambda g, s: loose(s, LooseTwoLayer, torch.float32)),
        weight_slots=slots_loose,
        **_SEED003,
    ),
    Preset(
        name="two-layer-myrelu",
        description="Seed 003: two-layer net with a custom autograd Function MyReLU",
        loss=sum_squared_error,
        loss_name="Σ(y_pred − y)²",
        update="manual-no_grad",
        optimizer=None,
        hyper=MappingProxyType({"lr": 1e-6}),
        make_model=build_with(lambda g, s: loose(s, MyReLUTwoLayer, torch.float32)),
        weight_slots=slots_loose,
        **_SEED003,
    ),
    Preset(
        name="two-layer-nn",
        description="Seed 003: nn.Sequential(Linear, ReLU, Linear) with "
        "MSELoss(reduction='sum'), parameters updated by hand under no_grad",
        loss=mse_sum,
        loss_name=_MSE_SUM_NAME,
        update="manual-no_grad",
        optimizer=None,
        hyper=MappingProxyType({"lr": 1e-4}),
        make_model=build_with(
            lambda g, s: seed003_linear_init(on_meta(nn_sequential), seed003_generator(s))
        ),
        weight_slots=slots_linears,
        spec=NN_SPEC,
        **_SEED003,
    ),
    Preset(
        name="two-layer-adam",
        description="Seed 003: the nn.Sequential net trained with torch.optim.Adam lr 1e-4",
        loss=mse_sum,
        loss_name=_MSE_SUM_NAME,
        update="optimizer",
        optimizer="adam",
        hyper=MappingProxyType({"lr": 1e-4}),
        make_model=build_with(
            lambda g, s: seed003_linear_init(on_meta(nn_sequential), seed003_generator(s))
        ),
        weight_slots=slots_linears,
        spec=NN_SPEC,
        **_SEED003,
    ),
    Preset(
        name="two-layer-module",
        description="Seed 003: custom nn.Module TwoLayerNet (linear1, clamp, linear2), SGD "
        "lr 1e-4",
        loss=mse_sum,
        loss_name=_MSE_SUM_NAME,
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 1e-4}),
        make_model=build_with(
            lambda g, s: seed003_linear_init(
                on_meta(lambda: TwoLayerNet(1000, 100, 10)), seed003_generator(s)
            )
        ),
        weight_slots=slots_linears,
        spec=NN_SPEC,
        **_SEED003,
    ),
    Preset(
        name="dynamic-net",
        description="Seed 003: DynamicNet reuses middle_linear a random 0–3 times per "
        "forward (control flow + weight sharing), SGD lr 1e-4 momentum 0.9",
        loss=mse_sum,
        loss_name=_MSE_SUM_NAME,
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 1e-4, "momentum": 0.9}),
        make_model=build_with(
            lambda g, s: seed003_linear_init(
                on_meta(lambda: DynamicNet(1000, 100, 10, s)), seed003_generator(s)
            )
        ),
        **_SEED003,
    ),
    Preset(
        name="scratch-784-250-10",
        description="Seed 004: NeuralNetWork written from scratch in NumPy, 784-250-10 "
        "sigmoid, no biases, one sample at a time, lr 0.1, 5 epochs",
        seed_program="004",
        task="classification",
        loss=half_sum_squared_error,
        loss_name="½·Σ(targets − outputs)²",
        update="numpy",
        optimizer=None,
        hyper=MappingProxyType({"lr": 0.1}),
        make_model=build_with(lambda g, s: ScratchNet(784, 250, 10, g)),
        make_data=lambda s: gdata.shipped_digits("scratch"),
        epochs=5,
        batch_size=1,
        shuffle=False,
        loss_reduction="sum",
        input_shape=(784,),
        spec="784-250-10 sigmoid nobias",
        digit_layout="scratch",
        weight_slots=slots_scratch,
        numpy_fn=scratch_numpy_program,
        tutorial=MappingProxyType({"performance on 10 test images": 0.7}),
    ),
    Preset(
        name="keras-dense-512",
        description="Seed 004 (Keras): Dense(512, relu) → Dense(10, softmax), RMSprop, "
        "categorical cross-entropy, 5 epochs, batch 128",
        seed_program="004",
        task="classification",
        loss=categorical_crossentropy,
        loss_name="categorical cross-entropy",
        update="optimizer",
        optimizer="rmsprop",
        # Keras RMSprop defaults: learning_rate 0.001, rho 0.9, epsilon 1e-7
        hyper=MappingProxyType({"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
        make_model=build_with(keras_model),
        make_data=lambda s: gdata.shipped_digits("keras"),
        epochs=5,
        batch_size=128,
        test_batch_size=1000,
        input_shape=(784,),
        spec=spec_to_text(KERAS_SPEC),
        digit_layout="keras",
        weight_slots=slots_linears,
        tutorial=MappingProxyType({"test_accuracy": 0.979}),
    ),
    Preset(
        name="regression-1-10-1",
        description="Seed 004 (TensorFlow): 1-10-1 tanh net fitting y = x² + noise, MSE, "
        "gradient descent lr 0.1, 2000 steps",
        seed_program="004",
        task="regression",
        loss=mean_squared_error,
        loss_name="mean((y − prediction)²)",
        update="optimizer",
        optimizer="sgd",
        hyper=MappingProxyType({"lr": 0.1}),
        make_model=build_with(regression_model),
        make_data=gdata.regression_points,
        steps=2000,
        input_shape=(1,),
        spec="1-10-1 tanh",
        weight_slots=slots_linears,
    ),
)

register(*TABLE)

