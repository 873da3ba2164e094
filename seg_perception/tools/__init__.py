"""Benchmarks of the nodes around their models (``python -m seg_perception.tools.benchmarks``), and the
plain callback node that ``benchmarks versus`` measures ours against (``plain_node``)."""
