"""The restricted route for pre-1.6 torch files that pickle module classes (the 2019 BigGAN-PyTorch releases'
state_dict.pth): it reads them, and holds a crafted file to torch's weights-only rules (no global outside the
allowlist, no state set on a class or function, no opcode torch.save never writes)."""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import pytest
import torch

from ganforge.safe_load import load_weights_only


class Inert:
    """A caller's stand-in for torch.nn.ReLU."""


STAND_IN = [(Inert, "torch.nn.modules.activation.ReLU")]


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


# ('module', ReLU, None, None), then dropped: torch's weights-only reader refuses the file here, so the rest of the
# pickle is read by the restricted route
MODULE_ID = b"(" + _text("module") + b"ctorch.nn.modules.activation\nReLU\nNNtQ0"


def legacy_file(path: Path, main: bytes) -> Path:
    """A pre-1.6 torch file (its magic number, protocol and system records) whose main pickle is `main`."""
    header = io.BytesIO()
    torch.save({}, header, _use_new_zipfile_serialization=False)
    header.seek(0)
    for _ in range(3):
        pickle.load(header)
    path.write_bytes(header.getvalue()[:header.tell()] + main + pickle.dumps([], protocol=2))
    return path


def test_a_module_class_by_persistent_id_reads_as_the_stand_in(tmp_path: Path) -> None:
    # {"act": ReLU.__new__(ReLU) with state {"inplace": False}}
    main = b"}(" + _text("act") + b"ctorch.nn.modules.activation\nReLU\n)\x81}" + _text("inplace") + b"\x89sbu."
    loaded = load_weights_only(legacy_file(tmp_path / "ok.pth", b"\x80\x02" + MODULE_ID + main), what="x",
                               allowed=STAND_IN)
    assert isinstance(loaded["act"], Inert) and loaded["act"].inplace is False


@pytest.mark.parametrize(("name", "main", "refusal"), [
    ("a call", MODULE_ID + b"cposix\nsystem\n(" + _text("touch MARKER") + b"tR.", "GLOBAL posix.system"),
    ("state on a stdlib class", MODULE_ID + b"ccollections\nCounter\n(N}" + _text("most_common")
     + b"ctorch.serialization\n_get_layout\nstb0}.", "BUILD: setting the state of <class 'collections.Counter'>"),
    ("state on a function", MODULE_ID + b"ctorch.serialization\n_get_layout\n(}" + _text("cache") + b"}"
     + _text("torch.sparse_coo") + b"ctorch\nfloat16\nssNtb0}.", "BUILD: setting the state of <function"),
    ("state on the stand-in class", MODULE_ID + b"ctorch.nn.modules.activation\nReLU\n(N}" + _text("__init__")
     + b"cbuiltins\nset\nstb0}.", "BUILD: setting the state of <class"),
    ("INST", MODULE_ID + b"(itorch.nn.modules.activation\nReLU\n.", "an opcode torch.save does not write"),
    ("a module id that is no class", b"(" + _text("module") + _text("os.system") + b"NNtQ0}.",
     "a module class that is not allowed"),
])
def test_a_crafted_file_is_refused_and_changes_nothing(tmp_path: Path, name: str, main: bytes, refusal: str,
                                                       monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = legacy_file(tmp_path / "crafted.pth", b"\x80\x02" + main)
    with pytest.raises(ValueError, match=f"crafted.pth: refused to load as x .*{refusal}"):
        load_weights_only(path, what="x", allowed=STAND_IN)
    assert not (tmp_path / "MARKER").exists()
    assert collections.Counter.most_common.__qualname__ == "Counter.most_common"
    assert torch.serialization._get_layout.cache == {} and Inert.__init__ is object.__init__


class _WritesAsIs:
    """A pickle module for torch.save whose pickler writes the given bytes as the zip's data.pkl."""

    payload = b""

    def __init__(self, file: io.BufferedIOBase, protocol: int = 2) -> None:
        self.file = file

    def dump(self, obj: object) -> None:
        self.file.write(self.payload)


def test_a_zip_with_a_trailing_end_record_is_not_taken_for_a_legacy_file(tmp_path: Path) -> None:
    """zipfile.is_zipfile reads the last end-of-archive record, torch the first bytes: a zip given a cut trailing
    record (torch still reads it) looked legacy and took the restricted route; it is torch's reader's to refuse."""
    import types

    _WritesAsIs.payload = b"\x80\x02" + MODULE_ID + b"}."
    path = tmp_path / "zipped.pth"
    torch.save({}, path, pickle_module=types.SimpleNamespace(Pickler=_WritesAsIs, __name__="as_is"))
    path.write_bytes(path.read_bytes() + b"PK\x05\x06\x00\x00")
    with pytest.raises(ValueError, match="zipped.pth: refused to load as x"):
        load_weights_only(path, what="x", allowed=STAND_IN)
