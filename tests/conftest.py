"""Shared fixtures: a small 2-D product of Gaussian mixtures with four modes at (+-1, +-1)."""

import jax
import pytest

from composed_vi import compose, experts, gmm


def make_mixtures():
  """Two 2-D mixtures whose product has four equally weighted modes at (+-1, +-1)."""
  a = experts.GaussianMixture([[2.0, 0.0], [-2.0, 0.0]], [0.5, 0.5])
  b = experts.GaussianMixture([[0.0, 2.0], [0.0, -2.0]], [0.5, 0.5])
  return a, b


@pytest.fixture
def mixtures():
  return make_mixtures()


@pytest.fixture
def product_target(mixtures):
  """The composed target ``a * b`` (unit scalar weights)."""
  return compose(mixtures)


@pytest.fixture
def exact_product(mixtures):
  """The exact product mixture (four components, std 1/sqrt(8))."""
  return jax.jit(gmm.product)(*mixtures)
