"""CLIP image preprocessing in numpy + PIL: transformers' ``CLIPImageProcessor`` (PIL backend).

Wan2.1 I2V checkpoints carry it in ``image_processor/preprocessor_config.json``. Per image:
convert to RGB (alpha composited onto white), resize the shortest edge with a PIL filter
(the long edge ``int(shortest * long / short)``, truncated), center crop (offsets floored; an
image smaller than the crop is zero-padded, the pad split with the larger half before it),
rescale in float64 then round to float32, normalise in float32. Resizing goes through PIL, as
transformers' PIL backend does, so pixels match it exactly; its torchvision backend (installed
with torchvision) resizes differently, by a few levels of 255.

Output is channels-last ``(B, crop_height, crop_width, 3)`` float32, what
:func:`composed_vi.models.clip_vision.image_embeddings` takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from composed_vi.models.wan.safetensors_io import CheckpointError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FILENAME = "preprocessor_config.json"

# PIL's filter numbers (transformers' PILImageResampling).
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_TYPES = ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil",
          "CLIPFeatureExtractor")
# Keys that name the class or steer other backends / return types, not the pixels we return.
_INERT_KEYS = ("image_processor_type", "feature_extractor_type", "processor_class", "data_format",
               "input_data_format", "device", "return_tensors", "disable_grouping",
               "image_seq_length")


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
  """The preprocessing options; defaults are ``CLIPImageProcessor``'s.

  Exactly one of ``shortest_edge`` (keep the aspect ratio) and ``resize_to`` (``(height,
  width)``) is set when ``do_resize``. ``crop_size`` is ``(height, width)``.
  """

  do_convert_rgb: bool = True
  do_resize: bool = True
  shortest_edge: int | None = 224
  resize_to: tuple[int, int] | None = None
  resample: int = 3
  do_center_crop: bool = True
  crop_size: tuple[int, int] = (224, 224)
  do_rescale: bool = True
  rescale_factor: float = 1 / 255
  do_normalize: bool = True
  image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
  image_std: tuple[float, ...] = OPENAI_CLIP_STD

  def __post_init__(self):
    for name in ("do_convert_rgb", "do_resize", "do_center_crop", "do_rescale", "do_normalize"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"{name}: expected a bool, got {getattr(self, name)!r}")
    if self.do_resize and (self.shortest_edge is None) == (self.resize_to is None):
      raise ValueError(f"size: expected exactly one of shortest_edge and (height, width), got "
                       f"shortest_edge={self.shortest_edge}, resize_to={self.resize_to}")
    _check_sizes("size", (self.shortest_edge,) if self.shortest_edge is not None else ())
    _check_sizes("size", self.resize_to or ())
    _check_sizes("crop_size", self.crop_size, count=2)
    if self.resample not in RESAMPLE:
      raise ValueError(f"resample: expected a PIL filter in {sorted(RESAMPLE)} "
                       f"({', '.join(RESAMPLE.values())}), got {self.resample!r}")
    if not (isinstance(self.rescale_factor, (int, float)) and math.isfinite(self.rescale_factor)
            and self.rescale_factor > 0):
      raise ValueError(f"rescale_factor: expected a positive float, got {self.rescale_factor!r}")
    for name in ("image_mean", "image_std"):
      value = getattr(self, name)
      if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{name}: expected 3 floats (RGB), got {value!r}")
    if not all(s > 0 for s in self.image_std):
      raise ValueError(f"image_std: expected positive values, got {self.image_std}")

  @classmethod
  def from_hf(cls, config: Mapping[str, Any]) -> ImageProcessorConfig:
    """From a ``preprocessor_config.json`` dict; absent or null keys take the defaults.

    Raises:
      ValueError: an unknown key, another processor type, or an option this port does not
        implement (padding, ``longest_edge`` / ``max_height`` sizes), named with its value.
    """
    config = {k: v for k, v in config.items() if v is not None and not k.startswith("_")}
    kind = config.get("image_processor_type", config.get("feature_extractor_type"))
    if kind is not None and kind not in _TYPES:
      raise ValueError(f"image_processor_type: expected one of {list(_TYPES)}, got {kind!r}")
    if config.get("do_pad") or config.get("use_square_size"):
      key = "do_pad" if config.get("do_pad") else "use_square_size"
      raise ValueError(f"{key}: expected false (not implemented for CLIP), got {config[key]!r}")
    fields = {f.name for f in dataclasses.fields(cls)} - {"shortest_edge", "resize_to"}
    known = fields | set(_INERT_KEYS) | {"size", "default_to_square", "do_pad", "pad_size",
                                         "use_square_size"}
    for key in config:
      if key not in known:
        raise ValueError(f"{key}: unknown image processor option (value {config[key]!r})")
    kwargs = {k: config[k] for k in fields if k in config}
    for name in ("image_mean", "image_std"):
      if name in kwargs:
        v = kwargs[name]
        kwargs[name] = tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (v,) * 3
    if "crop_size" in config:
      kwargs["crop_size"] = _height_width("crop_size", config["crop_size"])
    if "size" in config:
      size = config["size"]
      if isinstance(size, int) and not config.get("default_to_square", False):
        kwargs["shortest_edge"] = size
      elif isinstance(size, dict) and set(size) == {"shortest_edge"}:
        kwargs["shortest_edge"] = size["shortest_edge"]
      else:
        kwargs["shortest_edge"] = None
        kwargs["resize_to"] = _height_width("size", size)
    return cls(**kwargs)


def _check_sizes(name: str, values: Sequence[Any], count: int | None = None) -> None:
  if (count is not None and len(values) != count) or not all(
      isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
    raise ValueError(f"{name}: expected positive ints, got {tuple(values)}")


def _height_width(name: str, size: Any) -> tuple[int, int]:
  """transformers' size forms: an int (square), ``[height, width]`` or a height/width dict."""
  if isinstance(size, int) and not isinstance(size, bool):
    return size, size
  if isinstance(size, (list, tuple)) and len(size) == 2:
    return tuple(size)
  if isinstance(size, dict) and set(size) == {"height", "width"}:
    return size["height"], size["width"]
  raise ValueError(f"{name}: expected an int, [height, width], {{'height', 'width'}} or (for "
                   f"size) {{'shortest_edge'}}, got {size!r}")


