"""Long videos: segments of the backbones' length chained with the previous segment's last
generated frame and the 3D context of the original first frame, on a camera that pans right and
then back left to its start pose.

* :mod:`.path`: the long camera path and its ground truth, and each segment's controls;
* :mod:`.compose`: the composed target of one segment for ``N`` chains, the variants, and the
  chaining of segments;
* :mod:`.metrics`: the background error against the ground truth when the camera returns.

The experiment that runs and summarises them is :mod:`composed_vi.lab.long_video`.
"""
