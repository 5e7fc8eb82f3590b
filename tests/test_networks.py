"""The networks: inference convolutions, a g that stops short of the working grid, and a C
whose first convolution is strided."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcodec import architecture, zoo
from segcodec.errors import SgcError
from segcodec.networks import Conv3d, Reconstructor, SegCodecNet


@pytest.mark.parametrize("cin", [1, 8, 16])
def test_inference_convolution_agrees_with_pytorch_and_training_keeps_its_graph(cin):
    torch.manual_seed(0)
    conv = Conv3d(cin, 8, 3, padding=1)
    x = torch.randn(1, cin, 16, 24, 16)
    with torch.no_grad(), torch.profiler.profile() as prof:
        ours = conv(x)
    theirs = F.conv3d(x, conv.weight, conv.bias, padding=1)
    assert torch.allclose(ours, theirs, atol=1e-5)
    if torch.backends.mkldnn.is_available():  # what PyTorch would not pick for cin < 13 here
        assert "aten::mkldnn_convolution" in {e.name for e in prof.events()}
    assert conv(x).grad_fn is not None  # with gradients, PyTorch's own dispatch and backward
    conv(x).sum().backward()
    assert conv.weight.grad is not None


ARCH = {"ndim": 3, "in_channels": 1, "latent_channels": 2, "c_widths": [4, 8, 8],
        "g_widths": [8, 4], "s_widths": [4, 8], "n_classes": 3, "work_shape": [16, 24, 16]}


def test_a_short_g_interpolates_its_map_to_the_working_grid():
    net = SegCodecNet(ARCH).eval()
    z = torch.randint(0, 2, (1, *net.latent_shape())).float()
    with torch.no_grad():
        feature = net.reconstructor(z)
        coarse = net.reconstructor.out(net.reconstructor.ups[0](F.interpolate(
            net.reconstructor.inp(z), scale_factor=2, mode="trilinear", align_corners=False)))
        assert coarse.shape[2:] == (8, 12, 8)  # one upsampling: half the working grid
        assert feature.shape[2:] == (16, 24, 16)
        assert torch.equal(feature, F.interpolate(coarse, size=(16, 24, 16), mode="trilinear",
                                                  align_corners=False))
        assert net.decode_logits(z).shape == (1, 3, 16, 24, 16)
    # g with as many widths as C ends on the grid, as every earlier model does
    assert Reconstructor(3, 2, [8, 4, 4]).out_shape is None


def test_a_g_that_upsamples_past_the_working_grid_is_refused():
    architecture.filled(ARCH)
    with pytest.raises(SgcError, match="g_widths"):
        architecture.filled({**ARCH, "g_widths": [8, 8, 8, 8]})


def test_a_strided_first_convolution_keeps_c_off_the_full_grid():
    arch = {**ARCH, "c_widths": [8, 8], "c_first_stride": 2}  # the same latent grid as ARCH's C
    architecture.filled(arch)
    net = SegCodecNet(arch).eval()
    assert net.latent_shape() == SegCodecNet(ARCH).latent_shape() == (2, 4, 6, 4)
    x = torch.randn(1, 1, 16, 24, 16)
    grids = []
    with torch.no_grad():
        logits = net.compressor(x, grids)
        assert logits.shape == (1, *net.latent_shape())
        # g_widths [8, 4] upsample once: g stops at half the grid and is interpolated to it
        assert net.reconstructor.out_shape == (16, 24, 16)
        assert net.decode_logits((logits > 0).float()).shape == (1, 3, 16, 24, 16)
    assert [tuple(a.shape[2:]) for a in grids] == [(8, 12, 8), (4, 6, 4), (4, 6, 4)]
    for stride in (3, 0, True, 2.0):
        with pytest.raises(SgcError, match="c_first_stride"):
            architecture.filled({**arch, "c_first_stride": stride})
    architecture.filled({**arch, "g_widths": [8, 8, 8]})  # up 4x: back on the grid
    with pytest.raises(SgcError, match="g_widths"):  # ...which unstrided C's 2x is not
        architecture.filled({**arch, "c_first_stride": 1, "g_widths": [8, 8, 8]})
    with pytest.raises(SgcError, match="work_shape.*multiples of 4"):
        architecture.filled({**arch, "work_shape": [16, 22, 16]})


def test_an_architecture_states_what_its_absent_keys_meant_and_refuses_unknown_ones():
    from segcodec.architecture import OPTIONAL, Architecture
    old = {k: v for k, v in ARCH.items() if k not in OPTIONAL}  # as the v0 models wrote it
    filled = architecture.filled(old)
    assert {k: filled[k] for k in OPTIONAL} == OPTIONAL and SegCodecNet(old).arch == filled
    assert Architecture.from_json(filled).to_json() == filled
    with pytest.raises(SgcError, match="'g_chanels' is unknown"):
        architecture.filled({**ARCH, "g_chanels": 3})
    with pytest.raises(SgcError, match="s_norm"):
        architecture.filled({**ARCH, "s_norm": 1})


def test_export_never_writes_an_architecture_the_loader_refuses(tmp_path):
    manifest = {"name": "bad", "task": "t", "labels": ["a", "b"],
                "normalisation": {"kind": "zscore"},
                "architecture": {**ARCH, "latent_channels": 99}}
    with pytest.raises(SgcError, match="latent_channels"):
        zoo.write_model_file(tmp_path, manifest, {}, np.zeros((1,), np.int32))
    assert not list(tmp_path.iterdir())
