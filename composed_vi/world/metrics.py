"""Control errors of generated world videos against the world's exact ground truth.

Videos are ``(T, H, W, 3)`` in [-1, 1]; ``example`` is a :mod:`composed_vi.world.dataset` dict.
Issue 6's metrics: :func:`track_error_px` (object trajectory), :func:`camera_background_error`,
:func:`consistency_3d`, :func:`camera_following` (a backbone that sees the camera path
alone), :func:`first_frame_l1`, :func:`diversity` (several particles) with
:func:`high_frequency_energy` beside it (texture, to tell diversity from noise),
:func:`validity` (per particle) and :func:`all_metrics` (all of them for one case).
"""

from __future__ import annotations

import numpy as np

from composed_vi.world.masks import dilate, simulated_region, unsimulated_band


def first_frame_l1(video, example) -> float:
  """Mean absolute error of frame 0 against the given first frame."""
  return float(np.mean(np.abs(np.asarray(video)[0] - example.first_frame)))


def object_positions(video, example, exclude=None) -> np.ndarray:
  """Estimated 2-D centre ``(T, O, 2)`` of each valid object in ``video`` (NaN when absent).

  The object's pixels are those closest in colour to what the ground truth shows of it (its
  mean colour over the ground-truth mask), as many as its ground-truth area in that frame;
  ``exclude`` (``(T, H, W)`` bool, optional) marks pixels never taken.
  """
  video = np.asarray(video, np.float32)
  if exclude is not None:
    video = np.where(np.asarray(exclude, bool)[..., None], np.float32(1e3), video)
  t, h, w, _ = video.shape
  masks = example.masks
  gt = example.video
  vv, uu = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  out = np.full((t, masks.shape[-1], 2), np.nan, np.float32)
  for o in np.flatnonzero(example.object_valid):
    for f in range(t):
      m = masks[f, :, :, o] > 0.5
      area = int(m.sum())
      if area == 0:
        continue
      colour = gt[f][m].mean(axis=0)
      dist = np.sum(np.square(video[f] - colour), axis=-1).ravel()
      idx = np.argsort(dist, kind="stable")[:area]
      out[f, o] = (uu.ravel()[idx].mean(), vv.ravel()[idx].mean())
  return out


def _simulated_slots(example) -> np.ndarray:
  valid = np.asarray(example.object_valid, bool)
  flags = getattr(example, "object_simulated", None)
  return valid if flags is None else valid & np.asarray(flags, bool)


def track_error_px(video, example, exclude=None) -> float:
  """Mean distance in pixels between the estimated centres of the simulated objects and the
  simulation's 2-D tracks, over frames where the object is visible. The estimator's own floor is
  ``track_error_px(example.video, example)`` (the ground-truth video). ``exclude``: see
  :func:`object_positions` (e.g. :func:`outside_simulated_band`)."""
  est = object_positions(video, example, exclude)
  vis = example.track_visible.astype(bool) & _simulated_slots(example)[None, :]
  ok = vis & np.all(np.isfinite(est), -1)
  if not ok.any():
    return float("nan")
  return float(np.mean(np.linalg.norm(est[ok] - example.tracks[ok], axis=-1)))


def outside_simulated_band(example, dilation: int = 1) -> np.ndarray:
  """``(T, H, W)`` bool: the unsimulated object's band outside the (dilated) simulated objects'
  region, where only the image backbone paints. ``track_error_px(video, example,
  exclude=outside_simulated_band(example))`` does not see a copy of a simulated object painted
  there (a ghost), which the plain estimator, matching colours anywhere, takes for it."""
  region = dilate(np.asarray(simulated_region(example))[..., 0] > 0.5, dilation)
  return (np.asarray(unsimulated_band(example))[..., 0] > 0.5) & ~region


def background_l1(video, example) -> float:
  """Mean absolute error against the ground truth on the background (no object) pixels,
  outside :func:`composed_vi.world.masks.unsimulated_band` (where an unsimulated object may
  be in a sample)."""
  bg = (1.0 - example.object_region) * (1.0 - unsimulated_band(example))
  return float(np.sum(np.abs(np.asarray(video) - example.video) * bg)
               / max(float(np.sum(bg)) * 3, 1.0))


