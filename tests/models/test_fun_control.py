"""VideoX-Fun's Fun-Control pieces against PyTorch / numpy references written here from
VideoX-Fun's definitions (aigc-apps/VideoX-Fun: ``videox_fun/models/wan_transformer3d.py`` and
``wan_camera_adapter.py`` for the adapter and the reference conv, ``videox_fun/data/utils.py``
for CameraCtrl's rays, ``videox_fun/pipeline/pipeline_wan2_2_fun_control.py`` for the camera
packing and the condition's channel layout).

The torch model is diffusers' ``WanTransformer3DModel`` (the parity reference of the plain DiT)
with VideoX-Fun's ``SimpleAdapter`` added to the patch embedding and the reference conv's tokens
prepended, in the order of VideoX-Fun's forward. Every weight is perturbed. Tolerance (float32):
``|ours - torch| <= 2e-5 + 1e-4 max|torch|``.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from composed_vi.models import camera_control, fun_control_inputs  # noqa: E402
from composed_vi.models.wan import convert_transformer, loading, original_layout  # noqa: E402
from composed_vi.models.wan import transformer as wan  # noqa: E402

nn, F = torch.nn, torch.nn.functional
FAST = {"xla_backend_optimization_level": 0}  # compile time only; numerics unchanged
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=8,
            out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
            rope_max_seq_len=32)
FUN_KEYS = ("control_adapter_in_dim", "control_adapter_downscale", "ref_conv_in_dim")


# ---------------------------------------------------------------------------------------------
# The torch reference.


class ResidualBlock(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
    self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

  def forward(self, x):
    return x + self.conv2(torch.relu(self.conv1(x)))


class SimpleAdapter(nn.Module):
  """VideoX-Fun's camera adapter: per frame, PixelUnshuffle, a conv with kernel = stride = the
  spatial patch, one residual block. (B, C, F, H, W) -> (B, dim, F, h, w)."""

  def __init__(self, in_dim, out_dim, patch, downscale):
    super().__init__()
    self.pixel_unshuffle = nn.PixelUnshuffle(downscale)
    self.conv = nn.Conv2d(in_dim * downscale ** 2, out_dim, kernel_size=patch, stride=patch)
    self.residual_blocks = nn.Sequential(ResidualBlock(out_dim))

  def forward(self, x):
    b, c, f, h, w = x.shape
    y = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    y = self.residual_blocks(self.conv(self.pixel_unshuffle(y)))
    return y.view(b, f, *y.shape[1:]).permute(0, 2, 1, 3, 4)


def perturb(module, seed):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return module.eval()


def build_torch(diff_config, seed=0):
  """``(base, adapter or None, ref_conv or None, state dict under our key table's names)``."""
  torch.manual_seed(seed)
  base = perturb(diffusers.WanTransformer3DModel(
      **{k: v for k, v in diff_config.items() if not k.startswith("_") and k not in FUN_KEYS}),
      seed + 1)
  dim = base.config.num_attention_heads * base.config.attention_head_dim
  patch = tuple(base.config.patch_size[1:])
  state = dict(base.state_dict())
  adapter = ref_conv = None
  if diff_config.get("control_adapter_in_dim") is not None:
    adapter = perturb(SimpleAdapter(diff_config["control_adapter_in_dim"], dim, patch,
                                    diff_config.get("control_adapter_downscale", 8)), seed + 2)
    state.update({f"control_adapter.{k}": v for k, v in adapter.state_dict().items()})
  if diff_config.get("ref_conv_in_dim") is not None:
    ref_conv = perturb(nn.Conv2d(diff_config["ref_conv_in_dim"], dim, patch, stride=patch),
                       seed + 3)
    state.update({f"ref_conv.{k}": v for k, v in ref_conv.state_dict().items()})
  return base, adapter, ref_conv, state


@torch.no_grad()
def fun_forward(base, adapter, ref_conv, x, t, context, y_camera=None, full_ref=None):
  """VideoX-Fun's forward order on diffusers' modules: patch embedding (+ adapter), reference
  tokens prepended (rotary grid f + 1, per-token timesteps padded in front with the last one),
  blocks, head on every token, reference tokens dropped, unpatchify."""
  b, c, f, hh, ww = x.shape
  pt, ph, pw = base.config.patch_size
  h = base.patch_embedding(x)
  if adapter is not None and y_camera is not None:
    h = h + adapter(y_camera)
  grid = h.shape[2:]
  h = h.flatten(2).transpose(1, 2)
  n_ref, rope_input = 0, x
  if ref_conv is not None and full_ref is not None:
    ref = ref_conv(full_ref).flatten(2).transpose(1, 2)
    n_ref = ref.shape[1]
    h = torch.cat([ref, h], dim=1)
    rope_input = torch.zeros(b, c, f + pt, hh, ww)
    if t.ndim == 2:
      t = torch.cat([t[:, -1:].repeat(1, n_ref), t], dim=1)
  rotary = base.rope(rope_input)
  seq = t.shape[1] if t.ndim == 2 else None
  temb, proj, context, _ = base.condition_embedder(t.flatten() if seq else t, context, None,
                                                    timestep_seq_len=seq)
  proj = proj.unflatten(2 if seq else 1, (6, -1))
  for block in base.blocks:
    h = block(h, context, proj, rotary)
  if temb.ndim == 3:
    shift, scale = (base.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
    shift, scale = shift.squeeze(2), scale.squeeze(2)
  else:
    shift, scale = (base.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
  h = (base.norm_out(h.float()) * (1 + scale) + shift).type_as(h)
  h = base.proj_out(h)[:, n_ref:]
  h = h.reshape(b, *grid, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
  return h.flatten(6, 7).flatten(4, 5).flatten(2, 3).numpy()


def random_w2c(rng, frames, spread=0.3):
  """World-to-camera (frames, 3, 4): rotations near a random one, translations ~ N(0, 1)."""
  out = []
  for _ in range(frames):
    q, r = np.linalg.qr(np.eye(3) + spread * rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
      q[:, 0] = -q[:, 0]
    out.append(np.concatenate([q, rng.standard_normal((3, 1))], axis=1))
  return np.stack(out)


def camera_batch(rng, batch, latent_frames, height, width):
  """A batch of Control-Camera inputs built by our builder, (B, F', H, W, 24)."""
  frames = 1 + 4 * (latent_frames - 1)
  out = []
  for _ in range(batch):
    k = np.array([[0.9 * width, 0, width / 2], [0, 1.1 * width, height / 2], [0, 0, 1]])
    out.append(camera_control.control_camera(np.broadcast_to(k, (frames, 3, 3)),
                                             random_w2c(rng, frames), height, width))
  return np.stack(out)


def check_close(out, ref):
  assert out.shape == ref.shape
  err, scale = np.abs(out - ref).max(), np.abs(ref).max()
  assert err <= 2e-5 + 1e-4 * scale, (err, scale)
  return err, scale


# ---------------------------------------------------------------------------------------------
# The transformer with the adapter and the reference conv.

CASES = {
    # name: (config overrides, frames, height, width, batch, per-token t, camera, reference)
    "camera_and_ref": (dict(control_adapter_in_dim=24, ref_conv_in_dim=4), 3, 4, 6, 2, False,
                       True, True),
    "ref_per_token_t": (dict(ref_conv_in_dim=6, attention_head_dim=12), 3, 4, 6, 2, True, False,
                        True),
    "plucker_adapter_ds2": (dict(control_adapter_in_dim=6, control_adapter_downscale=2), 5, 6,
                            4, 1, False, True, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parity_with_videox_fun_composition(name):
  overrides, frames, height, width, batch, per_token, camera, reference = CASES[name]
  diff_config = {**TINY, **overrides}
  base, adapter, ref_conv, state = build_torch(diff_config)
  config = wan.config_from_diffusers(diff_config)
  params = convert_transformer.convert_state_dict(config, {k: v.numpy() for k, v in
                                                           state.items()})
  fn = wan.make_model_fn(config, compiler_options=FAST)
  rng = np.random.default_rng(2)
  x = rng.standard_normal((batch, frames, height, width, 8)).astype(np.float32)
  ctx = rng.standard_normal((batch, 5, 16)).astype(np.float32)
  tokens = frames * (height // 2) * (width // 2)
  t = (np.stack([np.linspace(0, 999, tokens), np.full(tokens, 500.0)])[:batch] if per_token
       else np.array([999.0, 351.5][:batch])).astype(np.float32)
  cam = ref = None
  if camera:
    r = config.control_adapter_downscale
    if config.control_adapter_in_dim == 24:  # the real input: packed Plücker rays
      cam = camera_batch(rng, batch, frames, height * r, width * r)
    else:
      cam = rng.standard_normal((batch, frames, height * r, width * r, 6)).astype(np.float32)
  if reference:
    ref = rng.standard_normal((batch, height, width, config.ref_conv_in_dim)).astype(np.float32)
  to_torch = (lambda a, axes: None if a is None else torch.from_numpy(np.ascontiguousarray(
      np.transpose(a, axes))))
  expected = fun_forward(base, adapter, ref_conv, to_torch(x, (0, 4, 1, 2, 3)),
                         torch.from_numpy(t), torch.from_numpy(ctx),
                         to_torch(cam, (0, 4, 1, 2, 3)), to_torch(ref, (0, 3, 1, 2)))
  out = fn(params, x, t, ctx, control_camera=cam, ref_latents=ref)
  check_close(np.moveaxis(np.asarray(out), -1, 1), expected)
  if name == "plucker_adapter_ds2":  # the optional input left out: the plain DiT
    expected = fun_forward(base, adapter, ref_conv, to_torch(x, (0, 4, 1, 2, 3)),
                           torch.from_numpy(t), torch.from_numpy(ctx))
    check_close(np.moveaxis(np.asarray(fn(params, x, t, ctx)), -1, 1), expected)


@pytest.mark.parametrize("overrides, match", [
    (dict(control_adapter_in_dim=0), "control_adapter_in_dim: expected None or a positive int"),
    (dict(control_adapter_in_dim=24, control_adapter_downscale=0), "control_adapter_downscale"),
    (dict(ref_conv_in_dim=True), "ref_conv_in_dim: expected None or a positive int"),
    (dict(ref_conv_in_dim=4, vace_layers=(0,), vace_in_channels=4), "ref_conv_in_dim: .*VACE"),
    (dict(ref_conv_in_dim=4, rope_position_channels=2), "ref_conv_in_dim: .*rope_position"),
])
def test_bad_fun_configs_are_refused(overrides, match):
  with pytest.raises(ValueError, match=match):
    wan.WanConfig(**{**TINY, **overrides})


# ---------------------------------------------------------------------------------------------
# An original-layout (VideoX-Fun) checkpoint folder.

ORIGINAL = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "t2v",
            "dim": 16, "num_heads": 2, "in_dim": 8, "out_dim": 4, "ffn_dim": 32, "freq_dim": 16,
            "num_layers": 2, "text_dim": 16, "eps": 1e-6, "text_len": 512, "in_channels": 8,
            "hidden_size": 16, "add_control_adapter": True, "in_dim_control_adapter": 24,
            "downscale_factor_control_adapter": 8, "add_ref_conv": True, "in_dim_ref_conv": 4}


def write_folder(folder, config, tensors):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(config))
  safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()},
                              str(folder / "diffusion_pytorch_model.safetensors"))
  return str(folder)


def test_videox_fun_folder_loads_and_matches(tmp_path):
  diff_config = original_layout.diffusers_config_from_original(ORIGINAL)
  assert {k: diff_config[k] for k in FUN_KEYS} == dict(
      control_adapter_in_dim=24, control_adapter_downscale=8, ref_conv_in_dim=4)
  base, adapter, ref_conv, state = build_torch(diff_config, seed=5)
  table = original_layout.original_to_diffusers_keys(diff_config)
  # VideoX-Fun's names: its SimpleAdapter's and ref_conv's own state-dict keys.
  assert {"control_adapter.conv.weight", "control_adapter.residual_blocks.0.conv2.bias",
          "ref_conv.weight"} <= set(table)
  folder = write_folder(tmp_path / "fun", ORIGINAL, {o: state[d] for o, d in table.items()})
  m = loading.load_transformer(folder, dtype=np.float32, compute_dtype=jnp.float32,
                               compiler_options=FAST)
  assert (m.config.control_adapter_in_dim, m.config.control_adapter_downscale,
          m.config.ref_conv_in_dim) == (24, 8, 4)
  rng = np.random.default_rng(3)
  x = rng.standard_normal((1, 3, 4, 6, 8)).astype(np.float32)
  t, ctx = np.array([700.0], np.float32), rng.standard_normal((1, 5, 16)).astype(np.float32)
  cam = camera_batch(rng, 1, 3, 32, 48)
  ref = rng.standard_normal((1, 4, 6, 4)).astype(np.float32)
  expected = fun_forward(base, adapter, ref_conv, torch.from_numpy(np.moveaxis(x, -1, 1)),
                         torch.from_numpy(t), torch.from_numpy(ctx),
                         torch.from_numpy(np.ascontiguousarray(np.moveaxis(cam, -1, 1))),
                         torch.from_numpy(np.ascontiguousarray(np.moveaxis(ref, -1, 1))))
  out = m.model_fn(m.params, x, t, ctx, control_camera=cam, ref_latents=ref)
  check_close(np.moveaxis(np.asarray(out), -1, 1), expected)

  # Inputs are refused by argument name, before any compute.
  bad_inputs = [
      (dict(control_camera=cam[..., :6]), r"control_camera: expected shape \(1, 3, 32, 48, 24\)"),
      (dict(control_camera=cam[:, :, :16]), r"control_camera: expected shape"),
      (dict(ref_latents=ref[..., :2]), r"ref_latents: expected shape \(1, 4, 6, 4\)"),
  ]
  for kwargs, match in bad_inputs:
    with pytest.raises(ValueError, match=match):
      m.model_fn(m.params, x, t, ctx, **kwargs)

  # Checkpoints and configs that disagree are refused by field or (original) tensor name.
  plain = {k: v for k, v in ORIGINAL.items() if k not in ("add_ref_conv", "in_dim_ref_conv")}
  with pytest.raises(ValueError, match=r"tensor 'ref_conv\.(weight|bias)' .* no entry"):
    loading.load_transformer(write_folder(tmp_path / "unflagged", plain,
                                          {o: state[d] for o, d in table.items()}))
  wrong = {**ORIGINAL, "in_dim_ref_conv": 5}
  with pytest.raises(ValueError, match=r"'ref_conv\.weight'.*shape \(16, 4, 2, 2\)"):
    loading.load_transformer(write_folder(tmp_path / "wrong", wrong,
                                          {o: state[d] for o, d in table.items()}))
  plain_model = loading.load_transformer(
      write_folder(tmp_path / "plain", plain, {o: state[d] for o, d in table.items()
                                               if not o.startswith("ref_conv")}),
      dtype=np.float32, compute_dtype=jnp.float32, compiler_options=FAST)
  with pytest.raises(ValueError, match="ref_latents: given to a model without a reference conv"):
    plain_model.model_fn(plain_model.params, x, t, ctx, ref_latents=ref)


@pytest.mark.parametrize("change, match", [
    (dict(add_control_adapter="yes"), "field 'add_control_adapter' expected a bool"),
    (dict(in_dim_control_adapter=0), "field 'in_dim_control_adapter' expected a positive"),
    (dict(downscale_factor_control_adapter=None), "'downscale_factor_control_adapter'"),
    (dict(in_dim_ref_conv=-1), "field 'in_dim_ref_conv' expected a positive"),
    (dict(model_type="vace", vace_layers=[0]), "field 'add_control_adapter' expected false for "
     "a VACE model"),
])
def test_bad_videox_fun_configs_are_refused(change, match):
  with pytest.raises(ValueError, match=match):
    original_layout.diffusers_config_from_original({**ORIGINAL, **change})


def test_videox_fun_defaults_and_off_flags():
  """VideoX-Fun's defaults (24 channels, downscale 8, 16 reference channels) when the flags are
  set alone; the size fields are inert while the flags are false."""
  bare = {k: v for k, v in ORIGINAL.items() if not k.startswith(("in_dim_", "downscale_"))}
  cfg = original_layout.diffusers_config_from_original(bare)
  assert (cfg["control_adapter_in_dim"], cfg["control_adapter_downscale"],
          cfg["ref_conv_in_dim"]) == (24, 8, 16)
  off = original_layout.diffusers_config_from_original(
      {**ORIGINAL, "add_control_adapter": False, "add_ref_conv": False, "in_dim_ref_conv": 0})
  assert not set(FUN_KEYS) & set(off)


# ---------------------------------------------------------------------------------------------
# The Control-Camera input: CameraCtrl's rays as VideoX-Fun computes them, and the packing.


def videox_fun_process_pose(entries, width, height, pose_width=1280, pose_height=720):
  """``process_pose_file`` of videox_fun/data/utils.py on parsed RealEstate10K rows, in numpy
  float32 as torch computes it: Camera, the aspect fix, get_relative_pose, ray_condition."""
  entries = np.asarray(entries, np.float64)
  fx, fy, cx, cy = (entries[:, i].copy() for i in range(1, 5))
  w2c = np.broadcast_to(np.eye(4), (len(entries), 4, 4)).copy()
  w2c[:, :3] = entries[:, 7:].reshape(-1, 3, 4)
  c2w = np.linalg.inv(w2c)
  sample_ratio, pose_ratio = width / height, pose_width / pose_height
  if pose_ratio > sample_ratio:
    fx = height * pose_ratio * fx / width
  else:
    fy = width / pose_ratio * fy / height
  k = np.stack([fx * width, fy * height, cx * width, cy * height], -1).astype(np.float32)
  poses = np.array([np.eye(4)] + [w2c[0] @ m for m in c2w[1:]], np.float32)
  # ray_condition
  j, i = np.meshgrid(np.linspace(0, height - 1, height, dtype=np.float32),
                     np.linspace(0, width - 1, width, dtype=np.float32), indexing="ij")
  i = i.reshape(1, -1) + np.float32(0.5)
  j = j.reshape(1, -1) + np.float32(0.5)
  fx, fy, cx, cy = (k[:, n:n + 1] for n in range(4))
  zs = np.ones_like(i)
  xs, ys = (i - cx) / fx * zs, (j - cy) / fy * zs
  directions = np.stack(np.broadcast_arrays(xs, ys, zs), axis=-1)
  directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
  rays_d = directions @ poses[:, :3, :3].transpose(0, 2, 1)
  rays_o = np.broadcast_to(poses[:, None, :3, 3], rays_d.shape)
  plucker = np.concatenate([np.cross(rays_o, rays_d), rays_d], axis=-1)
  return plucker.reshape(len(entries), height, width, 6)


def pipeline_camera_packing(plucker):
  """The Fun-Control pipelines' packing of ``control_camera_video`` (1, 6, F, H, W)."""
  video = torch.from_numpy(np.ascontiguousarray(plucker)).permute(3, 0, 1, 2).unsqueeze(0)
  lat = torch.concat([torch.repeat_interleave(video[:, :, 0:1], repeats=4, dim=2),
                      video[:, :, 1:]], dim=2).transpose(1, 2)
  b, f, c, h, w = lat.shape
  lat = lat.contiguous().view(b, f // 4, 4, c, h, w).transpose(2, 3)
  return lat.contiguous().view(b, f // 4, c * 4, h, w).transpose(1, 2)


@pytest.mark.parametrize("height, width", [(32, 48), (16, 40)])  # both aspect branches
def test_control_camera_matches_videox_fun(height, width):
  rng = np.random.default_rng(height)
  frames = 9
  w2c = random_w2c(rng, frames, spread=0.5)
  normalized = np.stack([rng.uniform(0.4, 0.8, frames), rng.uniform(0.6, 1.2, frames),
                         rng.uniform(0.4, 0.6, frames), rng.uniform(0.4, 0.6, frames)], -1)
  entries = np.concatenate([np.arange(frames)[:, None], normalized, np.zeros((frames, 2)),
                            w2c.reshape(frames, 12)], axis=1)
  expected = videox_fun_process_pose(entries, width, height)
  k = camera_control.cameractrl_intrinsics(normalized, width, height)
  rays = camera_control.plucker_rays(k, camera_control.relative_poses(w2c), height, width)
  assert rays.shape == (frames, height, width, 6) and rays.dtype == np.float32
  np.testing.assert_allclose(rays, expected, rtol=0, atol=1e-5)
  # Frame 0 is the identity pose: zero moments, directions straight from the intrinsics.
  assert np.abs(rays[0, ..., :3]).max() == 0
  # Packed per latent frame exactly as the pipelines pack it (no resizing: pixel resolution).
  packed = camera_control.control_camera(k, w2c, height, width)
  np.testing.assert_array_equal(
      packed, pipeline_camera_packing(rays).squeeze(0).permute(1, 2, 3, 0).numpy())
  assert packed.shape == (3, height, width, 24)
  # (T, 3, 3) pixel matrices and (T, 4, 4) extrinsics give the same input.
  mats = np.zeros((frames, 3, 3))
  mats[:, 0, 0], mats[:, 1, 1], mats[:, 0, 2], mats[:, 1, 2], mats[:, 2, 2] = (*k.T, 1)
  w2c4 = np.concatenate([w2c, np.broadcast_to([[[0, 0, 0, 1]]], (frames, 1, 4))], axis=1)
  np.testing.assert_array_equal(camera_control.control_camera(mats, w2c4, height, width), packed)


def test_camera_inputs_are_refused_by_name():
  k, w2c = np.eye(3), random_w2c(np.random.default_rng(0), 8)
  with pytest.raises(ValueError, match=r"frames: expected 1 \+ 4 n frames"):
    camera_control.control_camera(np.broadcast_to(k, (8, 3, 3)), w2c, 8, 8)
  with pytest.raises(ValueError, match="extrinsics: expected"):
    camera_control.control_camera(np.broadcast_to(k, (8, 3, 3)), w2c[:, :2], 8, 8)
  with pytest.raises(ValueError, match="intrinsics: expected 8 frames"):
    camera_control.plucker_rays(np.broadcast_to(k, (5, 3, 3)), w2c, 8, 8)
  with pytest.raises(ValueError, match="intrinsics: expected finite values with positive focal"):
    camera_control.plucker_rays(np.zeros((8, 4)), w2c, 8, 8)
  with pytest.raises(ValueError, match="height: expected a positive int"):
    camera_control.control_camera(np.broadcast_to(k, (9, 3, 3)), w2c[:1].repeat(9, 0), 0, 8)


# ---------------------------------------------------------------------------------------------
# The Fun-Control condition's channel layout.


def resize_mask(mask, latent, process_first_frame_only=True):
  """pipeline_wan2_2_fun_control.resize_mask."""
  size = list(latent.shape[2:])
  if not process_first_frame_only:
    return F.interpolate(mask, size=size, mode="trilinear", align_corners=False)
  first = F.interpolate(mask[:, :, 0:1], size=[1, *size[1:]], mode="trilinear",
                        align_corners=False)
  if size[0] == 1:
    return first
  rest = F.interpolate(mask[:, :, 1:], size=[size[0] - 1, *size[1:]], mode="trilinear",
                       align_corners=False)
  return torch.cat([first, rest], dim=2)


def pipeline_condition(latents, control=None, start=None, camera=False, mask_video=None,
                       masked=None):
  """Wan2_2FunControlPipeline's ``control_latents_input`` (channels-first, batch 1): ``mask_video``
  (1, 1, T, H, W) in {0, 1} (1 = generate) selects the inpainting path."""
  inpaint = mask_video is not None
  if inpaint:
    if bool((mask_video == 1).all()):
      mask_latents = torch.zeros_like(latents)[:, :1].repeat(1, 4, 1, 1, 1)
      masked = torch.zeros_like(latents)
    else:
      bs, _, _, height, width = mask_video.shape
      mc = torch.concat([torch.repeat_interleave(mask_video[:, :, 0:1], repeats=4, dim=2),
                         mask_video[:, :, 1:]], dim=2)
      mc = mc.view(bs, mc.shape[2] // 4, 4, height, width).transpose(1, 2)
      mask_latents = resize_mask(1 - mc, masked, True)
  cli = None if camera else (torch.zeros_like(latents) if control is None else control)
  if inpaint:
    y = torch.cat([mask_latents, masked], dim=1)
  else:
    y = torch.zeros_like(latents)
    if start is not None and latents.shape[2] != 1:
      y[:, :, :1] = start
  return (y if cli is None else torch.cat([cli, y], dim=1)).squeeze(0).permute(1, 2, 3, 0).numpy()


def test_condition_layout_matches_pipeline():
  rng = np.random.default_rng(4)
  z, t, h, w = 4, 3, 4, 6
  shape = (t, h, w, z)
  lat = lambda *s: rng.standard_normal(s).astype(np.float32)
  to_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))[None]
  noise, control, start, masked = lat(*shape), lat(*shape), lat(1, h, w, z), lat(*shape)
  build = fun_control_inputs.fun_control_condition
  # Fun-Control: control then the start image in frame 0 (48 channels at z = 16).
  y = build(shape, control=control, start_image=start, in_channels=3 * z)
  np.testing.assert_array_equal(y, pipeline_condition(to_t(noise), to_t(control), to_t(start)))
  assert np.all(y[1:, ..., z:] == 0)
  # Control-Camera: no control slot (32 channels at z = 16); absent inputs are zeros.
  y = build(shape, start_image=start[0], camera=True, in_channels=2 * z)
  np.testing.assert_array_equal(y, pipeline_condition(to_t(noise), start=to_t(start),
                                                      camera=True))
  np.testing.assert_array_equal(build(shape), np.zeros((t, h, w, 2 * z)))
  # A single latent frame: the pipelines leave the start image out.
  one = (1, h, w, z)
  np.testing.assert_array_equal(build(one, start_image=start), np.zeros((1, h, w, 2 * z)))
  # Inpainting: mask channels resized from the pixels, then the masked video's latents.
  pix = np.ones((9, 8 * h, 8 * w), np.float32)
  pix[0] = 0  # the first frame is kept
  pix[3:6, 5:19, 9:30] = 0  # and a box in a few frames
  y = build(shape, control=control, inpaint=True, mask=pix, masked_video_latents=masked,
            in_channels=3 * z + 4)
  expected = pipeline_condition(to_t(noise), to_t(control), mask_video=torch.from_numpy(pix)[None,
                                None], masked=to_t(masked))
  np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)
  assert y[0, ..., z:z + 4].min() == 1 and 0 < y[1, ..., z:z + 4].mean() < 1
  # Everything generated: zeros for the mask and the masked video, as the pipelines do.
  y = build(shape, camera=True, inpaint=True, mask=np.ones_like(pix), masked_video_latents=masked)
  np.testing.assert_array_equal(y, pipeline_condition(
      to_t(noise), camera=True, mask_video=torch.ones(1, 1, 9, 8 * h, 8 * w)))
  assert fun_control_inputs.condition_channels(16, camera=True, inpaint=True) == 20
  video = rng.uniform(-1, 1, (9, 8 * h, 8 * w, 3)).astype(np.float32)
  kept = fun_control_inputs.masked_video(video, pix)
  assert np.all(kept[1] == 0) and np.array_equal(kept[0], video[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(control=np.zeros((3, 4, 6, 4)), camera=True), "control: expected None for a camera"),
    (dict(in_channels=36), r"in_channels: expected 12 \(4 noise \+ 4 control \+ 4 start image"),
    (dict(control=np.zeros((3, 4, 5, 4))), r"control: expected latents of shape \(3, 4, 6, 4\)"),
    (dict(inpaint=True, mask=np.zeros((9, 32, 48))), "masked_video_latents: expected"),
    (dict(inpaint=True, mask=np.zeros((5, 32, 48)), masked_video_latents=np.zeros((3, 4, 6, 4))),
     "mask: expected 9 frames"),
    (dict(mask=np.zeros((9, 32, 48))), "inpaint: expected True"),
])
def test_condition_inputs_are_refused_by_name(kwargs, match):
  with pytest.raises(ValueError, match=match):
    fun_control_inputs.fun_control_condition((3, 4, 6, 4), **kwargs)
