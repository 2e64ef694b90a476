"""Pretrained backbones as experts of the engine (Wan family: :mod:`composed_vi.backbones.wan`)."""
