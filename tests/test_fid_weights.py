"""Where the FID Inception weights come from: explicit file, env, torch hub cache, download
(from a local HTTP server), and the labelled stand-in when there are none."""

from __future__ import annotations

import hashlib

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.metrics import weights
from pipeline.metrics.inception import InceptionV3, build, load_weights, standin_state_dict
from tests.http_fixtures import FileServer


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def standin_file(tmp_path_factory):
    """The stand-in's weights saved as a weights file: right keys, a non-standard hash."""
    path = tmp_path_factory.mktemp("weights") / "inception-converted.pth"
    torch.save(standin_state_dict(), path)
    return path


def test_offline_without_weights_uses_the_labelled_standin():
    said = []
    backbone = weights.resolve(say=said.append)
    assert backbone.standin and backbone.path is None
    assert "STAND-IN" in said[-1] and "fid_standin" in said[-1]
    assert "NOT comparable" in backbone.describe()


def test_a_named_file_that_is_missing_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(PipelineError, match="FID weights not found: .*nope.pth .*--fid-weights"):
        weights.resolve(tmp_path / "nope.pth")
    monkeypatch.setenv("PIPELINE_FID_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(PipelineError, match="PIPELINE_FID_WEIGHTS"):
        weights.resolve()


def test_a_file_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(PipelineError, match=f"is not the FID Inception weights.*{weights.SHA256}"):
        weights.resolve(fake)
    # The same file found in the torch hub cache is refused the same way.
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    fake.replace(hub / weights.FILE)
    with pytest.raises(PipelineError, match="6726825d"):
        weights.resolve()


def test_a_converted_copy_loads_when_its_hash_is_declared(standin_file, monkeypatch):
    monkeypatch.setenv("PIPELINE_FID_SHA256", sha(standin_file))
    backbone = weights.resolve(standin_file)
    assert backbone.kind == "inception" and backbone.sha256 == sha(standin_file)
    net = build(backbone, (64,))
    reference = InceptionV3((64,))
    load_weights(reference, standin_state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(net(x)[0], reference.eval()(x)[0], rtol=0, atol=0)


def test_wrong_keys_are_a_clear_error(tmp_path, monkeypatch):
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, other)
    monkeypatch.setenv("PIPELINE_FID_SHA256", sha(other))
    backbone = weights.resolve(other)
    with pytest.raises(PipelineError, match="does not hold pytorch-fid's Inception weights"):
        build(backbone, (2048,))
    pickled = tmp_path / "pickle.pth"
    pickled.write_bytes(b"\x80\x04not a torch file")
    monkeypatch.setenv("PIPELINE_FID_SHA256", sha(pickled).upper())  # as some tools print it
    with pytest.raises(PipelineError, match="not a torch weights file"):
        build(weights.resolve(pickled), (64,))


def test_download_into_the_hub_cache_checks_the_full_hash(tmp_path, monkeypatch):
    """A download is kept only when its whole sha256 is the standard one or the declared one:
    the hash prefix in its name (torch hub's convention) vouches for nothing."""
    served = tmp_path / "served"
    served.mkdir()
    payload = b"weights bytes " * 1000
    digest = hashlib.sha256(payload).hexdigest()
    good = served / f"pt_inception-test-{digest[:8]}.pth"
    good.write_bytes(payload)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    with FileServer(served) as server:
        monkeypatch.setenv("PIPELINE_FID_URL", f"{server.url}/{good.name}")
        with pytest.raises(PipelineError, match=f"downloaded .*{digest[:8]}") as refused:
            weights.resolve()  # was kept: its name carries its hash's first 8 digits
        assert f"expected {weights.SHA256}" in str(refused.value)
        assert not hub.exists() or not any(hub.iterdir())  # nothing wrong left in the cache

        monkeypatch.setenv("PIPELINE_FID_SHA256", digest)
        backbone = weights.resolve()
    assert backbone.kind == "inception" and backbone.sha256 == digest
    assert sorted(p.name for p in hub.iterdir()) == [good.name]


def test_eight_matching_hex_digits_are_not_the_weights(tmp_path, monkeypatch):
    """A file whose sha256 starts like the standard file's (32 bits, found by brute force) but
    is another file: refused, named with both hashes. It was accepted on its first 8 digits."""
    impostor = tmp_path / weights.FILE
    impostor.write_bytes(b"crafted to share the first 32 bits of the hash")
    lookalike = "6726825d" + "0" * 56
    monkeypatch.setattr(weights, "sha256", lambda file: lookalike)
    with pytest.raises(PipelineError, match="is not the FID Inception weights") as refused:
        weights.resolve(impostor)
    assert f"its sha256 is {lookalike}, expected {weights.SHA256}" in str(refused.value)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    impostor.replace(hub / weights.FILE)
    with pytest.raises(PipelineError, match="is not the FID Inception weights"):
        weights.resolve()
    with pytest.raises(PipelineError, match="is not the FID Inception weights"):
        weights.backbone_for(str(hub / weights.FILE))  # what a worker checks


@pytest.mark.parametrize("declared", ["first 16", "6726825d", "not hex", "one too many"])
def test_a_declared_hash_must_be_all_64_hex_digits(declared, standin_file, monkeypatch, tmp_path):
    """PIPELINE_FID_SHA256 is the whole sha256 or nothing: a prefix was accepted (8 hex digits
    can be matched by brute force). Refused in one line before any file is read or fetched."""
    digest = sha(standin_file)
    value = {"first 16": digest[:16], "not hex": "z" * 64, "one too many": digest + "0"}.get(
        declared, declared
    )
    monkeypatch.setenv("PIPELINE_FID_SHA256", value)
    with pytest.raises(PipelineError, match="is not a full sha256: give all 64 hex digits") as e:
        weights.resolve(standin_file)
    assert "\n" not in str(e.value)
    with FileServer(tmp_path) as server:
        monkeypatch.setenv("PIPELINE_FID_URL", f"{server.url}/{weights.FILE}")
        with pytest.raises(PipelineError, match="is not a full sha256"):
            weights.resolve()
        assert server.requests == []


def test_an_unreachable_server_falls_back_to_the_standin(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PIPELINE_FID_URL", f"http://127.0.0.1:{port}/{weights.FILE}")
    said = []
    backbone = weights.resolve(say=said.append)
    assert backbone.standin
    assert any("cannot reach" in line for line in said)
