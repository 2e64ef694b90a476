"""The one dilation: a square max-filter that stops at the image border."""

import numpy as np
import pytest

from composed_vi.world.masks import dilate


def _reference(mask, radius):
  """Per-pixel definition: the maximum over the window clipped to the image."""
  h, w = mask.shape[-2:]
  out = np.zeros_like(mask)
  for y in range(h):
    for x in range(w):
      win = mask[..., max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
      out[..., y, x] = win.max(axis=(-2, -1))
  return out


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_dilate_matches_the_clipped_window_definition(radius):
  rng = np.random.default_rng(radius)
  mask = (rng.random((3, 7, 9)) > 0.85).astype(np.float32) * rng.random((3, 7, 9))
  np.testing.assert_array_equal(dilate(mask, radius), _reference(mask, radius))
  as_bool = mask > 0
  out = dilate(as_bool, radius)
  assert out.dtype == bool
  np.testing.assert_array_equal(out, _reference(as_bool, radius))


def test_dilate_does_not_wrap_around_the_border():
  mask = np.zeros((2, 8, 8, 1), np.float32)
  mask[:, 0, 0] = 1.0
  out = dilate(mask, 1, axes=(1, 2))
  expected = np.zeros_like(mask)
  expected[:, :2, :2] = 1.0
  np.testing.assert_array_equal(out, expected)
  assert out[:, -1, -1].max() == 0.0 and out[:, 0, -1].max() == 0.0


def test_dilate_axes_pick_the_spatial_axes():
  rng = np.random.default_rng(0)
  mask = (rng.random((4, 6, 5)) > 0.8).astype(np.float32)
  channels_last = dilate(mask[..., None], 2, axes=(1, 2))[..., 0]
  np.testing.assert_array_equal(channels_last, dilate(mask, 2))


def test_dilate_refuses_a_negative_radius():
  with pytest.raises(ValueError, match="radius"):
    dilate(np.zeros((4, 4)), -1)
