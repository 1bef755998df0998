"""Networks: shapes, 1-channel stems, no downloads, torchvision weights, decoder geometry, ONNX export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from xrad.errors import ConfigError
from xrad.models import (
    Autoencoder,
    Encoder,
    MLPHead,
    ResNet18Backbone,
    ResNet18Decoder,
    ResNet50Backbone,
    build_autoencoder,
    build_encoder,
)


@pytest.mark.parametrize("size", [64, 128])
def test_encoder_shapes(size: int) -> None:
    enc = build_encoder().eval()
    with torch.no_grad():
        h, z = enc(torch.rand(3, 1, size, size))
    assert h.shape == (3, 512) and z.shape == (3, 128)
    with torch.no_grad():  # channels_last input gives the same result
        h2, _ = enc(torch.rand(3, 1, size, size).contiguous(memory_format=torch.channels_last))
    assert h2.shape == (3, 512)


def test_backbone_is_one_channel_and_downloads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    b = ResNet18Backbone()
    assert b.conv1.in_channels == 1 and b.conv1.bias is None
    assert (b.conv1.kernel_size, b.conv1.stride, b.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert b.out_dim == 512 and isinstance(b.layer4, torch.nn.Sequential)
    assert not any(k.startswith("fc.") for k in b.state_dict())
    assert b.forward_features(torch.rand(1, 1, 64, 64)).shape == (1, 512, 2, 2)
    b50 = ResNet50Backbone()
    assert b50.out_dim == 2048 and b50.conv1.in_channels == 1
    assert b50.eval()(torch.rand(2, 1, 64, 64)).shape == (2, 2048)


def test_head_layout_and_bias() -> None:
    head = MLPHead((512, 256, 128), bias=False)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 256), (256, 128)]
    assert all(m.bias is None for m in linears)
    assert sum(isinstance(m, torch.nn.ReLU) for m in head.modules()) == 1
    # A bias-free ReLU head maps 0 to 0 (no constant output to collapse onto a centre).
    assert torch.all(head(torch.zeros(2, 512)) == 0)
    assert all(m.bias is not None for m in MLPHead().modules() if isinstance(m, torch.nn.Linear))
    with pytest.raises(ConfigError):
        build_encoder(head_dims=(256, 128))


def test_load_torchvision_weights_round_trip(tmp_path: Path) -> None:
    tv = tvm.resnet18(weights=None, num_classes=1000)
    with torch.no_grad():  # torchvision's init is already random; make BN non-trivial too
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    b = ResNet18Backbone()
    b.load_torchvision_weights(path)
    ref = tv.state_dict()
    torch.testing.assert_close(b.conv1.weight, ref["conv1.weight"].sum(dim=1, keepdim=True))
    for key, value in b.state_dict().items():
        if key != "conv1.weight":
            torch.testing.assert_close(value, ref[key])
    # Functionally: a grey image through the summed stem == the RGB net on the repeated image (minus fc).
    tv.fc = torch.nn.Identity()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(x), tv.eval()(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_load_torchvision_weights_errors(tmp_path: Path) -> None:
    b = ResNet18Backbone()
    with pytest.raises(ConfigError, match="no download is attempted"):
        b.load_torchvision_weights(tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pth"):
        b.load_torchvision_weights(bad)
    r50 = tmp_path / "r50.pth"
    torch.save(tvm.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(ConfigError, match="not a ResNet18Backbone"):
        b.load_torchvision_weights(r50)


@pytest.mark.parametrize("size", [64, 128])
def test_decoder_and_autoencoder_shapes(size: int) -> None:
    ae = build_autoencoder(image_size=size).eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        recon, h, z = ae(x)
    assert recon.shape == x.shape and h.shape == (2, 512) and z.shape == (2, 128)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    dec_h = ResNet18Decoder(in_dim=512, image_size=size)
    assert Autoencoder(build_encoder(), dec_h, decode_from="h").eval()(x)[0].shape == x.shape
    with pytest.raises(ConfigError):
        ResNet18Decoder(image_size=100)


def test_autoencoder_learns_a_batch() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 32, 32, generator=g)  # smallest legal size and a slim decoder: keeps it ~1 s
    ae = build_autoencoder(image_size=32, channels=(64, 32, 16, 16, 8))
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        recon, _, _ = ae(x)
        loss = torch.mean((recon - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (no onnxscript here)
def test_encoder_exports_to_onnx(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    enc: Encoder = build_encoder(bias=False).eval()
    x = torch.rand(2, 1, 64, 64)
    path = tmp_path / "enc.onnx"
    torch.onnx.export(
        enc, (x,), str(path), input_names=["x"], output_names=["h", "z"], dynamic_axes={"x": {0: "batch"}}, dynamo=False
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h, z = sess.run(None, {"x": torch.rand(3, 1, 64, 64).numpy()})
    assert h.shape == (3, 512) and z.shape == (3, 128)
    hx, zx = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want_h, want_z = enc(x)
    torch.testing.assert_close(torch.from_numpy(hx), want_h, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(zx), want_z, rtol=1e-3, atol=1e-4)


def test_recalibrate_batchnorm_is_the_average_of_the_batch_statistics() -> None:
    from xrad.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).eval()
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8) * 2]
    recalibrate_batchnorm(net, batches)
    with torch.no_grad():
        acts = [net[0](x).transpose(0, 1).reshape(3, -1) for x in batches]
    # momentum None = cumulative average of the per-batch statistics (unbiased variance for the running one)
    torch.testing.assert_close(bn.running_mean, torch.stack([a.mean(1) for a in acts]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([a.var(1, unbiased=True) for a in acts]).mean(0))
    assert bn.momentum == 0.1 and not net.training  # momentum and eval mode restored
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())  # no weight touched
