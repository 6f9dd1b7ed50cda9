"""LM-EEC ego-exo correspondence, free of ROS: model, memory, streaming tracker, data, metrics."""

__version__ = "0.1.0"
