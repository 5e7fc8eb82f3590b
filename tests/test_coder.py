"""The coder: the pipeline's stages in order, heard by a hook, and the same bytes and labels
as the public API, for a shipped model and for a torch network's."""
import numpy as np
import torch

import segcodec
from segcodec import api, container, zoo
from segcodec.coder import ENCODE_STAGES, SEGMENT_STAGES, Coder

from conftest import hippo_volume, isic_image


def _hooked(model):
    heard = []
    return Coder.of(model, hook=lambda stage, seconds: heard.append((stage, seconds))), heard


def test_the_hook_hears_every_stage_of_encode_and_segment_in_order():
    image, affine = hippo_volume(0)
    p = api.prepare(image, affine=affine)
    coder, heard = _hooked(p.model)
    data = api.encode_prepared(p, coder=coder)
    assert [stage for stage, _ in heard] == list(ENCODE_STAGES)
    assert all(seconds >= 0 for _, seconds in heard)
    assert data == segcodec.encode(image, affine=affine)

    heard.clear()
    header, payload = container.read(data)
    decoded = api.Decoded(header, coder.read_latents(header, payload), p.model)
    labels = api.labels_of([decoded], "cpu", coder)[0]
    assert [stage for stage, _ in heard] == list(SEGMENT_STAGES)
    assert np.array_equal(labels, segcodec.segment(data, device="cpu"))


def test_a_coder_alone_writes_what_encode_writes():
    rgb = isic_image(1)
    p = api.prepare(rgb, force=True)
    ours = Coder.of(p.model).encode(p.array, shape=p.shape, channels=p.channels)
    assert ours == segcodec.encode(rgb, force=True)
    # Its labels, for a batch of two files: each as segment gives it alone.
    decoded = [segcodec.decode(ours), segcodec.decode(segcodec.encode(isic_image(2)))]
    both = api.labels_of(decoded, "cpu")
    assert all(np.array_equal(b, api.labels_of([d], "cpu")[0]) for b, d in zip(both, decoded))


def test_a_torch_networks_batched_latents_are_its_latents_one_at_a_time():
    m = zoo.find("isic-lesion-v4")
    coder = Coder.of_network(m.net, m.manifest.normalisation,
                             m.manifest.architecture.to_json())
    x = np.stack([coder.grid(np.moveaxis(isic_image(i), -1, 0)) for i in range(3)])
    batched = list(coder.batch_latents(torch.from_numpy(x).float(), batch=2))
    one_by_one = [coder.latents(xi) for xi in x]
    assert len(batched) == 3
    assert all(np.array_equal(a, b) for a, b in zip(batched, one_by_one))
    assert all(z.shape == m.latent_shape and set(np.unique(z)) <= {0, 1} for z in batched)
