"""Each tiny world backbone alone against ground truth (composed_vi.lab.backbone_study).

  python -m experiments.evaluate_backbones --workdir=workdir/backbones
"""

from absl import flags

from composed_vi.lab import backbone_study, cli

_WORKDIR = flags.DEFINE_string("workdir", "workdir/backbones", "Output folder.")
_ROOT = flags.DEFINE_string("backbones", "assets/backbones", "Folder of trained backbones.")
_KINDS = flags.DEFINE_list("kinds", ["t2v", "i2v", "sim2v", "cam2v"], "Backbones to evaluate.")
_SCENES = flags.DEFINE_integer("num_scenes", 8, "Held-out scenes.")
_LEVELS = flags.DEFINE_integer("num_levels", 24, "ODE levels per sample.")


def main(argv):
  del argv
  table = backbone_study.run({k: f"{_ROOT.value}/{k}" for k in _KINDS.value},
                             num_scenes=_SCENES.value, num_levels=_LEVELS.value)
  backbone_study.write(_WORKDIR.value, table)
  print(backbone_study.markdown(table))


if __name__ == "__main__":
  cli.run(main)
