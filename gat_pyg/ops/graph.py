"""The sorted graph format behind segment attention, and its per-graph cache.

Segment attention groups the edges of a graph by target (CSR) for the forward pass and by
source (CSC) for the source-side sums of the backward pass. Both are built by one stable
sort each; :class:`SegmentGraph` keeps them together with the permutations back to the
caller's edge order, and :func:`cached_segment_graph` remembers the result per input
tensor so that repeated calls on the same graph pay for the sorts once.
"""
import weakref
from typing import Callable, Dict, Hashable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor


class SegmentGraph(NamedTuple):
    r"""A graph with :math:`E` edges from :math:`N_{src}` sources to :math:`N_{dst}` targets.

    CSR (grouped by target, edges of a target in the caller's order):

    - ``ptr`` :math:`[N_{dst} + 1]`: offsets of each target's incoming edges.
    - ``src`` :math:`[E]`: the source of each CSR slot.
    - ``perm`` :math:`[E]`: the caller's edge id of each CSR slot.

    CSC (grouped by source, edges of a source in CSR-slot order):

    - ``src_ptr`` :math:`[N_{src} + 1]`: offsets of each source's outgoing edges.
    - ``csc_dst`` :math:`[E]`: the target of each CSC slot.
    - ``csc_slot`` :math:`[E]`: the CSR slot of each CSC slot.

    All index tensors share one dtype: ``int32`` or ``int64`` (see
    :func:`build_segment_graph`).
    """
    ptr: Tensor
    src: Tensor
    perm: Tensor
    src_ptr: Tensor
    csc_dst: Tensor
    csc_slot: Tensor
    num_src: int
    num_dst: int

    @property
    def num_edges(self) -> int:
        return self.src.numel()

    def long(self) -> 'SegmentGraph':
        """This graph with ``int64`` index tensors (itself if they already are)."""
        if self.ptr.dtype == torch.long:
            return self
        return self._replace(ptr=self.ptr.long(), src=self.src.long(), perm=self.perm.long(),
                             src_ptr=self.src_ptr.long(), csc_dst=self.csc_dst.long(),
                             csc_slot=self.csc_slot.long())

    def dst(self) -> Tensor:
        """The target of each CSR slot (expanded from ``ptr``)."""
        counts = self.ptr[1:] - self.ptr[:-1]
        return torch.arange(self.num_dst, device=self.ptr.device).repeat_interleave(
            counts, output_size=self.num_edges)


def index_to_ptr(index: Tensor, size: int, out_int32: bool = False) -> Tensor:
    """CSR offsets ``[size + 1]`` of a sorted ``int64`` or ``int32`` index vector (``int32``
    offsets if ``out_int32``)."""
    return torch._convert_indices_from_coo_to_csr(index, size, out_int32=out_int32)


def segment_graph_from_ptr(ptr: Tensor, num_members: int) -> SegmentGraph:
    """The graph of a grouping whose members already lie in group order (such as the nodes
    of a PyG batch, grouped by ``ptr``): member ``j`` is the source of slot ``j``, so every
    permutation is the identity and no sort is needed."""
    members = torch.arange(num_members, device=ptr.device, dtype=ptr.dtype)
    counts = ptr[1:] - ptr[:-1]
    group = torch.arange(ptr.numel() - 1, device=ptr.device,
                         dtype=ptr.dtype).repeat_interleave(counts, output_size=num_members)
    return SegmentGraph(ptr=ptr, src=members, perm=members,
                        src_ptr=torch.arange(num_members + 1, device=ptr.device,
                                             dtype=ptr.dtype),
                        csc_dst=group, csc_slot=members, num_src=num_members,
                        num_dst=ptr.numel() - 1)


def default_index_dtype(num_edges: int, num_src: int, num_dst: int,
                        device: torch.device = torch.device('cpu')) -> torch.dtype:
    """The index dtype :func:`build_segment_graph` picks when given none: ``int32`` for a CPU
    graph whose edge and node counts fit (half the memory of ``int64``, same results: the
    fused kernel takes both), ``int64`` otherwise (the reference path, which CUDA tensors
    take, needs ``int64`` and would convert on every call)."""
    device = torch.device(device)
    if device.type == 'cpu' and max(num_edges, num_src, num_dst) < 2**31:
        return torch.int32
    return torch.int64


