"""seg_perception: ROS 2 nodes that run seg_models' networks on camera images.

Nodes stay thin: message <-> array conversion, parameters and publishing live here; everything
about networks lives in ``seg_models``. The subpackages, in the order a camera frame meets them:

* ``nodes``: the executables (semantic and instance node, camera stand-in, example listener);
* ``runtime``: what every node runs on (camera input, newest-frame slot, statistics,
  diagnostics, throttled logging, parameter tables, the executables' main);
* ``messages``: topic names and QoS, and conversions between messages and arrays;
* ``bringup``: the driving pipeline (the set of nodes launch and ``run_pipeline`` start);
* ``tools``: benchmarks;
* ``evaluation``: ``seg_bag``, datasets to bags, replay, metrics, report.
"""

import os

# The nodes' NumPy matrix products are small (masks assembled inside boxes); OpenBLAS's worker
# threads would spin after each and take cores from the model's runtime (ONNX Runtime, PyTorch):
# the same ONNX Runtime call took 81 ms in the instance node against 62 ms with one BLAS thread
# (docs/benchmarks.md, versus yolo). One BLAS thread, unless the user set it; NumPy reads it when
# first imported, which in the executables is after this.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
