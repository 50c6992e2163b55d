"""End-to-end workflows through :mod:`mixscale.api`: the demo now; tomography, inpainting, fibres later.

A recipe uses only the public API and real files, exactly as a user's script would.
"""
