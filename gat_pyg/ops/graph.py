"""The sorted graph format behind segment attention, and its per-graph cache.

Segment attention groups the edges of a graph by target (CSR) for the forward pass and, in
the kernels' backward passes, by source (CSC) for the source-side sums. Each is one stable
sort; :class:`SegmentGraph` keeps them together with the permutations back to the caller's
edge order. What a graph holds (its index dtype, whether it has a CSC) is asked for by the
implementation that will run on it, as a :class:`GraphLayout`. :class:`GraphCache`
remembers derived graphs per input tensor, so repeated calls on the same graph pay for the
sorts and the index checks once.
"""
import weakref
from typing import Callable, Dict, Hashable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

class GraphLayout(NamedTuple):
    """What an implementation of segment attention needs of a :class:`SegmentGraph`.

    - ``index_dtypes``: the index dtypes it takes, narrowest first; a graph gets the first
      one that its edge and node counts fit.
    - ``csc``: whether it needs the CSC (by source) as well as the CSR.
    """
    index_dtypes: Tuple[torch.dtype, ...] = (torch.int32, torch.int64)
    csc: bool = True

    def index_dtype(self, num_edges: int, num_src: int, num_dst: int) -> torch.dtype:
        """The index dtype of a graph of these sizes."""
        for dtype in self.index_dtypes:
            if max(num_edges, num_src, num_dst + 1) <= torch.iinfo(dtype).max:
                return dtype
        raise ValueError(f"a graph of {num_edges} edges, {num_src} sources and {num_dst} "
                         f"targets does not fit the index dtypes {self.index_dtypes}")


class SegmentGraph(NamedTuple):
    r"""A graph with :math:`E` edges from :math:`N_{src}` sources to :math:`N_{dst}` targets.

    CSR (grouped by target, edges of a target in the caller's order):

    - ``ptr`` :math:`[N_{dst} + 1]`: offsets of each target's incoming edges.
    - ``src`` :math:`[E]`: the source of each CSR slot.
    - ``perm`` :math:`[E]`: the caller's edge id of each CSR slot.

    CSC (grouped by source, edges of a source in CSR-slot order; ``None`` in a graph built
    without it, see :class:`GraphLayout`):

    - ``src_ptr`` :math:`[N_{src} + 1]`: offsets of each source's outgoing edges.
    - ``csc_dst`` :math:`[E]`: the target of each CSC slot.
    - ``csc_slot`` :math:`[E]`: the CSR slot of each CSC slot.

    All index tensors share one dtype, ``int32`` or ``int64``. Make graphs with
    :func:`build_segment_graph` or :func:`segment_graph_from_ptr`, which check the indices
    once; the kernels rely on the structure they build (see ``docs/architecture.md``).
    """
    ptr: Tensor
    src: Tensor
    perm: Tensor
    src_ptr: Optional[Tensor]
    csc_dst: Optional[Tensor]
    csc_slot: Optional[Tensor]
    num_src: int
    num_dst: int

    @property
    def num_edges(self) -> int:
        return self.src.numel()

    @property
    def has_csc(self) -> bool:
        return self.src_ptr is not None

    @property
    def index_dtype(self) -> torch.dtype:
        return self.ptr.dtype

    def long(self) -> 'SegmentGraph':
        """This graph with ``int64`` index tensors (itself if they already are)."""
        if self.ptr.dtype == torch.long:
            return self
        return self._replace(**{name: None if t is None else t.long() for name, t in
                                zip(self._fields[:6], self[:6])})

    def dst(self) -> Tensor:
        """The target of each CSR slot (expanded from ``ptr``)."""
        counts = self.ptr[1:] - self.ptr[:-1]
        return torch.arange(self.num_dst, device=self.ptr.device,
                            dtype=self.ptr.dtype).repeat_interleave(
                                counts, output_size=self.num_edges)


def index_to_ptr(index: Tensor, size: int) -> Tensor:
    """CSR offsets ``[size + 1]`` of a sorted ``int64`` or ``int32`` index vector, in the
    index's dtype."""
    return torch._convert_indices_from_coo_to_csr(index, size,
                                                  out_int32=index.dtype == torch.int32)