def object_l1(video, example) -> float:
  """Mean absolute error against the ground truth on the simulated objects' pixels (an
  unsimulated object's pixels after frame 0 are unspecified: see :func:`unsimulated_diversity`).
  """
  region = simulated_region(example)
  return float(np.sum(np.abs(np.asarray(video) - example.video) * region)
               / max(float(np.sum(region)) * 3, 1.0))


# ----------------------------------------------------------------------------- helpers


def static_background(example, margin: int = 1) -> np.ndarray:
  """``(T, H, W)`` bool: pixels whose centre ray hits the static scene (floor or wall, not the
  sky) and that are at least ``margin`` pixels away from every object (the anti-aliased RGB of
  a pixel next to an object mixes in the object's colour, and objects move), outside the band
  an unsimulated object may roll in."""
  objects = np.asarray(example.object_region)[..., 0] > 0.5
  band = unsimulated_band(example)[..., 0] > 0.5
  return (np.asarray(example.depth) > 0) & ~dilate(objects, margin) & ~band


def masked_l1(a, b, mask) -> float:
  """Mean absolute difference over the pixels of ``mask`` ``(..., H, W)`` and the 3 channels
  (NaN when the mask is empty)."""
  mask = np.asarray(mask, bool)
  if not mask.any():
    return float("nan")
  diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
  return float(np.mean(diff[mask]))


# ----------------------------------------------------------------------------- camera


def camera_background_error(video, example, margin: int = 1) -> float:
  """Camera/background error: mean absolute error (RGB units of [-1, 1], so 0 to 2)
  of frames ``1..T-1`` of ``video`` ``(T, H, W, 3)`` against the ground-truth rendering
  ``example.video`` on the static background the first frame saw.

  The pixels are those of ``example.background_visibility`` (the first frame's background
  lifted to 3D and splatted along the camera path, so a wrong camera motion moves the
  background away from them) that are also :func:`static_background` in that frame (no object
  within ``margin`` pixels; objects are measured by :func:`track_error_px`). Frame 0 is the
  first-frame control (:func:`first_frame_l1`) and is left out unless ``T == 1``. The ground
  truth scores exactly 0; NaN when no pixel qualifies.
  """
  video = np.asarray(video, np.float32)
  mask = (np.asarray(example.background_visibility)[..., 0] > 0.5) & static_background(
      example, margin)
  frames = slice(1, None) if video.shape[0] > 1 else slice(None)
  return masked_l1(video[frames], np.asarray(example.video)[frames], mask[frames])


# ----------------------------------------------------------------------------- 3D consistency


def _unproject(intrinsics, extrinsic, depth):
  """World points ``(H, W, 3)`` of the pixel centres at camera ``z`` depth ``depth`` ``(H, W)``."""
  h, w = depth.shape
  v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(intrinsics).T
  cam = rays * depth[..., None]
  return (cam - extrinsic[:, 3]) @ extrinsic[:, :3]  # R^T (x_cam - t)


def _project(intrinsics, extrinsic, points):
  """Pixel coordinates ``(..., 2)`` (``(u, v)``) and camera depth ``(...)`` of world points."""
  cam = points @ extrinsic[:, :3].T + extrinsic[:, 3]
  z = cam[..., 2]
  img = cam @ intrinsics.T
  return img[..., :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)[..., None], z


