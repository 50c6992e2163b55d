"""mixscale's napari plugin (the ``napari`` extra): scribble, train, watch, correct, apply.

Contributions (``napari.yaml``): the dock widgets "Train & predict" and "Apply to volume", a reader
for mixscale's block-wise prediction stores and model files, and sample data made on the fly.
Importing this package imports neither napari nor Qt; the widgets' modules do.
"""