def check_node_indices(src: Tensor, dst: Tensor, num_src: int, num_dst: int,
                       name: str) -> None:
    """Raises an :class:`IndexError` naming ``name`` if a source index lies outside
    ``[0, num_src)`` or a target index outside ``[0, num_dst)``. Skipped while compiling
    (the values are not known then)."""
    if torch.compiler.is_compiling():
        return
    for kind, index, bound in (('source', src, num_src), ('target', dst, num_dst)):
        if index.numel() == 0:
            continue
        low, high = (int(v) for v in torch.aminmax(index))
        if low < 0:
            raise IndexError(f"{name} holds a negative {kind} index ({low})")
        if high >= bound:
            raise IndexError(f"{name} holds {kind} index {high}, out of range for {bound} "
                             f"{kind} nodes")


def build_segment_graph(src: Tensor, dst: Tensor, num_src: int, num_dst: int,
                        layout: GraphLayout = GraphLayout(),
                        check: bool = True) -> SegmentGraph:
    """Sorts the edges ``src[e] -> dst[e]`` into CSR by target and, if ``layout.csc``, CSC
    by source.

    Both sorts are stable, so the result (and every reduction that walks it) depends only on
    the input, never on thread timing. Every index tensor of the result has
    ``layout.index_dtype(...)`` (by default ``int32`` where the graph fits, else
    ``int64``). Node indices are checked to lie in ``[0, num_src)`` and ``[0, num_dst)``
    (an :class:`IndexError` otherwise) unless ``check=False``, for indices the caller has
    checked already.

    Memory: the result holds 2 index vectors of :math:`E` entries (4 with the CSC: 16 bytes
    per edge with ``int32``, 32 with ``int64``) and the offset vectors; on the way, besides
    the result, at most about 40 bytes per edge (``int32``; 64 with ``int64``), the stable
    sorts' own buffers included.
    """
    if src.numel() != dst.numel():
        raise ValueError(f"'src' and 'dst' must have the same number of edges (got "
                         f"{src.numel()} and {dst.numel()})")
    index_dtype = layout.index_dtype(src.numel(), num_src, num_dst)
    if check:
        check_node_indices(src, dst, num_src, num_dst, 'build_segment_graph')
    # Node indices in the result's dtype (no copy when they already are): sorting int32
    # keys is faster, and the gathers below then produce the result's dtype directly.
    # index_select: on CPU several times faster than advanced indexing.
    src = src.to(index_dtype)
    dst = dst.to(index_dtype)
    # CSR: caller edges stably sorted by target (argsort's int64 result converted at once).
    perm = torch.argsort(dst, stable=True).to(index_dtype)
    dst_sorted = dst.index_select(0, perm)
    ptr = index_to_ptr(dst_sorted, num_dst)
    csr_src = src.index_select(0, perm)
    graph = SegmentGraph(ptr=ptr, src=csr_src, perm=perm, src_ptr=None, csc_dst=None,
                         csc_slot=None, num_src=num_src, num_dst=num_dst)
    return _with_csc(graph, dst_sorted) if layout.csc else graph


def _with_csc(graph: SegmentGraph, dst_sorted: Tensor) -> SegmentGraph:
    """``graph`` with its CSC: the CSR slots stably sorted by source."""
    csc_slot = torch.argsort(graph.src, stable=True).to(graph.index_dtype)
    csc_dst = dst_sorted.index_select(0, csc_slot)
    src_ptr = index_to_ptr(graph.src.index_select(0, csc_slot), graph.num_src)
    return graph._replace(src_ptr=src_ptr, csc_dst=csc_dst, csc_slot=csc_slot)


def segment_graph_from_ptr(ptr: Tensor, num_members: int,
                           layout: GraphLayout = GraphLayout()) -> SegmentGraph:
    """The graph of a grouping whose members already lie in group order (such as the nodes
    of a PyG batch, grouped by ``ptr``): member ``j`` is the source of slot ``j``, so every
    permutation is the identity and no sort is needed. ``ptr`` must be valid offsets (from
    ``0`` to ``num_members``, non-decreasing); the caller checks it."""
    num_groups = ptr.numel() - 1
    dtype = layout.index_dtype(num_members, num_members, num_groups)
    ptr = ptr.to(dtype)
    members = torch.arange(num_members, device=ptr.device, dtype=dtype)
    graph = SegmentGraph(ptr=ptr, src=members, perm=members, src_ptr=None, csc_dst=None,
                         csc_slot=None, num_src=num_members, num_dst=num_groups)
    if not layout.csc:
        return graph
    return graph._replace(src_ptr=torch.arange(num_members + 1, device=ptr.device,
                                               dtype=dtype),
                          csc_dst=graph.dst(), csc_slot=members)


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
