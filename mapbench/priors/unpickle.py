"""Reading EDM network pickles without running any code from the file.

EDM saves networks as ``pickle.dump(dict(ema=net, ...))`` where each network module is a
``torch_utils.persistence`` object: its pickle record is ``_reconstruct_persistent_obj(meta)`` with
``meta = dict(type='class', version=6, module_src=<the module's source text>, class_name=...,
state=<the object's __dict__>)``; unpickling normally *executes* ``module_src``. Torch containers
(``ModuleDict``) are ordinary pickled objects, tensors are ``torch._utils._rebuild_tensor_v2`` over
storages serialised as ``torch.storage._load_from_bytes(<legacy torch.save bytes>)``, parameters
``torch._utils._rebuild_parameter``; init arguments may hold numpy scalars.

``SafeUnpickler.find_class`` maps exactly those globals to inert stand-ins: persistence records and
torch containers become ``ModuleRecord``s (class name + state dict, source text never executed),
storages are read by ``torch.load(weights_only=True)``, and any other global is refused with a
one-line ``UserError`` naming the file, before anything is called.
"""
from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from mapbench.errors import UserError


class ModuleRecord:
    """An inert stand-in for one pickled network module: ``class_name`` and its ``state``
    (``__dict__``: ``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, attributes)."""

    class_name = "?"
    state = None

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __setstate__(self, state):          # BUILD of a plainly pickled torch container
        self.state = state if isinstance(state, dict) else {}

    def __repr__(self):
        return f"ModuleRecord({self.class_name})"


def _container(name: str) -> type:
    """A ``ModuleRecord`` subclass standing in for the torch container class ``name``."""
    return type(name, (ModuleRecord,), {"class_name": name})


_CONTAINERS = {name: _container(name) for name in ("ModuleDict", "ModuleList", "Sequential")}


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict; attribute access is not needed)."""


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("malformed torch_utils.persistence record")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistence record {meta['class_name']}: state is not a dict")
    return ModuleRecord(meta["class_name"], dict(state))     # meta['module_src'] is never executed


def _reconstructor(cls, base, state=None):                   # copyreg._reconstructor (protocol < 2)
    if not (isinstance(cls, type) and issubclass(cls, ModuleRecord)) or base is not object:
        raise pickle.UnpicklingError("copyreg._reconstructor is only allowed for torch containers")
    return cls.__new__(cls)


def _load_from_bytes(data):
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage record is not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise pickle.UnpicklingError("a storage record is not plain tensor data (refused by "
                                         f"torch.load(weights_only=True): {type(e).__name__})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"storage record holds {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("tensor record without a storage")
    if backward_hooks:
        raise pickle.UnpicklingError("tensor record with backward hooks")
    return torch._utils._rebuild_tensor(storage, int(storage_offset), tuple(map(int, size)),
                                        tuple(map(int, stride)))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter record without a tensor")
    if backward_hooks:
        raise pickle.UnpicklingError("parameter record with backward hooks")
    return data


def _latin1_bytes(text, encoding="latin1"):                # _codecs.encode: bytes in protocol 2
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 bytes")
    return text.encode("latin1")


def _np_dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec)
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"numpy dtype {dtype} is not numeric")
    return dtype


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar record is not numeric")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    **{("torch.nn.modules.container", name): cls for name, cls in _CONTAINERS.items()},
}
ALLOWED.update({("__builtin__", name): ALLOWED[("builtins", name)]     # protocol < 3 spellings
                for name in ("set", "frozenset", "object")})
ALLOWED[("copy_reg", "_reconstructor")] = _reconstructor
ALLOWED[("_codecs", "encode")] = _latin1_bytes


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent id (not a plain pickle)")


def read_pickle(path: str | Path):
    """Unpickle ``path`` with ``SafeUnpickler``; any refusal or corruption is a one-line
    ``UserError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint file not found: {path}")
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: not loaded: {one_line(e)} (only tensors and EDM network records "
                        "are allowed; nothing from the file was run)") from None
    except Exception as e:
        raise UserError(f"{path}: not a readable network pickle ({type(e).__name__}: {one_line(e)})") from None


def one_line(e: Exception, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def flatten(record: ModuleRecord, prefix: str = ""):
    """``(tensors, classes)`` of a record tree: ``tensors[name]`` every parameter and persistent
    buffer under dotted state-dict names, ``classes[module path]`` every module's class name."""
    tensors, classes = {}, {prefix.rstrip("."): record.class_name}
    state = record.state or {}
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if t is None or name in skip:
                continue
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
            tensors[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, ModuleRecord):
            raise ValueError(f"{prefix}{name} is a {type(child).__name__}, not a module record")
        sub_t, sub_c = flatten(child, f"{prefix}{name}.")
        tensors.update(sub_t)
        classes.update(sub_c)
    return tensors, classes
