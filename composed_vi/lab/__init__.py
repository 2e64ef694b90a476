"""The experiment layer: launcher, checkpoints, problems, studies, evaluation, media."""
