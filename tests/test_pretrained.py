"""The lens-pretrained backbone shipped with lensclf (weights="lens" / "auto")."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REAL_SAMPLE, make_ring_images
from lensclf import LensClassifier, load_lens_dir
from lensclf._models import LENS_WEIGHTS_FILE, LensNet, build_backbone, resolve_weights

FAST = dict(max_epochs=1, batch_size=8, verbose=0, random_state=0, device="cpu")


def test_the_shipped_file_is_a_float16_resnet18_with_a_one_logit_head():
    state = load_file(LENS_WEIGHTS_FILE)
    assert state["conv1.weight"].shape == (64, 3, 7, 7) and state["fc.weight"].shape == (1, 512)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    backbone = build_backbone(weights="lens")
    for name, value in backbone.state_dict().items():  # every tensor, the head included, comes from the file
        torch.testing.assert_close(value, state[name].to(value.dtype), rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("bands", [1, 4, 5])
def test_other_band_counts_average_the_first_filters(bands):
    state = load_file(LENS_WEIGHTS_FILE)
    backbone = build_backbone(weights="lens", in_channels=bands)
    expected = state["conv1.weight"].float().mean(dim=1, keepdim=True).repeat(1, bands, 1, 1) * 3.0 / bands
    torch.testing.assert_close(backbone.conv1.weight, expected)
    torch.testing.assert_close(backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"].float())
    # a grey cutout gives the same logit whatever the band count (the filters sum to the same response)
    grey = torch.rand(2, 1, 64, 64)
    three = LensNet(weights="lens", scaling="image").eval()
    many = LensNet(weights="lens", in_channels=bands, scaling="image").eval()
    with torch.inference_mode():
        torch.testing.assert_close(many(grey.repeat(1, bands, 1, 1)), three(grey.repeat(1, 3, 1, 1)),
                                   rtol=1e-4, atol=1e-4)


def test_lens_weights_need_the_architecture_they_were_trained_as():
    with pytest.raises(ValueError, match="ResNet18 with the standard stem"):
        build_backbone(arch="resnet34", weights="lens")
    with pytest.raises(ValueError, match="standard stem"):
        build_backbone(stem="small", weights="lens")
    assert resolve_weights("auto", "resnet18", "standard") == "lens"
    assert resolve_weights("auto", "resnet34", "standard") is None
    assert resolve_weights("auto", "resnet18", "small") is None
    assert resolve_weights(None, "resnet18", "standard") is None


def test_fine_tuning_from_lens_weights_uses_robust_per_image_scaling_and_takes_101_px():
    X, y = make_ring_images(40, size=101, seed=2, channels=4)
    clf = LensClassifier(weights="lens", **FAST).fit(X, y)
    assert clf.net_.module_.scaling == "robust"  # scaling="auto" follows the weights
    scores = clf.predict_proba(X)[:, 1]
    assert scores.shape == (40,) and np.isfinite(scores).all()


def test_real_test2_cutouts_fine_tune_from_the_lens_weights():
    # The 40 real DeepLense Test II files: too few for a metric, enough to catch a default that breaks
    # on real pixels (e.g. a degenerate band): the scores are finite and not all equal.
    X, y = load_lens_dir(REAL_SAMPLE, "train")
    X_test, _ = load_lens_dir(REAL_SAMPLE, "test")
    clf = LensClassifier(weights="lens", valid_size=None, **FAST).fit(X, y)
    scores = clf.predict_proba(X_test)[:, 1]
    assert np.isfinite(scores).all() and np.ptp(scores) > 0


def test_pretraining_exports_the_chosen_weights_with_honest_metadata(tmp_path):
    # benchmarks/pretrain.py writes the shipped file: export a checkpoint of its own model and moving average
    import importlib.util
    import json
    from pathlib import Path

    from safetensors import safe_open

    spec = importlib.util.spec_from_file_location(
        "pretrain", Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain.py")
    pretrain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain)
    model, ema = pretrain.build(seed=0, scaling="robust")
    with torch.no_grad():
        ema.module.backbone.fc.bias.fill_(0.5)  # the average differs from the trained weights
    args = {"batch_size": 128, "scaling": "robust", "export": None, "export_weights": "live"}
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "step": 3, "args": args},
               tmp_path / "checkpoint.pt")
    for which, bias in (("ema", 0.5), ("live", float(model.backbone.fc.bias))):
        path = tmp_path / f"{which}.safetensors"
        pretrain.export(str(tmp_path), str(path), which)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            assert f.get_tensor("fc.bias").dtype == torch.float16
            assert float(f.get_tensor("fc.bias")) == pytest.approx(bias, abs=1e-3)
        assert meta["weights"] == which and meta["images_seen"] == "384" and meta["scaling"] == "robust"
        assert json.loads(meta["args"]) == {"batch_size": 128, "scaling": "robust"}  # no stale export options
        backbone = build_backbone(weights=str(path))
        assert float(backbone.fc.bias) == pytest.approx(bias, abs=1e-3)


def test_pretraining_stream_is_the_same_for_any_number_of_simulator_processes(monkeypatch):
    # benchmarks/pretrain.py resumes at a shard index, so the stream must be in index order whatever
    # --producers is (phase 8 ran with 14 simulator processes, phases 1-7 with one)
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    pretrain = importlib.import_module("pretrain")
    stream = list(pretrain.shard_stream(5, 8, seed=3, ranges="base", producers=2))
    assert [index for index, _, _ in stream] == [5, 6, 7]
    for index, X, y in stream:
        X_direct, y_direct = pretrain.make_shard(index, 3, "base")
        np.testing.assert_array_equal(X, X_direct)
        np.testing.assert_array_equal(y, y_direct)
    assert not np.array_equal(stream[0][1], stream[1][1])
