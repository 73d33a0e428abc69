"""collapselab: simulate, measure and fend off model collapse in self-consuming generative training."""

__version__ = "0.1.0"
