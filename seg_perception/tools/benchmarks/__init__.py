"""Benchmarks of the nodes around their models, each printing ratios measured side by side in one run.

    python -m seg_perception.tools.benchmarks latency      # node end to end vs its backend call
    python -m seg_perception.tools.benchmarks conversion   # camera message -> RGB, ms per megapixel
    python -m seg_perception.tools.benchmarks postprocess  # Mask R-CNN: paste + crop + message vs the model
    python -m seg_perception.tools.benchmarks cameras      # N cameras: one node vs N single-camera nodes
    python -m seg_perception.tools.benchmarks fleet --source ../shared/data/camvid_seq05vd   # Ray: 1 vs 2 workers
    python -m seg_perception.tools.benchmarks versus semantic|instance   # our node vs a plain callback node

``python -m seg_perception.tools.benchmarks NAME --help`` explains each one and its flags.
"""
