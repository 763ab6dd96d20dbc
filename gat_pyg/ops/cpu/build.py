"""Just-in-time build of the C++/OpenMP kernels in ``csrc/``.

:func:`torch.utils.cpp_extension.load` compiles them the first time they are needed (about
a minute) into ``<root>/<hash of the sources, flags and CPU>``, with ``<root>`` =
``$GAT_PYG_BUILD_DIR`` or ``~/.cache/gat_pyg/<torch version>``, and every later process
loads them from there. Loading registers their CPU implementations of the operators that
:mod:`gat_pyg.ops._library` defines.
"""
import hashlib
import os
import platform

import torch

__all__ = ['load_extension', 'build_directory']

_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc')
_SOURCES = ('segment_attention_forward.cpp', 'segment_attention_backward.cpp',
            'segment_attention_v2_forward.cpp', 'segment_attention_v2_backward.cpp',
            'registration.cpp')
_EXTENSION_NAME = 'gat_pyg_ops'
# -march=native: the extension is built on (and for) the machine that runs it, so its gather
# and accumulate loops use the full vector width there (AVX2 / FMA on x86-64); the build
# directory is keyed on the CPU too (see _source_digest). -fno-trapping-math lets GCC
# vectorise the branch-free selects (no IEEE result changes, as in PyTorch's own build);
# -Wno-psabi silences notes about vector arguments of inlined helpers.
_CFLAGS = ['-O3', '-march=native', '-fopenmp', '-fno-trapping-math', '-fno-math-errno',
           '-Wno-psabi']


def _cpu_signature() -> str:
    """The CPU model and instruction-set flags (Linux), else what :mod:`platform` says: a
    ``-march=native`` build is only valid on CPUs with the same instruction sets."""
    try:
        with open('/proc/cpuinfo') as f:
            lines = [line for line in f if line.startswith(('model name', 'flags',
                                                             'Features', 'CPU part'))]
        return ''.join(sorted(set(lines)))
    except OSError:
        return f'{platform.machine()} {platform.processor()}'


def _source_digest() -> str:
    """A hash of the kernel sources, the build flags and the CPU: the build directory is keyed
    on it, so that checkouts with different kernel versions (or machines with different
    CPUs) sharing one cache never load (or ninja-"update") each other's builds."""
    digest = hashlib.sha256(' '.join(_CFLAGS).encode())
    digest.update(_cpu_signature().encode())
    for name in sorted(os.listdir(_CSRC)):
        if name.endswith(('.cpp', '.h')):
            digest.update(name.encode())
            with open(os.path.join(_CSRC, name), 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


def build_directory() -> str:
    """Where the extension is built: ``<root>/<hash of the sources, flags and CPU>``, with
    ``<root>`` the environment variable ``GAT_PYG_BUILD_DIR`` or, by default,
    ``~/.cache/gat_pyg/<torch version>``."""
    root = os.environ.get('GAT_PYG_BUILD_DIR')
    if not root:
        version = torch.__version__.replace('+', '_')
        root = os.path.join(os.path.expanduser('~'), '.cache', 'gat_pyg', version)
    return os.path.join(root, _source_digest())


def load_extension(verbose: bool = False) -> None:
    """Builds the extension (once per build directory) and loads it, which registers its
    CPU kernels. Raises the build or load error (a :class:`RuntimeError` or
    :class:`OSError`, for example when no C++ compiler is installed)."""
    from torch.utils.cpp_extension import load
    directory = build_directory()
    os.makedirs(directory, exist_ok=True)
    load(name=_EXTENSION_NAME, sources=[os.path.join(_CSRC, name) for name in _SOURCES],
         extra_cflags=_CFLAGS, extra_ldflags=['-fopenmp'], build_directory=directory,
         is_python_module=False, verbose=verbose)