def load_image_processor(directory: str) -> ImageProcessorConfig:
  """The options in ``directory/preprocessor_config.json`` (e.g. Wan's ``image_processor/``).

  Raises:
    CheckpointError: the folder or the file does not exist or is not JSON.
    ValueError: an option is unknown or unsupported (named).
  """
  if not os.path.isdir(directory):
    raise CheckpointError(f"image processor folder {directory!r} does not exist")
  path = os.path.join(directory, FILENAME)
  if not os.path.isfile(path):
    raise CheckpointError(f"image processor folder {directory!r} has no {FILENAME}")
  try:
    with open(path) as f:
      config = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from e
  try:
    return ImageProcessorConfig.from_hf(config)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e


# ---------------------------------------------------------------------------------------------
# The pixel pipeline.


def _to_rgb(image: Any, convert: bool, index: int) -> np.ndarray:
  """(H, W, 3) uint8 from a PIL image or an (H, W, C) uint8 array, C in 1, 3, 4."""
  if isinstance(image, Image.Image):
    if not convert:
      arr = np.asarray(image)
    elif "A" in image.getbands() or image.info.get("transparency") is not None:
      rgba = image.convert("RGBA")
      white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      arr = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    else:
      arr = np.asarray(image.convert("RGB"))
  else:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
      raise ValueError(f"images[{index}]: expected a PIL image or an (H, W, C) uint8 array with C "
                       f"in (1, 3, 4), got {arr.dtype} {arr.shape}")
    if convert and arr.shape[-1] == 1:
      arr = np.repeat(arr, 3, axis=-1)
    elif convert and arr.shape[-1] == 4:
      # transformers blends in float64 and rounds half to even (np.round).
      alpha = arr[..., 3:] / 255
      arr = np.round(alpha * arr[..., :3] + (1 - alpha) * 255).astype(np.uint8)
  if arr.ndim != 3 or arr.shape[-1] != 3:
    raise ValueError(f"images[{index}]: expected 3 channels (set do_convert_rgb to convert), got "
                     f"shape {arr.shape}")
  return arr


def resize_shape(config: ImageProcessorConfig, height: int, width: int) -> tuple[int, int]:
  """``(height, width)`` after the resize (transformers' ``get_resize_output_image_size``)."""
  if config.resize_to is not None:
    return config.resize_to
  s = config.shortest_edge
  if width <= height:
    return int(s * height / width), s  # float division then truncation, as transformers
  return s, int(s * width / height)


def _crop_axis(n: int, size: int) -> tuple[slice, slice]:
  """(source, destination) slices of a centred crop of ``size`` from ``n`` along one axis."""
  if n >= size:
    start = (n - size) // 2
    return slice(start, start + size), slice(0, size)
  pad = (size - n + 1) // 2  # ceil: the larger half of the zero pad goes first
  return slice(0, n), slice(pad, pad + n)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """(H, W, C) -> (height, width, C); axes shorter than the crop are zero-padded."""
  (sy, dy), (sx, dx) = _crop_axis(image.shape[0], height), _crop_axis(image.shape[1], width)
  out = np.zeros((height, width, image.shape[2]), image.dtype)
  out[dy, dx] = image[sy, sx]
  return out


def _preprocess_one(config: ImageProcessorConfig, image: Any, index: int) -> np.ndarray:
  arr = _to_rgb(image, config.do_convert_rgb, index)
  if config.do_resize:
    h, w = resize_shape(config, *arr.shape[:2])
    arr = np.asarray(Image.fromarray(arr).resize((w, h), resample=config.resample))
  if config.do_center_crop:
    arr = center_crop(arr, *config.crop_size)
  if config.do_rescale:
    arr = (arr.astype(np.float64) * config.rescale_factor).astype(np.float32)
  arr = arr.astype(np.float32)
  if config.do_normalize:
    mean = np.asarray(config.image_mean, np.float32)
    std = np.asarray(config.image_std, np.float32)
    arr = (arr - mean) / std
  return arr


def preprocess(config: ImageProcessorConfig, images) -> np.ndarray:
  """Preprocesses images as ``CLIPImageProcessor`` does; (B, crop_h, crop_w, 3) float32.

  Args:
    config: from :func:`load_image_processor`.
    images: one image or a sequence of them: PIL images (any mode, converted to RGB) or
      ``(H, W, C)`` uint8 arrays (C in 1, 3, 4), or a ``(B, H, W, C)`` uint8 array.

  Raises:
    ValueError: an image of another type, dtype or shape (its index named), or, without
      ``do_center_crop``, images whose sizes differ and cannot be stacked.
  """
  if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
    images = [images]
  if len(images) == 0:
    raise ValueError("images: expected at least one image, got none")
  out = [_preprocess_one(config, image, i) for i, image in enumerate(images)]
  shapes = sorted({a.shape for a in out})
  if len(shapes) > 1:
    raise ValueError(f"images: preprocessed sizes differ ({shapes}); enable do_center_crop or "
                     "pass images of one size")
  return np.stack(out)


__all__: Sequence[str] = (
    "ImageProcessorConfig", "load_image_processor", "preprocess", "resize_shape", "center_crop",
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD")
