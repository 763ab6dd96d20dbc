"""The sorted graph format behind segment attention, and its per-graph cache.

Segment attention groups the edges of a graph by target (CSR) for the forward pass and by
source (CSC) for the source-side sums of the backward pass. Both are built by one stable
sort each; :class:`SegmentGraph` keeps them together with the permutations back to the
caller's edge order, and :func:`cached_segment_graph` remembers the result per input
tensor so that repeated calls on the same graph pay for the sorts once.
"""
import weakref
from typing import Callable, Dict, Hashable, NamedTuple, Tuple

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

    All index tensors share one dtype: ``int64`` (the default) or ``int32``.
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
    """CSR offsets ``[size + 1]`` of a sorted ``int64`` index vector (``int32`` offsets if
    ``out_int32``)."""
    return torch._convert_indices_from_coo_to_csr(index, size, out_int32=out_int32)


def build_segment_graph(src: Tensor, dst: Tensor, num_src: int, num_dst: int,
                        index_dtype: torch.dtype = torch.int64) -> SegmentGraph:
    """Sorts the edges ``src[e] -> dst[e]`` into CSR by target and CSC by source.

    Both sorts are stable, so the result (and every reduction that walks it) depends only on
    the input, never on thread timing. ``index_dtype`` (``int64`` by default, or ``int32``)
    is the dtype of every index tensor of the result. Node indices are checked to lie in
    ``[0, num_src)`` and ``[0, num_dst)`` (an :class:`IndexError` otherwise).
    """
    if index_dtype not in (torch.int64, torch.int32):
        raise TypeError(f"'index_dtype' must be torch.int64 or torch.int32 (got {index_dtype})")
    src = src.long()
    dst = dst.long()
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
    perm = torch.argsort(dst, stable=True)
    dst_sorted = dst[perm]
    src_sorted = src[perm]
    csc_slot = torch.argsort(src_sorted, stable=True)
    out_int32 = index_dtype == torch.int32
    return SegmentGraph(
        ptr=index_to_ptr(dst_sorted, num_dst, out_int32),
        src=src_sorted.to(index_dtype),
        perm=perm.to(index_dtype),
        src_ptr=index_to_ptr(src_sorted[csc_slot], num_src, out_int32),
        csc_dst=dst_sorted[csc_slot].to(index_dtype),
        csc_slot=csc_slot.to(index_dtype),
        num_src=num_src,
        num_dst=num_dst,
    )


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