def reproject(example, source: int, target: int, depth_tolerance: float = 0.05,
              margin: int = 1):
  """Where the static background of frame ``source`` lands in frame ``target``.

  Each pixel centre of ``source`` is lifted to 3D with the ground-truth depth, ``K`` and
  ``extrinsics[source]``, and projected with ``extrinsics[target]``. It is kept when it is
  :func:`static_background` in ``source``, lands inside ``target`` with all of its (non-zero
  weight) bilinear neighbours also static background there, and passes the depth test: its
  projected depth is within ``depth_tolerance`` (relative) of each neighbour's ground-truth
  depth in ``target`` (a point hidden behind something else in ``target`` is not co-visible).

  Returns:
    ``(index, weights, valid)``: ``(H, W, 4)`` int flat pixel indices into ``target``, their
    ``(H, W, 4)`` bilinear weights, and ``(H, W)`` bool co-visibility.
  """
  depth = np.asarray(example.depth, np.float64)
  K = np.asarray(example.intrinsics, np.float64)
  extr = np.asarray(example.extrinsics, np.float64)
  _, h, w = depth.shape
  background = static_background(example, margin)
  uv, z = _project(K, extr[target], _unproject(K, extr[source], depth[source]))
  x, y = uv[..., 0] - 0.5, uv[..., 1] - 0.5  # continuous pixel index (centres at integers)
  slack = 1e-3  # pixels: round-off of the identity reprojection at the image border
  valid = (background[source] & (z > 0) & (x >= -slack) & (x <= w - 1 + slack)
           & (y >= -slack) & (y <= h - 1 + slack))
  x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
  x0, y0 = np.floor(x), np.floor(y)
  fx, fy = x - x0, y - y0
  indices, weights = [], []
  for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
    weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
    row = np.clip(y0 + dy, 0, h - 1).astype(np.int64)
    col = np.clip(x0 + dx, 0, w - 1).astype(np.int64)
    needed = weight > 1e-6
    ok = background[target][row, col] & (
        np.abs(depth[target][row, col] - z) <= depth_tolerance * np.abs(z))
    valid &= ~needed | ok
    indices.append(row * w + col)
    weights.append(np.where(needed, weight, 0.0))
  weights = np.stack(weights, -1)
  weights /= np.maximum(weights.sum(-1, keepdims=True), 1e-12)
  return np.stack(indices, -1), weights, valid


def consistency_3d(video, example, reference: str = "first", depth_tolerance: float = 0.05,
                   margin: int = 1) -> float:
  """3D consistency: photometric error of ``video`` ``(T, H, W, 3)`` between frames, through
  the ground-truth geometry (mean absolute RGB error in [-1, 1] units, 0 to 2; lower is better).

  Every frame ``t >= 1`` is reprojected (:func:`reproject`: ground-truth depth and cameras,
  co-visible static background only, depth test) into frame 0 (``reference="first"``: long-range
  drift counts) or frame ``t - 1`` (``"previous"``); the score is the mean absolute difference
  between the video's pixel in frame ``t`` and its bilinear sample of the other frame, over
  all co-visible pixels of all pairs. Objects are excluded (they move) and so is the sky (no
  depth). The ground truth does not score exactly 0: bilinear resampling of the anti-aliased
  texture and the moving shadows of the objects leave a floor (mean 0.02, at most 0.06, on 32
  scenes of the default world; 0 with a static camera and still objects), while a video of
  independent uniform noise scores about 0.6 and repeating the first frame (ignoring the camera)
  about 0.1 on moving cameras. A constant video scores 0: read it with
  :func:`camera_background_error`. NaN when no pixel is co-visible.
  """
  return _consistency_score(video, _consistency_pairs(example, reference, depth_tolerance,
                                                      margin))


def _consistency_pairs(example, reference, depth_tolerance, margin):
  """The reprojections of :func:`consistency_3d` (they depend on the example alone)."""
  if reference not in ("first", "previous"):
    raise ValueError(f"reference: expected 'first' or 'previous', got {reference!r}")
  pairs = []
  for t in range(1, np.asarray(example.depth).shape[0]):
    other = 0 if reference == "first" else t - 1
    index, weights, valid = reproject(example, t, other, depth_tolerance, margin)
    if valid.any():
      pairs.append((t, other, index[valid], weights[valid], valid))
  return pairs


def _consistency_score(video, pairs) -> float:
  video = np.asarray(video, np.float32)
  total, count = 0.0, 0
  for t, other, index, weights, valid in pairs:
    sampled = np.sum(video[other].reshape(-1, 3)[index] * weights[..., None], -2)
    total += float(np.sum(np.abs(video[t][valid] - sampled)))
    count += int(valid.sum()) * 3
  return total / count if count else float("nan")


