"""Our ``nnx.eval_shape`` of the port, named through the original-Wan key table, against the
published VideoX-Fun checkpoints' own fingerprints (no download, no torch).

The checkpoints themselves (tens of GB) cannot be read here; two public fingerprints of their
tensor names and shapes can:

* DiffSynth-Studio identifies a Wan DiT file by the MD5 of its sorted ``key`` and
  ``key:d0_d1_...`` strings joined by commas (``hash_state_dict_keys``), and lists the hash of
  each Wan2.1-Fun release with its config (``wan_video_dit.py``'s state-dict converter);
* a checkpoint loader of VideoX-Fun's Control-Camera 1.3B (worldfoundry's in-tree runtime)
  checks its file by the SHA-256 of the sorted ``key|(shape)|dtype`` rows (989 tensors).

Equal fingerprints mean that every parameter name and shape of the published file is one of
ours and the reverse, so a real checkpoint loads through the key table with nothing left over.
"""

import hashlib

import pytest

from composed_vi.lab import tiny_checkpoints as tc
from composed_vi.models.wan import original_layout

B13 = dict(model_type="i2v", dim=1536, ffn_dim=8960, freq_dim=256, text_dim=4096, out_dim=16,
           num_heads=12, num_layers=30, eps=1e-6)
B14 = dict(model_type="i2v", dim=5120, ffn_dim=13824, freq_dim=256, text_dim=4096, out_dim=16,
           num_heads=40, num_layers=40, eps=1e-6)
CAMERA = dict(in_dim=32, add_control_adapter=True, in_dim_control_adapter=24)
CONTROL = dict(in_dim=48, add_ref_conv=True, in_dim_ref_conv=16)  # V1.1: the reference conv
CONTROL_V10 = dict(in_dim=48)

# (config, DiffSynth-Studio's hash of the published file's keys and shapes)
PUBLISHED = {
    "Wan2.1-Fun-V1.1-1.3B-Control-Camera": ({**B13, **CAMERA},
                                            "ac6a5aa74f4a0aab6f64eb9a72f19901"),
    "Wan2.1-Fun-V1.1-14B-Control-Camera": ({**B14, **CAMERA}, "b61c605c2adbd23124d152ed28e049ae"),
    "Wan2.1-Fun-V1.1-1.3B-Control": ({**B13, **CONTROL}, "70ddad9d3a133785da5ea371aae09504"),
    "Wan2.1-Fun-V1.1-14B-Control": ({**B14, **CONTROL}, "26bde73488a92e64cc20b0a7485b9e5b"),
    "Wan2.1-Fun-1.3B-Control": ({**B13, **CONTROL_V10}, "349723183fc063b2bfc10bb2835cf677"),
    "Wan2.1-Fun-14B-Control": ({**B14, **CONTROL_V10}, "efa44cddf936c70abd0ea28b6cbe946c"),
}


def original_shapes(config: dict) -> dict[str, tuple[int, ...]]:
  """``{original key: torch shape}`` from our eval_shape and key tables."""
  diff = original_layout.diffusers_config_from_original(config)
  shapes = tc._transformer_shapes(diff)
  return {o: shapes[d] for o, d in original_layout.original_to_diffusers_keys(diff).items()}


def keys_and_shapes_md5(shapes: dict) -> str:
  """DiffSynth-Studio's fingerprint: MD5 of the sorted ``key`` and ``key:d0_d1_...`` strings."""
  keys = []
  for key, shape in shapes.items():
    keys += [f"{key}:{'_'.join(map(str, shape))}", key]
  return hashlib.md5(",".join(sorted(keys)).encode()).hexdigest()


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_names_and_shapes_match_the_published_checkpoint(name):
  config, published = PUBLISHED[name]
  assert keys_and_shapes_md5(original_shapes(config)) == published


def test_control_camera_schema_with_dtypes():
  """The 1.3B Control-Camera file: 989 bfloat16 tensors, by a second, independent fingerprint."""
  shapes = original_shapes({**B13, **CAMERA})
  assert len(shapes) == 989
  rows = sorted(f"{k}|{tuple(s)}|BF16" for k, s in shapes.items())
  assert hashlib.sha256("\n".join(rows).encode()).hexdigest() == (
      "5a036572c54433d0831b6987b84ce0d4e95dcabf69e939c4e95b5cc0d7964e49")


def test_a_changed_shape_changes_the_fingerprint():
  """The check can fail: one width off (ffn 8960 -> 8961) no longer matches."""
  config, published = PUBLISHED["Wan2.1-Fun-V1.1-1.3B-Control"]
  assert keys_and_shapes_md5(original_shapes({**config, "ffn_dim": 8961})) != published
