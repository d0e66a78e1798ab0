"""The segmentation model: an smp FPN with one output channel, built from a name.

    model = build_model(ModelSpec(encoder_name="efficientnet-b5"), encoder_weights="imagenet")
    x = to_input(images_uint8)               # (N, H, W, 3) uint8 -> (N, 3, H, W) float32, normalised
    logits = model(x)                        # (N, 1, H, W); H and W multiples of 32

A checkpoint folder (the contract other stages read) holds ``model.pt`` (the state dict),
``model_card.json`` (architecture, preprocessing, metrics) and ``config.yaml``; it is written by
:func:`save_model_folder` and read back by :func:`load_model_folder`, with no training code.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segsynth import io
from segsynth.preprocess import IMAGENET_MEAN, IMAGENET_STD, PAD_TO, Preprocessing  # one definition, shared with the predictors

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CARD_FILE = "model_card.json"
ARCHITECTURE = "FPN"
WEIGHT_FILES = ("model.pt", "model.safetensors", "pytorch_model.bin", "model.pth", "encoder.pth")

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ModelSpec", "build_model", "load_weights", "to_input",
           "save_model_folder", "load_model_folder", "encoder_names", "MODEL_FILE", "CARD_FILE", "PAD_TO"]


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to rebuild the network (stored in the model card as ``model``)."""

    encoder_name: str = "efficientnet-b5"
    decoder_pyramid_channels: int = 256
    decoder_segmentation_channels: int = 128  # a multiple of 32: the decoder's GroupNorm has 32 groups
    classes: int = 1
    architecture: str = ARCHITECTURE

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def encoder_names() -> list[str]:
    """smp's own encoder names; any timm model also works as ``tu-<timm name>``."""
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.get_encoder_names())


def _check_encoder(name: str) -> None:
    if name.startswith("tu-"):
        import timm

        if not timm.is_model(name[3:]):
            raise ValueError(f"unknown timm encoder {name!r}: timm has no model {name[3:]!r} "
                             "(see timm.list_models(), e.g. 'tu-mobilenetv3_small_050')")
        return
    valid = encoder_names()
    if name not in valid:
        raise ValueError(f"unknown encoder {name!r}; valid smp encoders: {', '.join(valid)}; "
                         "or any timm model as 'tu-<name>'")


def build_model(spec: ModelSpec | None = None, encoder_weights: str | None = None) -> torch.nn.Module:
    """The FPN with ``spec``'s encoder; ``encoder_weights``: ``"imagenet"`` (downloads through the
    model hub; for ``tu-tf_efficientnet_lite0|1|2`` read offline from pip packages, see
    :mod:`segsynth.pretrained`), ``None`` (random init), or a local weights file/folder (see
    :func:`load_weights`).
    """
    import segmentation_models_pytorch as smp

    from segsynth.pretrained import has_packaged_weights, load_packaged_encoder

    spec = spec or ModelSpec()
    if spec.architecture != ARCHITECTURE:
        raise ValueError(f"unknown architecture {spec.architecture!r}; this version builds {ARCHITECTURE!r}")
    if spec.decoder_segmentation_channels % 32:
        raise ValueError(f"decoder_segmentation_channels={spec.decoder_segmentation_channels} must be a "
                         "multiple of 32 (the decoder's GroupNorm has 32 groups); e.g. 32, 64, 128")
    _check_encoder(spec.encoder_name)
    packaged = encoder_weights == "imagenet" and has_packaged_weights(spec.encoder_name)
    hub = encoder_weights if encoder_weights and not packaged and not _is_local(encoder_weights) else None
    try:
        model = smp.FPN(encoder_name=spec.encoder_name, encoder_weights=hub, classes=spec.classes,
                        decoder_pyramid_channels=spec.decoder_pyramid_channels,
                        decoder_segmentation_channels=spec.decoder_segmentation_channels)
    except (OSError, RuntimeError) as e:  # hub unreachable, offline mode, proxy...
        if hub is None:
            raise
        raise RuntimeError(f"could not get {hub!r} weights for encoder {spec.encoder_name!r} ({type(e).__name__}: {e}); "
                           "without network access set encoder_weights: null or to a local weights file") from e
    except KeyError as e:  # smp: no such weights for this encoder
        raise ValueError(f"encoder {spec.encoder_name!r} has no {hub!r} weights ({e}); "
                         "use encoder_weights: imagenet, null or a local file") from None
    if packaged:
        load_packaged_encoder(model, spec.encoder_name)  # Apache-2.0 weights from pip: no hub, no network
    elif encoder_weights and hub is None:
        load_weights(model, encoder_weights)
    return model