def camera_following(video, example, reversed_example, depth_tolerance: float = 0.05,
                     margin: int = 1) -> float:
  """How much more the video moves like its own camera path than like the reversed one.

  ``reversed_example``: the same scene with the camera path reversed
  (:func:`composed_vi.world.scene.reverse_camera`: pan right instead of left, dolly out
  instead of in, the orbit the other way, from the same start pose). The score is
  ``consistency_3d(video, reversed_example) - consistency_3d(video, example)``: positive when
  the video's frames reproject onto each other through its own camera path better than through
  the reversed one, about 0 for a video whose motion ignores the path, negative for a video that
  moves the other way. Unlike :func:`camera_background_error` it needs no knowledge of the
  scene's colours, so it measures a backbone that sees the camera path alone. The ground truth
  scores about +0.1 on the default world, its reversed rendering the negative of a similar
  value. NaN for a static camera (reversing it changes nothing) or when no pixel is co-visible.
  """
  if np.allclose(np.asarray(example.extrinsics), np.asarray(reversed_example.extrinsics)):
    return float("nan")
  own = consistency_3d(video, example, "first", depth_tolerance, margin)
  other = consistency_3d(video, reversed_example, "first", depth_tolerance, margin)
  return other - own


# ----------------------------------------------------------------------------- diversity


def unspecified_region(example) -> np.ndarray:
  """``(T, H, W, 1)`` float {0, 1}: pixels no control specifies, neither seen in the 3D cache
  of the first frame (``example.visibility``) nor covered by an object (whose appearance
  and motion the first frame and the simulation give), plus the band an unsimulated object
  may roll in."""
  seen = np.maximum(np.asarray(example.visibility), simulated_region(example))
  free = np.maximum(1.0 - seen, unsimulated_band(example) * (1.0 - simulated_region(example)))
  return free.astype(np.float32)


def unsimulated_diversity(videos, example) -> float:
  """:func:`diversity` on the band an unsimulated object may roll in, off the simulated
  objects (:func:`composed_vi.world.masks.unsimulated_band`); NaN when every object is
  simulated."""
  region = unsimulated_band(example) * (1.0 - simulated_region(example))
  return diversity(videos, region=region)


def _particle_region(videos, example, region, name: str) -> np.ndarray:
  """The ``(T, H, W, 1)`` region of particles ``(N, T, H, W, 3)``: ``region`` broadcast, or
  the example's :func:`unspecified_region`."""
  if region is None:
    if example is None:
      raise ValueError(f"{name}: give example or region")
    region = unspecified_region(example)
  region = np.asarray(region, np.float32)
  if region.ndim == videos.ndim - 2:
    region = region[..., None]
  return np.broadcast_to(region, videos.shape[1:-1] + (1,))


def diversity(videos, example=None, region=None) -> float:
  """Mean pairwise L1 between particles on a region (RGB in [-1, 1] units, 0 to 2).

  Args:
    videos: ``(N, T, H, W, 3)`` particles of one case.
    example: the case's example; gives the default region :func:`unspecified_region`.
    region: optional weights broadcastable to ``(T, H, W, 1)`` (or ``(T, H, W)``).

  Returns:
    The mean over pairs ``i < j`` of ``sum |x_i - x_j| * region / (3 sum region)``; NaN with
    fewer than 2 particles or an empty region. Identical particles score 0.
  """
  videos = np.asarray(videos, np.float32)
  region = _particle_region(videos, example, region, "diversity")
  norm = float(np.sum(region)) * videos.shape[-1]
  n = videos.shape[0]
  if n < 2 or norm <= 0:
    return float("nan")
  pairs = [float(np.sum(np.abs(videos[i] - videos[j]) * region)) / norm
           for i in range(n) for j in range(i + 1, n)]
  return float(np.mean(pairs))


def diversity_everywhere(videos, example=None) -> float:
  """Mean pairwise L1 between particles ``(N, T, H, W, 3)`` over every pixel (see
  :func:`diversity`)."""
  videos = np.asarray(videos, np.float32)
  return diversity(videos, region=np.ones(videos.shape[1:-1] + (1,), np.float32))


