"""The 21 seed programs as presets: each builds its network, makes its data and trains its own way.

Every preset's `build` returns an ``nn.Module`` so it can be traced, also for programs
the tutorials write as loose tensors or NumPy arrays: those are wrapped in a module that
holds the very same parameters (the NumPy programs update them in place through shared
memory). Weights are drawn from private ``torch.Generator``s, never the global RNG, and
where a tutorial seeds its program the preset draws in the tutorial's order, so seed 0
gives the tutorial's numbers (the quadrant net reaches its 0.955).

To add a preset, add one ``Preset(...)`` declaration to ``TABLE`` in `table` (the one
place presets are declared); a new network class goes in `models`, with its NumPy
reading registered right under it. The modules:

* `preset`: the `Preset` record, `seeded_global_rng`, and the registry behind `presets`
  and `get_preset`;
* `table`: the declarations;
* `models`: the tutorials' network classes (and `MyReLU`), registered with
  `gradviz.backward.netprop`;
* `losses`: the tutorials' losses, registered with it too;
* `builders`: initial weights, weight layouts, manual and NumPy training steps;
* `compare`: `numpy_vs_autograd`.
"""

from __future__ import annotations

from gradviz.train.recipe import UPDATE_STYLES, Preset, get_preset, presets, seeded_global_rng
from gradviz.zoo.presets import table
from gradviz.zoo.presets.compare import numpy_vs_autograd
from gradviz.zoo.presets.losses import (
    categorical_crossentropy,
    half_sum_squared_error,
    mean_squared_error,
    quadrant_loss,
    sum_squared_error,
)

# the network classes stay reachable as gradviz.zoo.presets.<Class>, as before the split
from gradviz.zoo.presets.models import (  # noqa: F401
    DynamicNet,
    FoldedBiasNet,
    LooseTwoLayer,
    MyLayer,
    MyReLU,
    MyReLUTwoLayer,
    QuadrantParams,
    ScratchNet,
    SingleNeuron,
    SoftmaxNet,
    TopologyNet,
    TwoLayerNet,
    TwoLayerSigmoid,
    WeightedSumNet,
    weightedsum,
)

PRESET_NAMES: tuple[str, ...] = tuple(preset.name for preset in table.TABLE)

__all__ = [
    "Preset",
    "presets",
    "get_preset",
    "PRESET_NAMES",
    "UPDATE_STYLES",
    "MyReLU",
    "numpy_vs_autograd",
    "seeded_global_rng",
    "quadrant_loss",
    "sum_squared_error",
    "half_sum_squared_error",
    "categorical_crossentropy",
    "mean_squared_error",
]

