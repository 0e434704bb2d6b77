"""clnscl: coupled CL/NSCL training under shared randomness, and alignment metrics.

Pure PyTorch; imports neither Ray nor MLflow. Submodules are imported on use so that
`import clnscl.records` (metric names) stays torch-free.
"""

__version__ = "0.1.0"