def high_frequency_energy(videos, example=None, region=None) -> float:
  """Mean ``|x - mean of its 4 neighbours|`` over a region (RGB in [-1, 1] units), averaged
  over particles: tells texture from blur (0 for a flat or linear image) and, beside
  :func:`diversity`, whether particles that differ are noisy (more than the ground truth's)
  or textured like it.

  Args:
    videos: ``(N, T, H, W, 3)`` particles, or one video ``(T, H, W, 3)``.
    example: gives the default region :func:`unspecified_region`.
    region: optional weights broadcastable to ``(T, H, W, 1)`` (or ``(T, H, W)``).

  Only interior pixels count (the image border has no 4 neighbours). A checkerboard of
  ``+-a`` scores ``2a``; NaN for an empty region.
  """
  videos = np.asarray(videos, np.float32)
  if videos.ndim == 4:
    videos = videos[None]
  region = _particle_region(videos, example, region, "high_frequency_energy")[:, 1:-1, 1:-1]
  neighbours = 0.25 * (videos[:, :, :-2, 1:-1] + videos[:, :, 2:, 1:-1]
                       + videos[:, :, 1:-1, :-2] + videos[:, :, 1:-1, 2:])
  detail = np.abs(videos[:, :, 1:-1, 1:-1] - neighbours)
  norm = float(np.sum(region)) * videos.shape[-1] * videos.shape[0]
  if norm <= 0:
    return float("nan")
  return float(np.sum(detail * region[None]) / norm)


# ----------------------------------------------------------------------------- unsimulated object


def _unsimulated_slots(example) -> np.ndarray:
  return np.asarray(example.object_valid, bool) & ~_simulated_slots(example)


def unsimulated_matches(video, example, min_overlap: float = 0.5):
  """Where each unsimulated object is in frames ``1..T-1`` of ``video``, and how solid.

  An unsimulated object's frame-0 appearance (its pixels in the first frame, ``masks[0]``) is
  placed at every whole-pixel offset that puts its centre in
  :func:`composed_vi.world.masks.unsimulated_band`'s rows (any column); each placement scores
  the mean absolute RGB error between the video and the object's frame-0 colours over the
  placed pixels that fall inside the image and off the simulated objects of that frame (at
  least ``min_overlap`` of the object's pixels must count). The best placement is the
  object's appearance error in that frame and its centre the object's position.

  A video that moves the object as one solid piece (any path along the band) scores the
  shading and scale change of the object only (the ground truth's own score,
  ``unsimulated_object_l1_floor`` of :func:`unsimulated_metrics`); a video where it faded or
  broke up scores what the floor or a fragment gives.

  Returns:
    ``errors`` ``(T - 1, K)`` and ``centres`` ``(T - 1, K, 2)`` (pixel ``(u, v)``, the
    tracks' convention) for the ``K`` unsimulated objects visible in frame 0 (``K = 0``
    when there is none).
  """
  video = np.asarray(video, np.float32)
  t, h, w, _ = video.shape
  masks = np.asarray(example.masks)
  band = unsimulated_band(example)[..., 0] > 0.5
  sim = simulated_region(example)[..., 0] > 0.5
  slots = [o for o in np.flatnonzero(_unsimulated_slots(example)) if masks[0, :, :, o].any()]
  errors = np.full((max(t - 1, 0), len(slots)), np.nan, np.float32)
  centres = np.full((max(t - 1, 0), len(slots), 2), np.nan, np.float32)
  first = np.asarray(example.first_frame, np.float32)
  for k, o in enumerate(slots):
    ys, xs = np.nonzero(masks[0, :, :, o] > 0.5)
    colours = first[ys, xs]                                    # (P, 3)
    cy, cx = ys.mean(), xs.mean()
    need = max(int(np.ceil(min_overlap * ys.size)), 1)
    for f in range(1, t):
      rows = np.flatnonzero(band[f].any(axis=1))
      if rows.size == 0:
        continue
      dys = np.arange(-h, h)
      dys = dys[np.isin(np.round(cy + dys).astype(int), rows)]
      dxs = np.arange(-w, w)
      dxs = dxs[(cx + dxs >= 0) & (cx + dxs <= w - 1)]
      dy, dx = (a.ravel() for a in np.meshgrid(dys, dxs, indexing="ij"))
      yy, xx = ys[None] + dy[:, None], xs[None] + dx[:, None]  # (S, P)
      inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
      yc, xc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
      count = inside & ~sim[f][yc, xc]
      err = np.mean(np.abs(video[f][yc, xc] - colours[None]), axis=-1)  # (S, P)
      n = count.sum(axis=1)
      score = np.where(n >= need, np.sum(err * count, axis=1) / np.maximum(n, 1), np.inf)
      best = int(np.argmin(score))
      if np.isfinite(score[best]):
        errors[f - 1, k] = score[best]
        centres[f - 1, k] = (cx + dx[best] + 0.5, cy + dy[best] + 0.5)
  return errors, centres


