"""Pretrained backbones: the Wan port (:mod:`composed_vi.models.wan`) and its experts."""
