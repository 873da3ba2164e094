"""Rosbag evaluation: datasets to bags, replay through the live nodes, official metrics, a report.

``python -m seg_perception.evaluation`` (console script ``seg_bag``) with the subcommands
``make``, ``replay`` and ``evaluate``; see ``cli.py``.
"""
