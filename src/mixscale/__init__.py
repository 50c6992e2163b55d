"""mixscale: deep learning for scientific images.

Mixed-scale dense networks (MS-D), U-Nets, training from few and sparse labels,
and prediction on images far larger than memory.
"""

__version__ = "0.1.0"