def unsimulated_object_l1(video, example) -> float:
  """The unsimulated objects' appearance error: the mean over frames ``1..T-1`` and objects of
  :func:`unsimulated_matches`' best-placement error (RGB L1 in [-1, 1] units); NaN when every
  object is simulated. Where the object went is free; that it is still there, solid and of
  its colour, is what this measures (a faded object scores the floor's difference from it)."""
  errors, _ = unsimulated_matches(video, example)
  return _nanmean(errors)


#: :func:`unsimulated_presence` scores only the frames where the object-removed video's
#: :func:`unsimulated_object_l1` exceeds the ground truth's by this much (RGB L1 in [-1, 1]
#: units; 0.1 is about 13 grey levels): frames where the object is out of view, hidden, or
#: of the floor's colour cannot tell present from absent.
PRESENCE_MIN_CONTRAST = 0.1


def unsimulated_presence(video, example, absent_video) -> float:
  """How much of the unsimulated objects is still there, solid, in frames ``1..T-1``: per
  frame and object ``clip((a - x) / (a - g), 0, 1)`` of :func:`unsimulated_matches`' errors
  of ``video`` (``x``), of the ground truth (``g``, 1 by construction) and of
  ``absent_video``, the same scene rendered without the unsimulated objects (``a``, 0; see
  :func:`composed_vi.world.dataset.video_without_unsimulated`), averaged over the frames
  where ``a - g >= PRESENCE_MIN_CONTRAST``. An object that faded or broke up scores near 0
  wherever it went; one carried whole along any path near 1. NaN when every object is
  simulated or no frame has the contrast."""
  return _presence(*(unsimulated_matches(v, example)[0]
                     for v in (video, example.video, absent_video)))


def _presence(x, g, a) -> float:
  return _nanmean(_presence_terms(x, g, a))


#: A particle's unsimulated object counts as there, for :func:`unsimulated_motion_spread`, in
#: the frames where its :func:`unsimulated_presence` term is at least this.
SOLID_PRESENCE = 0.5


def unsimulated_motion_spread(videos, example, absent_video=None) -> float:
  """How differently the particles ``(N, T, H, W, 3)`` move the unsimulated objects: the mean
  over frames ``1..T-1``, objects and particle pairs of the distance in pixels between their
  :func:`unsimulated_matches` positions. Given ``absent_video`` (the scene without those
  objects), only the pairs where both particles' objects are there (presence term >=
  :data:`SOLID_PRESENCE`, in a frame with the contrast of :func:`unsimulated_presence`)
  count: where an object faded, its best placement is wherever the floor looks most like
  it, and that is not motion. NaN with fewer than 2 particles, no unsimulated object, or no
  such pair."""
  return unsimulated_metrics(videos, example, absent_video)["unsimulated_motion_spread"]


