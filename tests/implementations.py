"""The implementations of segment attention that tests run on: the reference on every device
this machine has, and each device's kernel where it loads (a CUDA device and its kernel are
picked up by themselves where present).

``GAT_PYG_REQUIRE_KERNELS=cpu[,cuda]`` (set by CI) names the kernels that must load:
:func:`test_ops.test_required_kernels_load` fails for one that does not, instead of its
tests silently dropping out of the parametrization.
"""
import os
from typing import List, NamedTuple

import pytest
import torch

from gat_pyg import ops

REQUIRED_KERNELS = [name.strip() for name in
                    os.environ.get('GAT_PYG_REQUIRE_KERNELS', '').split(',') if name.strip()]


class Implementation(NamedTuple):
    backend: str  # 'reference' or 'kernel'
    device: str  # a device type

    @property
    def id(self) -> str:
        return f'{self.backend}-{self.device}'


def _device_types() -> List[str]:
    return ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def _implementations() -> List[Implementation]:
    loaded = {device for device, status in ops.available_kernels().items() if status.loaded}
    found = []
    for device in _device_types():
        found.append(Implementation('reference', device))
        if device in loaded:
            found.append(Implementation('kernel', device))
    return found


IMPLEMENTATIONS = _implementations()
KERNELS = [impl for impl in IMPLEMENTATIONS if impl.backend == 'kernel']


def parametrize(implementations: List[Implementation] = IMPLEMENTATIONS):
    """``@parametrize()``: runs the test once per implementation, as its ``impl`` argument,
    with that implementation's backend in force."""
    return pytest.mark.parametrize('impl', [pytest.param(impl, id=impl.id)
                                            for impl in implementations], indirect=True)
