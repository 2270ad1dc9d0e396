"""Pretrained weights from PyTorch-layout state dicts, without unpickling anything.

A state dict is ``{name: array}`` read from ``.safetensors`` (a reader written here with numpy
and json, no dependency) or ``.npz`` (``allow_pickle=False``); ``.pth``/``.pt`` only when torch
is importable, through ``torch.load(path, weights_only=True)``.

A model's import is a *table* of :class:`Entry` rows, one per layer with weights: the torch
name prefix (``"mixed4a_1x1_pre_relu_conv"``), the path in the Flax params tree
(``("mixed4a", "1x1_pre_relu")``) and the layout (``"conv"``: OIHW -> HWIO, ``"linear"``:
``(out, in)`` -> ``(in, out)``). :func:`params_from_state_dict` checks the whole state dict
against the table and the model's own shapes and raises one :class:`WeightsError` listing
every missing key, unexpected key and shape mismatch. A new architecture (ResNet-50, VGG-16)
is a new table.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> write_safetensors(path, {"fc.weight": np.ones((2, 3), np.float32)})
>>> load_state_dict(path)["fc.weight"].shape
(2, 3)
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from fvjax.errors import WeightsError, misfit_parts
from fvjax.models.converted import restore_params

# safetensors dtype names <-> numpy; BF16 has no numpy dtype: read as uint16, widened below.
_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items() if k != "BF16"}
#: The safetensors format caps its JSON header at 100 MB: a larger length is no such file.
_MAX_HEADER = 100_000_000
_ZIP_LOCAL, _ZIP_END = b"PK\x03\x04", b"PK\x05\x06"  # a member's header; the directory's end


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: bfloat16 is the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``.safetensors`` file (BF16 comes back as float32).

    The format: an 8-byte little-endian header length, a JSON header
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (plus an optional
    ``"__metadata__"``), then the raw little-endian bytes, offsets counted from their start.
    A file cut short (an interrupted download or copy) is called truncated, with the size its
    header promises.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise WeightsError(f"{path}: not a safetensors file (shorter than its 8-byte header)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        raise WeightsError(
            f"{path}: not a safetensors file (its first 8 bytes give a header of {n} bytes, "
            f"more than the format's {_MAX_HEADER})"
        )
    if 8 + n > len(data):
        raise _truncated(path, f"expected at least {8 + n} bytes, found {len(data)}")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise WeightsError(f"{path}: unreadable safetensors header: {exc}") from exc
    tensors = {name: info for name, info in header.items() if name != "__metadata__"}
    need = 8 + n + max((info["data_offsets"][1] for info in tensors.values()), default=0)
    if need > len(data):
        raise _truncated(path, f"expected {need} bytes, found {len(data)}")
    body = memoryview(data)[8 + n :]
    out: dict[str, np.ndarray] = {}
    for name, info in tensors.items():
        dtype = info.get("dtype")
        if dtype not in _DTYPES:
            raise WeightsError(
                f"{path}: tensor {name!r} has dtype {dtype!r}; supported: {', '.join(_DTYPES)}"
            )
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        np_dtype = np.dtype(_DTYPES[dtype]).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * np_dtype.itemsize:
            raise WeightsError(
                f"{path}: damaged header: tensor {name!r} spans {end - begin} bytes, but "
                f"{dtype} {shape} needs {count * np_dtype.itemsize}; write the file again"
            )
        array = np.frombuffer(body[begin:end], dtype=np_dtype).reshape(shape)
        array = _bf16_to_f32(array) if dtype == "BF16" else array.astype(np_dtype.newbyteorder("="))
        out[name] = array
    return out


def _truncated(path: str | os.PathLike, sizes: str) -> WeightsError:
    """The error for a weights file cut short; ``sizes`` says by how much (``"expected N bytes,
    found M"``)."""
    return WeightsError(
        f"{path} is truncated: {sizes}; the file was cut short (an interrupted download or "
        "copy?): download or copy it again"
    )


def _zip_cut_short(path: str | os.PathLike) -> WeightsError | None:
    """The error for a zip file (``.npz``, torch's ``.pth``) cut short, or ``None`` when
    ``path`` is no zip file or a whole one.

    A zip file ends with its directory, so a cut one has none. Where the members' local headers
    carry their sizes (numpy's writer; torch's puts them after the data), the walk over them
    gives how many bytes the file needs at least.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> np.savez(path, a=np.zeros(100))
    >>> with open(path, "r+b") as f:
    ...     _ = f.truncate(300)
    >>> print(_zip_cut_short(path))  # doctest: +ELLIPSIS
    /.../w.npz is truncated: expected at least 1056 bytes, found 300; ...
    """
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(_ZIP_END, max(0, len(data) - 22 - 0xFFFF))
    if not data.startswith(_ZIP_LOCAL) or 0 <= end <= len(data) - 22:  # no zip, or a whole one
        return None
    if end >= 0:  # cut inside the record that ends the directory
        return _truncated(path, f"expected at least {end + 22} bytes, found {len(data)}")
    pos, directory = 0, 22  # the end-of-directory record, at least
    while data[pos : pos + 4] == _ZIP_LOCAL and pos + 30 <= len(data):
        flag, size, name_length, extra_length = struct.unpack_from(
            "<2x H 10x I 4x H H", data, pos + 4
        )
        start = pos + 30 + name_length + extra_length  # where the member's data begins
        if start > len(data):  # cut inside this header
            break
        if flag & 8:  # sizes in a descriptor after the data (torch's writer): unknown here
            return _truncated(
                path, f"found {len(data)} bytes and no zip directory (a whole file ends with one)"
            )
        if size == 0xFFFFFFFF:  # zip64: the sizes are in the extra field (id 1)
            size = _zip64_size(data[pos + 30 + name_length : start])
        pos = start + size
        directory += 46 + name_length  # its directory entry, at least
    need = max(pos + directory, len(data) + 1)  # cut inside a member, its header or the directory
    return _truncated(path, f"expected at least {need} bytes, found {len(data)}")


def _zip64_size(extra: bytes) -> int:
    """The compressed size in a local header's zip64 extra field (0 when it has none)."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == 1 and length >= 16 and at + 20 <= len(extra):
            return struct.unpack_from("<Q", extra, at + 12)[0]
        at += 4 + length
    return 0


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``{name: array}`` as ``.safetensors`` (dtypes of :func:`read_safetensors`, no BF16)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(np.asarray(tensors[name]))
        if array.dtype not in _NAMES:
            raise WeightsError(f"cannot write {name!r}: dtype {array.dtype} is not supported")
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": _NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the spec pads the header to 8 bytes with spaces
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in chunks:
            f.write(raw)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` from ``.safetensors``, ``.npz``, or (with torch) ``.pth``/``.pt``.

    Nothing is unpickled: ``.npz`` is read with ``allow_pickle=False`` and torch files with
    ``weights_only=True``.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise WeightsError(f"weights file {path!r} does not exist")
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix == ".npz":
        try:
            # Our own handle: np.load leaves its own open when the zip is unreadable.
            with open(path, "rb") as file, np.load(file, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise _zip_cut_short(path) or WeightsError(
                f"{path}: not an .npz file ({exc}); write one with numpy.savez"
            ) from exc
        except ValueError as exc:
            raise WeightsError(f"{path}: cannot read without unpickling: {exc}") from exc
    if suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError as exc:
            raise WeightsError(
                f"{path}: reading .pth needs torch; convert it to .safetensors or .npz "
                "(e.g. numpy.savez(out, **{k: v.numpy() for k, v in state_dict.items()}))"
            ) from exc
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            said = str(exc).strip().split(". ")[0] or type(exc).__name__  # torch says a lot
            raise _zip_cut_short(path) or WeightsError(
                f"{path}: torch cannot read it ({said}); save the state dict again"
            ) from exc
        if not isinstance(state, Mapping):
            raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
        return {name: value.detach().float().numpy() for name, value in state.items()}
    raise WeightsError(f"{path}: unknown weights format {suffix!r}; use .safetensors, .npz or .pth")


class Entry(NamedTuple):
    """One layer of an import table: torch name prefix, Flax params path, layout.

    ``kind``: ``"conv"`` (OIHW weight -> HWIO ``kernel``, optional ``bias``), ``"linear"``
    (``(out, in)`` weight -> ``(in, out)`` ``kernel``, optional ``bias``), ``"batchnorm"``
    (``weight, bias, running_mean, running_var`` -> ``scale, bias, mean, var``; torch's
    ``num_batches_tracked`` counter is accepted and ignored), ``"layernorm"`` (``weight, bias``
    -> ``scale, bias``), ``"in_proj"`` (``nn.MultiheadAttention``'s packed query, key and value
    projection ``in_proj_weight, in_proj_bias`` -> a linear ``kernel, bias``) or ``"param"``
    (one tensor, the torch key ``torch_name`` itself, stored as is at ``flax_path``). Whether a
    conv or linear layer has a bias is read from the model's own params tree.
    """

    torch_name: str
    flax_path: tuple[str, ...]
    kind: str


# torch parameter name suffix -> Flax leaf name, per kind ("": the entry is one tensor)
_LEAVES = {
    "conv": {"weight": "kernel", "bias": "bias"},
    "linear": {"weight": "kernel", "bias": "bias"},
    "batchnorm": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"},
    "layernorm": {"weight": "scale", "bias": "bias"},
    "in_proj": {"in_proj_weight": "kernel", "in_proj_bias": "bias"},
    "param": {"": ""},
}
# Buffers a torch state dict may hold that carry nothing the model uses.
_IGNORED = {"batchnorm": ("num_batches_tracked",)}


def _to_flax(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf != "kernel":
        return array
    if kind == "conv":
        return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    return array.T  # (out, in) -> (in, out)


def _to_torch(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf != "kernel":
        return array
    if kind == "conv":
        return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    return array.T


def _torch_key(entry: Entry, suffix: str) -> str:
    return f"{entry.torch_name}.{suffix}" if suffix else entry.torch_name


def _flax_leaf(entry: Entry, leaf: str) -> tuple[str, ...]:
    """The params path of one of ``entry``'s leaves (``""``: the entry's own path)."""
    return (*entry.flax_path, leaf) if leaf else entry.flax_path


def _put(tree: dict, path: Sequence[str], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: Sequence[str]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _leaves(entry: Entry, like: Mapping) -> dict[str, str]:
    """``{torch suffix: Flax leaf}`` of ``entry``, as far as the layer in ``like`` has them."""
    if entry.kind not in _LEAVES:
        raise WeightsError(f"{entry.torch_name}: unknown layer kind {entry.kind!r}")
    if entry.kind == "param":
        return dict(_LEAVES["param"])
    layer = _get(like, entry.flax_path)
    return {suffix: leaf for suffix, leaf in _LEAVES[entry.kind].items() if leaf in layer}


def params_from_state_dict(
    state_dict: Mapping[str, Any], table: Sequence[Entry], like: Mapping
) -> dict:
    """The Flax params tree for ``state_dict`` (float32), checked against ``table`` and ``like``.

    ``like`` is a params tree of the right shapes (e.g. a random init). Raises one
    :class:`WeightsError` listing all missing keys, unexpected keys and shape mismatches.
    """
    expected = {
        _torch_key(e, suffix): (e, leaf) for e in table for suffix, leaf in _leaves(e, like).items()
    }
    ignored = {f"{e.torch_name}.{suffix}" for e in table for suffix in _IGNORED.get(e.kind, ())}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected) - ignored)
    mismatched, params = [], {}
    for key, (entry, leaf) in expected.items():
        if key in missing:
            continue
        array = _to_flax(entry.kind, leaf, np.asarray(state_dict[key], np.float32))
        want = tuple(np.shape(_get(like, _flax_leaf(entry, leaf))))
        if array.shape != want:
            torch_want = _to_torch(entry.kind, leaf, np.empty(want, np.float32)).shape
            mismatched.append(
                f"{key}: got {tuple(np.shape(state_dict[key]))}, expected {torch_want}"
            )
            continue
        _put(params, _flax_leaf(entry, leaf), array)
    parts = misfit_parts(missing, unexpected, mismatched, noun="keys")
    if parts:
        raise WeightsError("the state dict does not fit the model: " + "; ".join(parts))
    return params


def params_tree(
    rows: Iterable[tuple[Entry, tuple[int, ...]]],
    leaves: Callable[[Entry, tuple[int, ...]], Any],
) -> dict:
    """A Flax params tree: ``leaves(entry, shape)`` (``{"kernel": ..., "bias": ...}``, or one
    array for a ``"param"`` entry) nested at each row's ``entry.flax_path``. ``rows`` are a
    model's ``(import entry, Flax shape)`` pairs, so one list of layers gives random weights,
    shape templates and the import table.

    >>> rows = [(Entry("fc", ("fc",), "linear"), (4, 2))]
    >>> params_tree(rows, lambda entry, shape: {"kernel": np.zeros(shape)})["fc"]["kernel"].shape
    (4, 2)
    """
    params: dict = {}
    for entry, shape in rows:
        found = leaves(entry, shape)
        if entry.kind == "param":  # one tensor, not a layer's dict of them
            _put(params, entry.flax_path, found)
            continue
        node = params
        for part in entry.flax_path:
            node = node.setdefault(part, {})
        node.update(found)
    return params


def shape_leaves(conv_bias: bool = True) -> Callable[[Entry, tuple[int, ...]], dict]:
    """``leaves`` for :func:`params_tree` giving ``jax.ShapeDtypeStruct`` float32 templates:
    a kernel (and, for linear layers and where ``conv_bias``, conv layers, a bias), a batch
    norm's ``scale, bias, mean, var``, a layer norm's ``scale, bias`` or a ``"param"``'s one
    tensor. A template checks an import without drawing weights."""

    def leaves(entry: Entry, shape: tuple[int, ...]) -> Any:
        def spec(s: tuple[int, ...]) -> Any:
            return jax.ShapeDtypeStruct(s, np.float32)

        if entry.kind == "param":
            return spec(shape)
        if entry.kind in ("batchnorm", "layernorm"):
            return {leaf: spec(shape) for leaf in _LEAVES[entry.kind].values()}
        found = {"kernel": spec(shape)}
        if entry.kind in ("linear", "in_proj") or conv_bias:
            found["bias"] = spec(shape[-1:])
        return found

    return leaves


def load_params(path: str | os.PathLike, table: Sequence[Entry], like: Mapping) -> dict:
    """The Flax params tree in ``path``, checked against the model's params tree ``like``.

    ``path`` is a state dict file, imported through ``table`` (see
    :func:`params_from_state_dict`), or a directory ``fvjax convert`` wrote: a params
    directory of converted weights in Flax layout already, restored by
    :func:`fvjax.models.converted.restore_params`.
    """
    if os.path.isdir(path):
        return restore_params(path, like)
    return params_from_state_dict(load_state_dict(path), table, like)


def state_dict_from_params(params: Mapping, table: Sequence[Entry]) -> dict[str, np.ndarray]:
    """The inverse of :func:`params_from_state_dict`: a torch-layout state dict of ``params``."""
    out = {}
    for entry in table:
        for suffix, leaf in _leaves(entry, params).items():
            array = np.asarray(_get(params, _flax_leaf(entry, leaf)), np.float32)
            out[_torch_key(entry, suffix)] = np.ascontiguousarray(
                _to_torch(entry.kind, leaf, array)
            )
    return out
