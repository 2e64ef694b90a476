"""The rectified-flow noise path and conversions between parameterisations.

Convention (as Wan and diffusers' FlowMatchEuler): ``x_t = (1 - t) x0 + t eps``,
``t in [0, 1]``, ``t = 1`` is pure noise. A velocity is ``v = E[eps - x0 | x_t]``.
"""

from __future__ import annotations

import jax.numpy as jnp


def x0_from_velocity(x, t, v):
  """Posterior mean of the clean sample: ``x0_hat = x - t v``."""
  return x - t * v


def eps_from_velocity(x, t, v):
  """Posterior mean of the noise: ``eps_hat = x + (1 - t) v``."""
  return x + (1.0 - t) * v


def score_from_velocity(x, t, v):
  """Score of the noisy marginal: ``-(x + (1 - t) v) / t`` (finite for ``t > 0``)."""
  return -eps_from_velocity(x, t, v) / t


def velocity_from_score(x, t, score):
  """Inverse of :func:`score_from_velocity`: ``v = -(t score + x) / (1 - t)`` (``t < 1``)."""
  return -(t * score + x) / (1.0 - t)


def velocity_from_x0(x, t, x0):
  """``v = (x - x0) / t`` (``t > 0``): the velocity that predicts ``x0``."""
  return (x - x0) / t


def velocity_from_eps(x, t, eps):
  """``v = (eps - x) / (1 - t)`` (``t < 1``): the velocity that predicts ``eps``."""
  return (eps - x) / (1.0 - t)


def vp_coefficients(t):
  """VP coefficients ``(alpha, sigma)`` with the signal-to-noise ratio of flow level ``t``.

  The flow point ``x_t`` equals ``sqrt((1-t)^2 + t^2)`` times the VP point
  ``alpha x0 + sigma eps`` with ``alpha^2 + sigma^2 = 1`` and ``alpha / sigma = (1-t)/t``.
  """
  norm = jnp.sqrt((1.0 - t) ** 2 + t**2)
  return (1.0 - t) / norm, t / norm, norm


def flow_time_from_vp(alpha, sigma):
  """The flow level ``t`` with the same signal-to-noise ratio as VP ``(alpha, sigma)``."""
  return sigma / (alpha + sigma)


def preconditioning(t, sigma_data: float):
  """EDM-style skip/output scales on the rectified-flow path (Karras et al. 2022, adapted).

  For data of standard deviation ``s`` and ``x_t = (1 - t) x0 + t eps``, with
  ``D = (1 - t)^2 s^2 + t^2``: ``c_skip = (1 - t) s^2 / D`` is the best linear estimate of
  ``x0`` from ``x_t`` and ``c_out = s t / sqrt(D)`` the standard deviation of its residual. A
  network ``F`` then predicts ``x0 = c_skip x_t + c_out F`` with a unit-variance target
  ``(x0 - c_skip x_t) / c_out``: near ``t = 0`` it no longer has to carry ``x_t`` through its
  bottleneck (the sample passes through the skip), near ``t = 1`` it predicts ``x0`` directly.

  Returns ``(c_skip, c_out)``.
  """
  s2 = sigma_data**2
  d = (1.0 - t) ** 2 * s2 + t**2
  return (1.0 - t) * s2 / d, sigma_data * t / jnp.sqrt(d)


def velocity_from_preconditioned(x, t, f, sigma_data: float):
  """``v = (x - x0) / t`` with ``x0 = c_skip x + c_out f``, in a form finite at ``t = 0``.

  ``(1 - c_skip) / t = (t - (1 - t) s^2) / D`` and ``c_out / t = s / sqrt(D)``.
  """
  s2 = sigma_data**2
  d = (1.0 - t) ** 2 * s2 + t**2
  return x * ((t - (1.0 - t) * s2) / d) - f * (sigma_data / jnp.sqrt(d))