def _is_local(weights: str) -> bool:
    return io.is_uri(weights) or "/" in weights or "\\" in weights or weights.endswith(
        (".pt", ".pth", ".bin", ".safetensors")) or io.exists(weights)


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        return load_safetensors(io.read_bytes(path))
    import io as _pyio

    obj = torch.load(_pyio.BytesIO(io.read_bytes(path)), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # a training state (model, optimizer, ...)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Load a local weights file or folder into ``model``.

    A folder is searched for one of ``model.pt``, ``model.safetensors``, ``pytorch_model.bin``,
    ``model.pth``, ``encoder.pth`` (so one of our checkpoint folders works: fine-tuning). Keys
    with ``encoder.``/``decoder.`` prefixes load the whole model; bare keys load the encoder.
    """
    path = str(path)
    if not io.exists(path):
        raise FileNotFoundError(f"encoder_weights {path!r} does not exist; pass 'imagenet', null, "
                                "or a local weights file/folder")
    fs_type = io.resolve(path)[0].get_file_info(io.resolve(path)[1]).type
    if fs_type.name == "Directory":
        found = [io.join(path, f) for f in WEIGHT_FILES if io.exists(io.join(path, f))]
        if not found:
            raise FileNotFoundError(f"{path} holds none of {', '.join(WEIGHT_FILES)}")
        path = found[0]
    state = _read_state_dict(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith(("encoder.", "decoder.", "segmentation_head.")) for k in state):
        target, what = model, "model"
    else:
        target, what = model.encoder, "encoder"
    missing, unexpected = target.load_state_dict(state, strict=False)
    if len(missing) == len(target.state_dict()):
        raise ValueError(f"{path}: none of its {len(state)} tensors fit the {what} "
                         f"(e.g. {next(iter(state), None)!r}); is it for another encoder?")
    log.info("loaded %s weights from %s (%d missing, %d unexpected keys)", what, path, len(missing), len(unexpected))


def to_input(images: torch.Tensor | np.ndarray, device: torch.device | str | None = None,
             channels_last: bool = False, pre: Preprocessing | None = None) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` RGB -> ``(N, 3, H, W) float32`` normalised as ``pre`` says
    (ImageNet mean/std when None): the torch side of :meth:`Preprocessing.normalize`, with the
    same coefficients (:meth:`Preprocessing.affine`)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {tuple(x.shape)} {x.dtype}")
    if device is not None:
        x = x.to(device, non_blocking=True)
    scale, shift = (pre or Preprocessing(size=PAD_TO)).affine()
    scale_t = torch.from_numpy(scale).to(x.device).view(1, 3, 1, 1)
    shift_t = torch.from_numpy(shift).to(x.device).view(1, 3, 1, 1)
    x = x.permute(0, 3, 1, 2).float() * scale_t + shift_t
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def preprocessing(size: int, normalization: str = "imagenet") -> dict[str, Any]:
    """The model card's preprocessing block: what a predictor must do before the network."""
    return Preprocessing(size=size, normalization=normalization).to_card()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DDP/compile wrappers (its state dict has no ``module.`` prefix)."""
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_model_folder(folder: str, model: torch.nn.Module, card: dict, config_yaml: str | None = None) -> str:
    """Write ``model.pt`` (fp32 state dict on CPU), ``model_card.json`` and ``config.yaml``.

    ``card`` must hold ``model`` (a :class:`ModelSpec` dict) and ``preprocessing``.
    """
    import io as _pyio

    for key in ("model", "preprocessing"):
        if key not in card:
            raise ValueError(f"model card needs a {key!r} entry")
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
             for k, v in unwrap(model).state_dict().items()}
    buf = _pyio.BytesIO()
    torch.save(state, buf)
    io.write_bytes(io.join(folder, MODEL_FILE), buf.getvalue())
    io.write_bytes(io.join(folder, CARD_FILE), json.dumps(card, indent=2, default=_json_default).encode())
    if config_yaml is not None:
        io.write_bytes(io.join(folder, "config.yaml"), config_yaml.encode())
    return folder


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


def read_card(folder: str) -> dict:
    path = io.join(folder, CARD_FILE)
    if not io.exists(path):
        raise FileNotFoundError(f"{folder} is not a checkpoint folder: it has no {CARD_FILE} "
                                "(train with `segsynth train`, which writes OUT/best)")
    return json.loads(io.read_bytes(path))


def load_model_folder(folder: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, card)`` from a checkpoint folder; no hub access, no training code."""
    card = read_card(folder)
    model = build_model(ModelSpec.from_dict(card["model"]), encoder_weights=None)
    import io as _pyio

    state = torch.load(_pyio.BytesIO(io.read_bytes(io.join(folder, MODEL_FILE))), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), card
