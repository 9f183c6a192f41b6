"""kdgrid: a knowledge-distillation experiment grid, from data to the paper's statistics."""

__version__ = "0.1.0"
