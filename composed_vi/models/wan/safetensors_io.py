"""Zero-copy reading of diffusers-format checkpoint folders (``*.safetensors``), without torch.

A safetensors file is an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` and the raw little-endian data.
We memory-map the file and hand out numpy views of it (bfloat16 through ``ml_dtypes``), so a
14B checkpoint costs no host copy until a device asks for its slice of a tensor.
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from composed_vi import io

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class CheckpointError(ValueError):
  """A checkpoint folder or file that cannot be read (the message names the file)."""


_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def write_file(path: str, tensors: dict, metadata: dict | None = None) -> None:
  """Writes ``{name: array}`` as one safetensors file (atomically: the file appears complete
  or not at all), in name order with 8-byte aligned offsets, as the ``safetensors`` package
  lays them out; ``metadata`` is a ``{str: str}`` ``__metadata__`` entry."""
  header, chunks, offset = {}, [], 0
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype not in _NAMES:
      raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {a.dtype}")
    data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-(8 + len(raw)) % 8)
  io.write_bytes(path, struct.pack("<Q", len(raw)) + raw + b"".join(chunks))


def read_header(path: str) -> dict:
  """The JSON header of a safetensors file (tensor entries only)."""
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise CheckpointError(f"{path}: expected a safetensors file, got {len(raw)} bytes")
    (n,) = struct.unpack("<Q", raw)
    if n > os.path.getsize(path):
      raise CheckpointError(f"{path}: header length {n} exceeds the file size")
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  return header, 8 + n


def open_file(path: str) -> dict[str, np.ndarray]:
  """``{name: read-only numpy view}`` of one safetensors file, memory-mapped (no copy)."""
  header, start = read_header(path)
  size = os.path.getsize(path)
  mm = np.memmap(path, dtype=np.uint8, mode="r") if size > start else None
  out = {}
  for name, entry in header.items():
    if entry["dtype"] not in _DTYPES:
      raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {entry['dtype']}")
    dtype = np.dtype(_DTYPES[entry["dtype"]])
    shape = tuple(int(s) for s in entry["shape"])
    begin, end = (int(o) for o in entry["data_offsets"])
    if end - begin != math.prod(shape) * dtype.itemsize or start + end > size:
      raise CheckpointError(f"{path}: tensor {name!r} has inconsistent offsets {begin}..{end} "
                            f"for shape {shape} {entry['dtype']}")
    if math.prod(shape) == 0:
      out[name] = np.zeros(shape, dtype)
      continue
    out[name] = np.ndarray(shape, dtype=dtype, buffer=mm, offset=start + begin)
  return out


def open_folder(directory: str) -> tuple[dict, dict[str, np.ndarray]]:
  """``(config, tensors)`` of a diffusers model folder (``config.json`` + ``*.safetensors``).

  Sharded checkpoints (``*.safetensors.index.json``) are read through their weight map; a key
  present in two files is an error.
  """
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint folder {directory!r} does not exist")
  config_path = os.path.join(directory, "config.json")
  if not os.path.isfile(config_path):
    raise CheckpointError(f"checkpoint folder {directory!r} has no config.json")
  with open(config_path) as f:
    config = json.load(f)
  indexes = glob.glob(os.path.join(directory, "*.safetensors.index.json"))
  if indexes:
    with open(indexes[0]) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
    files = [os.path.join(directory, name) for name in files]
  else:
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
  if not files:
    raise CheckpointError(f"checkpoint folder {directory!r} has no *.safetensors file")
  tensors: dict[str, np.ndarray] = {}
  for path in files:
    if not os.path.isfile(path):
      raise CheckpointError(f"{path}: listed in the index but missing")
    for name, arr in open_file(path).items():
      if name in tensors:
        raise CheckpointError(f"tensor {name!r} appears in two files of {directory!r}")
      tensors[name] = arr
  return config, tensors