def unsimulated_metrics(videos, example, absent_video=None) -> dict:
  """The unsimulated objects' metrics of particles ``(N, T, H, W, 3)``, from one
  :func:`unsimulated_matches` per video: ``unsimulated_object_l1`` (mean over particles of
  :func:`unsimulated_object_l1`), the ground truth's ``unsimulated_object_l1_floor``,
  ``unsimulated_motion_spread`` (:func:`unsimulated_motion_spread`) and, given
  ``absent_video``, ``unsimulated_presence`` (mean over particles of
  :func:`unsimulated_presence`; NaN without it)."""
  videos = np.asarray(videos, np.float32)
  matches = [unsimulated_matches(v, example) for v in videos]
  truth = unsimulated_matches(example.video, example)[0]
  centres = np.stack([m[1] for m in matches])
  out = dict(unsimulated_object_l1=_nanmean([_nanmean(m[0]) for m in matches]),
             unsimulated_object_l1_floor=_nanmean(truth),
             unsimulated_presence=float("nan"),
             unsimulated_motion_spread=_spread(centres))
  if absent_video is not None:
    absent = unsimulated_matches(absent_video, example)[0]
    terms = [_presence_terms(m[0], truth, absent) for m in matches]
    out["unsimulated_presence"] = _nanmean([_nanmean(t) for t in terms])
    out["unsimulated_motion_spread"] = _spread(
        centres, np.stack([t >= SOLID_PRESENCE for t in terms]))
  return out


def _presence_terms(x, g, a) -> np.ndarray:
  """Per frame and object presence terms of :func:`unsimulated_presence` (NaN where the frame
  has too little contrast)."""
  contrast = a - g
  ok = np.isfinite(x) & np.isfinite(contrast) & (contrast >= PRESENCE_MIN_CONTRAST)
  with np.errstate(invalid="ignore", divide="ignore"):
    terms = np.clip((a - x) / np.where(ok, contrast, 1.0), 0.0, 1.0)
  return np.where(ok, terms, np.nan)


def _spread(centres, solid=None) -> float:
  """Mean pairwise distance of particles' positions ``(N, T - 1, K, 2)``, over the entries
  where both are ``solid`` ``(N, T - 1, K)`` (every entry when None)."""
  n = centres.shape[0]
  if n < 2:
    return float("nan")
  dists = []
  for i in range(n):
    for j in range(i + 1, n):
      d = np.linalg.norm(centres[i] - centres[j], axis=-1)
      if solid is not None:
        d = np.where(solid[i] & solid[j], d, np.nan)
      dists.append(d)
  return _nanmean(np.stack(dists))


# ----------------------------------------------------------------------------- validity

#: Default validity thresholds of :func:`validity`, set from the errors of the ground truth, of
#: mildly degraded ground truth and of wrong answers on 32 scenes of the default world
#: (``dataset.batch(jax.random.key(123), 32)``; 5th to 95th percentiles):
#:
#: * ``first_frame_l1`` 0.1 (RGB units of [-1, 1]): the ground truth scores 0, a 1-pixel shift
#:   0.04 to 0.10, Gaussian noise of std 0.1 0.08, while another scene's video scores 0.21 to
#:   0.33 and uniform noise 0.58.
#: * ``track_excess_px`` 2.0: pixels of track error *above the estimator's floor* (the error of
#:   the ground-truth video itself, :func:`track_error_px`, 0.2 to 4.7 px, because the
#:   colour-based centre estimate is biased where the object is small, shaded or near a
#:   similar colour). A 1-pixel shift adds about 0.7 px, a 4-pixel shift about 4, a frozen
#:   first frame about 4 (median 5.4 px), another scene about 10.
#: * ``camera_background_error`` 0.1: the ground truth scores 0, the 3D-cache control itself
#:   (splatting error) 0.003 to 0.07, a 1-pixel shift 0.03 to 0.09, while ignoring the camera
#:   (repeating the first frame) scores 0.04 to 0.19 on moving cameras (a small dolly moves the
#:   background little), another scene 0.19 to 0.32.
VALIDITY_THRESHOLDS = {
    "first_frame_l1": 0.1,
    "track_excess_px": 2.0,
    "camera_background_error": 0.1,
}


def _finite_or(value: float, default: float) -> float:
  return float(value) if np.isfinite(value) else default


