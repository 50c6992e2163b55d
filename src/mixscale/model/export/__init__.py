"""Export a trained model to run without mixscale: ONNX and TorchScript.

Both formats hold the whole prediction of one network, not only its layers: the
training's input normalisation, the network (a Noise2Inverse model's mean over its
``splits`` combinations included) and the final units (class probabilities with the
calibrated temperature, or regression outputs in the target's units), so that
onnxruntime or ``torch.jit.load`` on a beamline computer give what ``mixscale
predict`` gives. ``raw=True`` exports the network alone (normalised input -> logits),
for tools that apply their own pre- and postprocessing (the BioImage Model Zoo).

Input ``(N, in_channels, *spatial)`` float32 in the units of the training images; a
2.5D model takes ``2k + 1`` consecutive slices as channels (channel-major, as in
training). Output ``(N, K, *spatial)``. The batch and spatial sizes are dynamic
(a network with a fixed input shape, the autoencoder and the patch classifier, needs
``static=True``).
"""

from .graph import ExportedModel, export_model, exported_metadata

__all__ = ["ExportedModel", "export_model", "exported_metadata"]
