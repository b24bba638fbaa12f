"""dnn_search: distributed search for meta-learned diverse activation functions."""

__version__ = "0.1.0"