def validity(video, example, thresholds=None, track_floor=None) -> dict:
  """Whether one particle ``(T, H, W, 3)`` still satisfies each control.

  Args:
    video: ``(T, H, W, 3)`` in [-1, 1].
    example: the world example.
    thresholds: optional overrides of :data:`VALIDITY_THRESHOLDS` (documented there).
    track_floor: the ground truth's :func:`track_error_px` if already computed.

  Returns:
    bools ``first_frame`` (``first_frame_l1 <= thresholds["first_frame_l1"]``), ``track``
    (``track_error_px <= floor + thresholds["track_excess_px"]``; true when no object is
    visible), ``background`` (``camera_background_error <= thresholds[...]``; true when no
    background pixel qualifies) and ``valid_all`` (all three). The ground truth is valid.
  """
  limits = dict(VALIDITY_THRESHOLDS)
  limits.update(thresholds or {})
  if track_floor is None:
    track_floor = track_error_px(example.video, example)
  track = track_error_px(video, example)
  background = camera_background_error(video, example)
  out = {
      "first_frame": bool(first_frame_l1(video, example) <= limits["first_frame_l1"]),
      "track": bool(np.isnan(track)
                    or track <= _finite_or(track_floor, 0.0) + limits["track_excess_px"]),
      "background": bool(np.isnan(background)
                         or background <= limits["camera_background_error"]),
  }
  out["valid_all"] = all(out.values())
  return out


def _nanmean(values) -> float:
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else float("nan")


def all_metrics(videos, example, thresholds=None, absent_video=None) -> dict:
  """Every world metric of the particles ``videos`` ``(N, T, H, W, 3)`` of one case.

  Returns a dict of floats: the means over particles (NaN particles skipped) of
  ``first_frame_l1``, ``track_error_px``, ``camera_background_error``, ``consistency_3d``,
  ``background_l1`` and ``object_l1``; the fractions of valid particles ``valid_first_frame``,
  ``valid_track``, ``valid_background`` and ``valid_all`` (:func:`validity`); ``diversity``
  (on :func:`unspecified_region`), ``diversity_everywhere`` and ``unsimulated_diversity``
  (:func:`unsimulated_diversity`; NaN for one particle or no unsimulated object); the
  ground truth's own ``track_error_floor_px`` and ``consistency_3d_floor``; the unsimulated
  objects' metrics of :func:`unsimulated_metrics` (``absent_video``, the scene without them,
  gives their presence); and ``num_particles``.
  """
  videos = np.asarray(videos, np.float32)
  if videos.ndim != 5:
    raise ValueError(f"videos: expected (N, T, H, W, 3), got shape {videos.shape}")
  pairs = _consistency_pairs(example, "first", 0.05, 1)
  floor = track_error_px(example.video, example)
  per = {m: [] for m in ("first_frame_l1", "track_error_px", "camera_background_error",
                         "consistency_3d", "background_l1", "object_l1")}
  valid = {k: [] for k in ("first_frame", "track", "background", "valid_all")}
  for video in videos:
    per["first_frame_l1"].append(first_frame_l1(video, example))
    per["track_error_px"].append(track_error_px(video, example))
    per["camera_background_error"].append(camera_background_error(video, example))
    per["consistency_3d"].append(_consistency_score(video, pairs))
    per["background_l1"].append(background_l1(video, example))
    per["object_l1"].append(object_l1(video, example))
    for k, v in validity(video, example, thresholds, track_floor=floor).items():
      valid[k].append(v)
  out = {m: _nanmean(v) for m, v in per.items()}
  out.update({("valid_" + k if k != "valid_all" else k): float(np.mean(v))
              for k, v in valid.items()})
  out["diversity"] = diversity(videos, example)
  out["diversity_everywhere"] = diversity_everywhere(videos)
  out["unsimulated_diversity"] = unsimulated_diversity(videos, example)
  out.update(unsimulated_metrics(videos, example, absent_video))
  out["track_error_floor_px"] = float(floor)
  out["consistency_3d_floor"] = _consistency_score(np.asarray(example.video), pairs)
  out["num_particles"] = float(videos.shape[0])
  return out
