"""The driving pipeline: the set of nodes the launch file and ``run_pipeline`` start, and how."""