def build_segment_graph(src: Tensor, dst: Tensor, num_src: int, num_dst: int,
                        index_dtype: Optional[torch.dtype] = None) -> SegmentGraph:
    """Sorts the edges ``src[e] -> dst[e]`` into CSR by target and CSC by source.

    Both sorts are stable, so the result (and every reduction that walks it) depends only on
    the input, never on thread timing. ``index_dtype`` (``int64`` or ``int32``) is the dtype
    of every index tensor of the result; by default (``None``) :func:`default_index_dtype`:
    ``int32`` for CPU graphs below :math:`2^{31}` edges and nodes, else ``int64``. Node
    indices are checked to lie in ``[0, num_src)`` and ``[0, num_dst)`` (an
    :class:`IndexError` otherwise).

    Memory: the result holds 4 index vectors of :math:`E` entries (16 bytes per edge with
    ``int32``, 32 with ``int64``) and two offset vectors; on the way, besides the result, at
    most about 40 bytes per edge (``int32``; 64 with ``int64``), the two stable sorts' own
    buffers included. Gathers use :meth:`~torch.Tensor.index_select`, on CPU several times
    faster than advanced indexing.
    """
    if index_dtype is None:
        index_dtype = default_index_dtype(src.numel(), num_src, num_dst, src.device)
    if index_dtype not in (torch.int64, torch.int32):
        raise TypeError(f"'index_dtype' must be torch.int64 or torch.int32 (got {index_dtype})")
    if src.numel() != dst.numel():
        raise ValueError(f"'src' and 'dst' must have the same number of edges (got "
                         f"{src.numel()} and {dst.numel()})")
    if index_dtype == torch.int32 and max(src.numel(), num_src, num_dst) >= 2**31:
        raise ValueError("the graph is too large for int32 indices")
    if src.numel() > 0 and not torch.compiler.is_compiling():
        for name, index, bound in (('source', src, num_src), ('target', dst, num_dst)):
            low, high = torch.aminmax(index)
            if int(low) < 0 or int(high) >= bound:
                bad = int(low) if int(low) < 0 else int(high)
                raise IndexError(f"build_segment_graph: {name} index {bad} is out of range "
                                 f"for {bound} {name} nodes")
    # Node indices in the result's dtype (no copy when they already are): sorting int32
    # keys is faster, and the gathers below then produce the result's dtype directly.
    src = src.to(index_dtype)
    dst = dst.to(index_dtype)
    out_int32 = index_dtype == torch.int32
    # CSR: caller edges stably sorted by target (argsort's int64 result converted at once).
    perm = torch.argsort(dst, stable=True).to(index_dtype)
    dst_sorted = dst.index_select(0, perm)
    ptr = index_to_ptr(dst_sorted, num_dst, out_int32)
    csr_src = src.index_select(0, perm)
    # CSC: CSR slots stably sorted by source.
    csc_slot = torch.argsort(csr_src, stable=True).to(index_dtype)
    csc_dst = dst_sorted.index_select(0, csc_slot)
    del dst_sorted
    src_ptr = index_to_ptr(csr_src.index_select(0, csc_slot), num_src, out_int32)
    return SegmentGraph(ptr=ptr, src=csr_src, perm=perm, src_ptr=src_ptr, csc_dst=csc_dst,
                        csc_slot=csc_slot, num_src=num_src, num_dst=num_dst)


class _CacheEntry(NamedTuple):
    owner: 'weakref.ref[Tensor]'
    version: int
    key: Hashable
    value: object


class GraphCache:
    """Remembers values derived from an index tensor, for as long as that tensor lives.

    An entry is keyed on the tensor's identity and an extra ``key`` (what else the value
    depends on, such as the number of nodes). It is never stale: an in-place change of the
    tensor bumps its version counter, which invalidates the entry, and the entry is dropped
    when the tensor is freed.
    """
    def __init__(self) -> None:
        self._entries: Dict[Tuple[int, Hashable], _CacheEntry] = {}
        self.hits = 0
        self.misses = 0

    def get_or_build(self, owner: Tensor, key: Hashable, build: Callable[[], object]):
        if owner.requires_grad or torch.compiler.is_compiling():
            return build()
        slot = (id(owner), key)
        entry = self._entries.get(slot)
        if (entry is not None and entry.owner() is owner
                and entry.version == owner._version):
            self.hits += 1
            return entry.value
        self.misses += 1
        value = build()
        entries = self._entries
        self._entries[slot] = _CacheEntry(
            weakref.ref(owner, lambda _: entries.pop(slot, None)), owner._version, key,
            value)
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


graph_cache = GraphCache()
