"""One model's coding pipeline, written once, as named stages.

Encoding: ``grid`` (the manifest's normalisation and the resampling to the working grid),
``latents`` (C, then the threshold), ``write`` (entropy coding, then the container).
Segmenting: ``read_latents`` (entropy decoding of a read container), ``labels`` (g, s, then
class logits to labels at the input's shape).  ``api`` adds the checks around them (the
input's format and domain, the file's model and geometry); the bench's Auto/Seg peer and
stage timings and export's table fitting call the same stages, so nothing they measure or
fit can drift from what ships.  ``hook(stage, seconds)``, where given, hears each stage's
time.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from . import bits, container, entropy, inputs
from .container import Header

ANONYMOUS = bytes(container.MODEL_ID_BYTES)  # the model id of a coder with no model file

ENCODE_STAGES = ("grid", "C", "threshold", "entropy coding", "container")
SEGMENT_STAGES = ("entropy decoding", "g", "s", "labels")


@dataclass(frozen=True)
class Coder:
    """The stages of one model.  ``compressor`` maps a working-grid image (C, *work_shape) to
    latent logits (K, *latent grid) as numpy (``compressor.Compressor``, or a torch C through
    ``of_network``); ``net``, where segmenting is wanted, gives the torch network (g and s)
    on a device."""
    ndim: int
    normalisation: dict
    work_shape: tuple[int, ...]
    table: np.ndarray
    compressor: Callable
    model_id: bytes = ANONYMOUS
    net: Callable | None = None
    hook: Callable[[str, float], None] | None = None

    @classmethod
    def of(cls, model, hook=None) -> Coder:
        """A shipped or installed model's coder (``zoo.Model``): numpy's C, so encoding needs
        no torch."""
        return cls(model.ndim, model.manifest.normalisation,
                   model.manifest.architecture.work_shape, model.table,
                   model.compressor, model.model_id, model.net_on, hook)

    @classmethod
    def of_network(cls, net, normalisation: dict, arch: dict, table=None, hook=None) -> Coder:
        """A torch network's coder (a training run's; the bench's Auto/Seg): its C in torch,
        ``table`` None until ``entropy.fit_table`` has one for it."""
        import torch

        def compressor(x, features=None):
            x = torch.as_tensor(x, dtype=torch.float32)
            one = x.ndim == arch["ndim"] + 1  # one image, not a batch
            with torch.no_grad():
                logits = net.compressor(x[None] if one else x, features).numpy()
            return logits[0] if one else logits
        return cls(arch["ndim"], normalisation, tuple(arch["work_shape"]), table, compressor,
                   hook=hook, net=lambda device: net.to(device))

    def _stage(self, name: str, fn, *args):
        if self.hook is None:
            return fn(*args)
        start = time.perf_counter()
        out = fn(*args)
        self.hook(name, time.perf_counter() - start)
        return out

    # Encoding

    def grid(self, image: np.ndarray) -> np.ndarray:
        """A channels-first image as C takes it: (C, *work_shape), float64."""
        return self._stage("grid", inputs.working_grid, image, self.normalisation,
                           self.work_shape)

    def latents(self, x: np.ndarray, activations: list | None = None) -> np.ndarray:
        """C and the threshold: binary latents (uint8, (K, *latent grid)) of one working-grid
        image; ``activations``, when given, collects C's hidden ones (the appearance check's
        input)."""
        logits = self._stage("C", self.compressor, x, activations)
        return self._stage("threshold", bits.threshold, logits)

    def batch_latents(self, x, batch: int = 32) -> Iterator[np.ndarray]:
        """The binary latents of many working-grid images (N, C, *work_shape) of a torch C,
        ``batch`` at a time (fitting a table, exporting a model)."""
        for i in range(0, len(x), batch):
            for logits in self._stage("C", self.compressor, x[i:i + batch]):
                yield self._stage("threshold", bits.threshold, logits)

    def write(self, z: np.ndarray, **header) -> bytes:
        """Entropy coding and the container: a ``.sgc`` file of latents ``z``; ``header``:
        ``container.Header``'s fields but the model id and latent shape."""
        payload = self._stage("entropy coding", entropy.encode, z, self.table, self.ndim)
        return self._stage("container", container.write,
                           Header(self.model_id, latent_shape=tuple(z.shape), **header), payload)

    def encode(self, image: np.ndarray, **header) -> bytes:
        """``grid``, ``latents`` and ``write`` of a channels-first image."""
        return self.write(self.latents(self.grid(image)), **header)

    # Segmenting

    def read_latents(self, header: Header, payload: bytes) -> np.ndarray:
        """The binary latents of a read (and checked) container's payload."""
        return self._stage("entropy decoding", entropy.decode, payload, self.table,
                           header.latent_shape, self.ndim)

    def labels(self, latents: list[np.ndarray], shapes: list, device) -> list[np.ndarray]:
        """g and s on the latents of many files as one batch, then each file's labels at its
        shape in the model's voxel order (uint8)."""
        import torch

        from .transforms import labels_from_logits
        net = self.net(device)
        with torch.no_grad():
            z = torch.from_numpy(np.stack(latents).astype(np.float32)).to(device)
            feature = self._stage("g", net.reconstructor, z)
            logits = self._stage("s", net.segmentor, feature)
        return [self._stage("labels", labels_from_logits, logits[i:i + 1], shape)
                for i, shape in enumerate(shapes)]
