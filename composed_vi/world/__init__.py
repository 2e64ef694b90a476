"""The built-in procedural 4D world: scenes, physics, a ray caster and the controls.

    from composed_vi import world
    example = world.render_example(jax.random.key(0), world.SceneConfig())
    world.caption(example)   # "a red ball bounces, camera pans left"

``scene`` samples scenes and simulates them, ``render`` ray-casts them, ``controls`` derives the
controls (first frame, Pluecker rays, simulation render, caption, 3D-cache context) and
``dataset`` assembles examples (:class:`~composed_vi.world.dataset.Example`, a NamedTuple
with shapes in its docstring).
"""

from composed_vi.world import controls, dataset, render, scene
from composed_vi.world.controls import CAPTION_LENGTH, VOCAB, caption, detokenize, tokenize
from composed_vi.world.dataset import Example, batch, example_from_scene, render_example, to_numpy
from composed_vi.world.scene import (
    CAMERA_KINDS,
    COLOUR_NAMES,
    MOTION_KINDS,
    SHAPE_NAMES,
    TEXTURE_NAMES,
    Scene,
    SceneConfig,
    sample_scene,
)

__all__ = [
    "CAMERA_KINDS", "CAPTION_LENGTH", "Example", "COLOUR_NAMES", "MOTION_KINDS", "SHAPE_NAMES",
    "TEXTURE_NAMES", "VOCAB", "Scene", "SceneConfig", "batch", "caption", "controls", "dataset",
    "detokenize", "example_from_scene", "render", "render_example", "sample_scene", "scene",
    "to_numpy", "tokenize",
]
