"""Models users bring: torchvision classifiers and Hugging Face architectures, random weights,
configs built in code, nothing downloaded.

`build_model(name)` gives a model and an input for it; `model_loss(model, inputs)` runs it to a
scalar to trace or step. Names: a torchvision classification name (``"resnet18"``) or
``"hf:<arch>"`` (``"hf:bert"``); `model_names()` lists what this machine can build.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import nn

from gradviz.errors import ArgumentError, ModelUnavailable

__all__ = ["HF_ARCHS", "TORCHVISION_MODELS", "build_model", "import_torchvision",
           "input_shape", "model_loss", "model_names", "parse_shape"]


# Small inputs each model accepts; a batch of 2 because BatchNorm in training mode needs more
# than one value per channel after global pooling.
TORCHVISION_MODELS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 3, 32, 32),
    "resnet50": (2, 3, 32, 32),
    "mobilenet_v3_small": (2, 3, 32, 32),
    "efficientnet_b0": (2, 3, 32, 32),
    "regnet_y_400mf": (2, 3, 32, 32),
    "densenet121": (2, 3, 32, 32),
    "squeezenet1_0": (2, 3, 64, 64),
    "convnext_tiny": (2, 3, 32, 32),
    "swin_t": (2, 3, 64, 64),
    "vit_b_16": (2, 3, 32, 32),
    "googlenet": (2, 3, 32, 32),
    "shufflenet_v2_x0_5": (2, 3, 32, 32),
    "mnasnet0_5": (2, 3, 32, 32),
}

# The custom ops torchvision's Python side registers fake kernels for at import. Its C
# extension is built against the CUDA torch wheel and does not load beside the CPU one
# (PyPI has no CPU build), so import fails with "operator torchvision::nms does not exist".
# Defining the schemas lets the pure-Python model code import; classifiers call none of them.
_TV_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_libraries: list[Any] = []  # keeps the schema library alive for the process


@functools.cache
def import_torchvision() -> ModuleType:
    """Import torchvision, working around its C extension failing to load on the CPU torch."""
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError as e:
        raise ModelUnavailable(
            "torchvision is not installed: install gradviz's models extra "
            "(pip install -e '.[models]'; ./run.sh does) or `pip install torchvision==0.28.0`"
        ) from e
    except RuntimeError as e:
        if "does not exist" not in str(e):
            raise
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TV_SCHEMAS:
        with contextlib.suppress(RuntimeError):  # already defined by a partial import
            lib.define(schema)
    _libraries.append(lib)
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    return importlib.import_module("torchvision")


def _torchvision(
    name: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    models = import_torchvision().models
    kwargs: dict[str, Any] = {"weights": None}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    if name == "vit_b_16":  # the B/16 layout at a small image size keeps its 12 blocks
        kwargs.update(image_size=shape[-1])
    model = getattr(models, name)(**kwargs)
    return model.to(dtype), (torch.randn(*shape, dtype=dtype),)


# (batch, tokens) of the text models' default input.
_TEXT_SHAPE = (1, 8)


def _tokens(shape: tuple[int, ...] = _TEXT_SHAPE, vocab: int = 96) -> torch.Tensor:
    return torch.randint(0, vocab, shape)


def _hf_text(config_name: str, model_name: str, **config: Any) -> Callable[..., Any]:
    def build(shape: tuple[int, ...] = _TEXT_SHAPE) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        tf = importlib.import_module("transformers")
        cfg = getattr(tf, config_name)(**config)
        cfg._attn_implementation = "sdpa"
        return getattr(tf, model_name)(cfg), {"input_ids": _tokens(shape)}

    build.shape = _TEXT_SHAPE  # type: ignore[attr-defined]  # what input_shape reports
    return build


def _hf_t5() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    tf = importlib.import_module("transformers")
    cfg = tf.T5Config(vocab_size=96, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      decoder_start_token_id=0)
    return tf.T5Model(cfg), {"input_ids": _tokens(), "decoder_input_ids": _tokens((1, 4))}


def _hf_image(config_name: str, model_name: str, **config: Any) -> Callable[[], Any]:
    def build() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        tf = importlib.import_module("transformers")
        cfg = getattr(tf, config_name)(image_size=16, patch_size=4, num_channels=3, **config)
        return getattr(tf, model_name)(cfg), {"pixel_values": torch.randn(2, 3, 16, 16)}

    return build


def _hf_whisper() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    tf = importlib.import_module("transformers")
    cfg = tf.WhisperConfig(vocab_size=96, num_mel_bins=8, d_model=32, encoder_layers=2,
                           decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=8,
                           max_target_positions=16, decoder_start_token_id=1, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2)
    features = torch.randn(1, 8, 16)  # 16 frames -> 8 positions after the strided conv
    return tf.WhisperModel(cfg), {"input_features": features, "decoder_input_ids": _tokens((1, 4))}


def _hf_wav2vec2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    tf = importlib.import_module("transformers")
    cfg = tf.Wav2Vec2Config(vocab_size=32, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
                            conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                            num_conv_pos_embedding_groups=2, do_stable_layer_norm=True)
    return tf.Wav2Vec2Model(cfg), {"input_values": torch.randn(1, 400)}


_SMALL = {"num_attention_heads": 2, "intermediate_size": 64, "hidden_size": 32,
          "num_hidden_layers": 2}
HF_ARCHS: dict[str, Callable[..., tuple[nn.Module, dict[str, torch.Tensor]]]] = {
    "gpt2": _hf_text("GPT2Config", "GPT2Model", vocab_size=96, n_positions=32, n_embd=32,
                     n_layer=2, n_head=2, bos_token_id=None, eos_token_id=None),
    "bert": _hf_text("BertConfig", "BertModel", vocab_size=96, max_position_embeddings=32,
                     **_SMALL),
    "llama": _hf_text("LlamaConfig", "LlamaModel", vocab_size=96, num_key_value_heads=1,
                      max_position_embeddings=32, **_SMALL),
    "mistral": _hf_text("MistralConfig", "MistralModel", vocab_size=96, num_key_value_heads=1,
                        max_position_embeddings=32, sliding_window=4, **_SMALL),
    "t5": _hf_t5,
    "vit": _hf_image("ViTConfig", "ViTModel", **_SMALL),
    "clip_vision": _hf_image("CLIPVisionConfig", "CLIPVisionModel", **_SMALL),
    "clip_text": _hf_text("CLIPTextConfig", "CLIPTextModel", vocab_size=96,
                          max_position_embeddings=32, bos_token_id=1, eos_token_id=2,
                          **_SMALL),
    "whisper": _hf_whisper,
    "wav2vec2": _hf_wav2vec2,
}


def model_names() -> list[str]:
    """Every name `build_model` takes whose library is installed here."""
    # Asked of the installation, not by importing: torchvision and transformers take ~2 s
    # to import, which every first page of the app paid. A broken install still gets its
    # clear ModelUnavailable from build_model.
    names: list[str] = []
    if importlib.util.find_spec("torchvision") is not None:
        names += sorted(TORCHVISION_MODELS)
    if importlib.util.find_spec("transformers") is not None:
        names += [f"hf:{a}" for a in sorted(HF_ARCHS)]
    return names


def input_shape(name: str) -> tuple[int, ...] | None:
    """The default input shape of model `name`, or None when its input shape is fixed
    (image and audio HF configs are built for one size)."""
    if name in TORCHVISION_MODELS:
        return TORCHVISION_MODELS[name]
    return getattr(HF_ARCHS.get(name[3:]), "shape", None)


def _check_shape(name: str, shape: tuple[int, ...]) -> None:
    default = input_shape(name)
    ok = (default is not None and isinstance(shape, tuple) and len(shape) == len(default)
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape))
    if ok and name in TORCHVISION_MODELS:
        ok = shape[0] >= 2 and shape[1] == 3 and min(shape[2:]) >= 32 and max(shape) <= 512
        if name == "vit_b_16":  # built for square images cut into 16-pixel patches
            ok = ok and shape[2] == shape[3] and shape[2] % 16 == 0
    elif ok:
        ok = shape[0] <= 16 and shape[1] <= 32  # the configs hold 32 positions
    if not ok:
        fix = ("this model takes only its built-in input" if default is None else
               "torchvision: (batch ≥ 2, 3, height ≥ 32, width ≥ 32), sides ≤ 512"
               if name in TORCHVISION_MODELS else "(batch ≤ 16, tokens ≤ 32)")
        raise ArgumentError("shape", shape, f"{name} takes {fix}; default {default}")


def build_model(
    name: str, *, dtype: torch.dtype = torch.float32, seed: int = 0,
    shape: tuple[int, ...] | None = None,
) -> tuple[nn.Module, tuple[torch.Tensor, ...] | dict[str, torch.Tensor]]:
    """A model with random weights (seeded) and an input it takes, in training mode.

    shape: the input's shape, for torchvision models (N, 3, H, W) and HF text models
    (batch, tokens); None takes `input_shape(name)`.
    """
    if not isinstance(name, str):
        raise ArgumentError("name", name, "pass a model name such as 'resnet18' or 'hf:bert'")
    torch.manual_seed(seed)
    if name.startswith("hf:"):
        arch = name[3:]
        if arch not in HF_ARCHS:
            raise ArgumentError("name", name, f"use one of hf:{', hf:'.join(sorted(HF_ARCHS))}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs are built here; never download
        if importlib.util.find_spec("transformers") is None:
            raise ModelUnavailable("Hugging Face models need transformers: install gradviz's "
                                   "models extra (pip install -e '.[models]'; ./run.sh does)")
        if importlib.util.find_spec("torchvision") is not None:
            import_torchvision()  # transformers imports it, and fails on the unloaded C ops
        if shape is not None:
            _check_shape(name, shape)
        model, inputs = HF_ARCHS[arch](shape) if shape is not None else HF_ARCHS[arch]()
        model = model.to(dtype)
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        return model.train(), inputs
    if name not in TORCHVISION_MODELS:
        raise ArgumentError("name", name,
                            f"use a torchvision name ({', '.join(sorted(TORCHVISION_MODELS))}) "
                            "or hf:<arch>")
    if shape is not None:
        _check_shape(name, shape)
    model, args = _torchvision(name, dtype, shape or TORCHVISION_MODELS[name])
    return model.train(), args


def model_loss(model: nn.Module, inputs: tuple[torch.Tensor, ...] | dict[str, Any]) -> torch.Tensor:
    """Run `model` on `inputs` and reduce its main output to a scalar to trace or step."""
    out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
    if not isinstance(out, torch.Tensor):
        out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return out.pow(2).mean()


def parse_shape(text: str) -> tuple[int, ...]:
    """A shape typed by a reader: "2x3x64x64", "2, 3, 64, 64" or "(1, 16)"."""
    parts = text.strip().strip("()[]").replace("×", "x").replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:  # a word, a fraction, or an empty part ("2xx")
        shape = ()
    if not shape:
        raise ArgumentError("shape", text, "type whole numbers such as 2x3x64x64 or 1, 16")
    return shape
