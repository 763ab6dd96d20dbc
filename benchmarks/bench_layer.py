"""Layer benchmark: gat_pyg.nn.GATConv (or GATv2Conv, ``--conv gatv2``) against PyG's layer
of the same name, same graph, same weights, same process (times as ratios), peak memory of
forward+backward each in its own subprocess.

    python benchmarks/bench_layer.py                 # the 1M-edge point and the sweep
    python benchmarks/bench_layer.py --quick         # small sizes, a few seconds
    python benchmarks/bench_layer.py --conv gatv2 --edge-dim 4   # GATv2, edge features

Prints a table and writes JSON (default benchmarks/results/layer.json, layer_gatv2.json,
layer_gatv2_edge4.json, ...).

What is measured, per point (N nodes, E random edges, F input features, H heads x C
channels, the layers' default self-loops, so both process E + N edges):

- Times: one training step, ``out = layer(x, edge_index)`` (forward, autograd on; ``x``
  requires grad as in a hidden layer, and once more without, marked ``*``, as in a first
  layer) then ``out.backward(grad)`` with a fixed dense ``grad`` (backward). Both layers get the same weights and run in the same process,
  interleaved repeat by repeat (so a slow phase of the machine hits both alike), after one
  warm-up step each; medians over ``--repeats``. ns/edge is the forward+backward time over
  the E input edges. ``op f+b`` is ours' segment-attention operator alone on the same graph
  (forward + backward), the rest of our layer's time being its projection, score terms and
  bias, which PyG's layer computes the same way. ``gather ns/e`` is a memory-bound
  reference: ``index_select`` of every edge's source row of ``h`` (per input edge); the
  operator's forward gathers those rows once and its backward the gradient rows once more.
- Graph build: ours caches the self-looped edges and the CSR/CSC sort per ``edge_index``
  tensor. ``graph_build_s`` is a forward on a fresh ``edge_index`` (cache miss) minus one on
  the same tensor again (hit); ``cache_bytes`` is what that cache holds.
- Peak memory: each layer in its own subprocess. ``first``: from the resident set after
  set-up (inputs and layer made, no call yet) to the peak of the first forward+backward,
  which for ours includes building and caching the graph. ``peak`` (steady): after that
  step, the child resets the peak RSS (``echo 5 > /proc/self/clear_refs`` resets VmHWM to
  the current RSS), takes VmRSS as the baseline, runs one more forward+backward and reports
  ``VmHWM - baseline``. The child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc
  hands every freed large block back to the OS at once: otherwise memory freed by the
  warm-up step stays in the heap, counts in the baseline, and the next step's reuse of it
  would not show in the peak.
- Bytes per edge: at the main point, the first-call peak is measured again with twice the
  edges (same nodes); ``B/edge`` is the slope, (peak(2E) - peak(E)) / E.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

LAYERS = ('pyg', 'ours')


def make_inputs(nodes: int, edges: int, features: int, edge_dim: int = 0, seed: int = 0):
    """Features, a random graph and (with ``edge_dim``) edge features."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, features, generator=gen)
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    edge_attr = torch.randn(edges, edge_dim, generator=gen) if edge_dim else None
    return x, edge_index, edge_attr


def make_layer(kind: str, conv: str, features: int, heads: int, channels: int,
               edge_dim: int = 0):
    from gat_pyg.nn.conv import attention_layer
    torch.manual_seed(0)
    return attention_layer(conv, kind)(features, channels, heads=heads,
                                       edge_dim=edge_dim or None)


def _fwd_bwd(layer, x, edge_index, edge_attr, grad):
    out = layer(x, edge_index, edge_attr)
    out.backward(grad)


def time_layers(kinds, conv, x, edge_index, edge_attr, heads, channels, repeats,
                input_grad=True):
    """Median forward / backward / forward+backward seconds per layer kind, interleaved."""
    edge_dim = 0 if edge_attr is None else edge_attr.size(1)
    layers = {kind: make_layer(kind, conv, x.size(1), heads, channels, edge_dim)
              for kind in kinds}
    if 'pyg' in layers and 'ours' in layers:
        layers['ours'].load_state_dict(layers['pyg'].state_dict())
    x = x.clone().requires_grad_(input_grad)
    grad = torch.randn(x.size(0), heads * channels, generator=torch.Generator().manual_seed(1))
    times = {kind: {'forward': [], 'backward': [], 'total': []} for kind in kinds}
    for layer in layers.values():  # warm-up (ours: also builds the cached graph)
        _fwd_bwd(layer, x, edge_index, edge_attr, grad)
    for _ in range(repeats):
        for kind, layer in layers.items():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            out = layer(x, edge_index, edge_attr)
            middle = time.perf_counter()
            out.backward(grad)
            end = time.perf_counter()
            del out
            times[kind]['forward'].append(middle - start)
            times[kind]['backward'].append(end - middle)
            times[kind]['total'].append(end - start)
    return {kind: {'forward_s': statistics.median(t['forward']),
                   'backward_s': statistics.median(t['backward']),
                   'fwd_bwd_s': statistics.median(t['total'])} for kind, t in times.items()}


def graph_build(conv, x, edge_index, heads, channels, repeats=3):
    """Ours on a fresh edge_index tensor (cache miss) minus a cached call, and the bytes the
    graph cache holds for one edge_index."""
    from gat_pyg.ops import graph_cache
    layer = make_layer('ours', conv, x.size(1), heads, channels)
    misses, hits = [], []
    graph_cache.clear()
    with torch.no_grad():
        for _ in range(repeats):
            fresh = edge_index.clone()
            start = time.perf_counter()
            layer(x, fresh)
            misses.append(time.perf_counter() - start)
            start = time.perf_counter()
            layer(x, fresh)
            hits.append(time.perf_counter() - start)
            cache_bytes = sum(_tensor_bytes(entry.value) for entry in graph_cache._entries.values())
            del fresh
    graph_cache.clear()
    return statistics.median(misses) - statistics.median(hits), cache_bytes


def time_op(conv, x, edge_index, edge_attr, heads, channels, repeats):
    """Ours' segment-attention operator alone (forward, backward) on the layer's graph, to
    tell the operator from the rest of the layer (projection, score terms, bias); and, as a
    memory-bound reference, one gather of every edge's source row of ``h`` into a buffer
    (``index_select``): the forward pass gathers those rows once, the backward pass the
    targets' gradient rows once more (GATv2's: those, and the targets' rows twice more)."""
    from torch_geometric.utils import add_self_loops, remove_self_loops

    from gat_pyg import ops
    n = x.size(0)
    looped, looped_attr = add_self_loops(*remove_self_loops(edge_index, edge_attr),
                                         fill_value='mean', num_nodes=n)
    graph = ops.build_segment_graph(looped[0], looped[1], n, n, ops.graph_layout(x.device))
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(n, heads, channels, generator=gen).requires_grad_()
    if conv == 'gat':
        terms = [torch.randn(n, heads, generator=gen).requires_grad_() for _ in range(2)]
        inputs = [h, *terms]

        def attend():
            return ops.segment_attention(graph, h, *terms, None, 0.2)[0]
    else:
        x_r = torch.randn(n, heads, channels, generator=gen).requires_grad_()
        att = torch.randn(heads, channels, generator=gen).requires_grad_()
        w_edge = (None if edge_attr is None else
                  torch.randn(heads * channels, edge_attr.size(1), generator=gen)
                  .requires_grad_())
        inputs = [h, x_r, att] + ([] if w_edge is None else [w_edge])

        def attend():
            return ops.segment_attention_v2(graph, h, x_r, att, looped_attr, w_edge, 0.2)[0]
    grad = torch.randn(n, heads, channels, generator=gen)
    rows = h.detach().reshape(n, -1)
    buffer = rows.new_empty(graph.src.numel(), rows.size(1))
    forward, backward, gather = [], [], []
    for step in range(repeats + 1):
        start = time.perf_counter()
        out = attend()
        middle = time.perf_counter()
        torch.autograd.grad(out, inputs, grad)
        end = time.perf_counter()
        torch.index_select(rows, 0, graph.src, out=buffer)
        gathered = time.perf_counter()
        if step:  # the first is a warm-up
            forward.append(middle - start)
            backward.append(end - middle)
            gather.append(gathered - end)
    return statistics.median(forward), statistics.median(backward), statistics.median(gather)


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _rss_kib(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_memory_child(args) -> None:
    """Runs in a subprocess: prints the peak RSS rise (bytes) of the first forward+backward
    (graph build included) and of a steady one."""
    import gc
    torch.set_num_threads(args.threads)
    x, edge_index, edge_attr = make_inputs(args.nodes, args.edges, args.features,
                                           args.edge_dim)
    layer = make_layer(args.layer, args.conv, args.features, args.heads, args.channels,
                       args.edge_dim)
    x.requires_grad_(not args.no_input_grad)
    grad = torch.randn(args.nodes, args.heads * args.channels,
                       generator=torch.Generator().manual_seed(1))
    gc.collect()
    Path('/proc/self/clear_refs').write_text('5')
    before_first = _rss_kib('VmRSS')
    _fwd_bwd(layer, x, edge_index, edge_attr, grad)
    first = (_rss_kib('VmHWM') - before_first) * 1024
    x.grad = None
    layer.zero_grad(set_to_none=True)
    gc.collect()
    Path('/proc/self/clear_refs').write_text('5')  # resets VmHWM to the current RSS
    baseline = _rss_kib('VmRSS')
    _fwd_bwd(layer, x, edge_index, edge_attr, grad)
    print(json.dumps({'peak_bytes': (_rss_kib('VmHWM') - baseline) * 1024,
                      'first_peak_bytes': first}))


def peak_memory(layer, conv, nodes, edges, features, heads, channels, edge_dim=0,
                input_grad=True) -> dict:
    cmd = [sys.executable, __file__, '--child', '--layer', layer, '--conv', conv,
           '--nodes', str(nodes), '--edges', str(edges), '--features', str(features),
           '--heads', str(heads), '--channels', str(channels), '--edge-dim', str(edge_dim),
           '--threads', str(torch.get_num_threads())]
    if not input_grad:
        cmd.append('--no-input-grad')
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_point(conv, nodes, edges, features, heads, channels, edge_dim, repeats, layers,
                  input_grad=True, per_edge=False):
    x, edge_index, edge_attr = make_inputs(nodes, edges, features, edge_dim)
    point = {'conv': conv, 'nodes': nodes, 'edges': edges, 'features': features,
             'heads': heads, 'channels': channels, 'edge_dim': edge_dim,
             'x_requires_grad': input_grad}
    timed = time_layers(layers, conv, x, edge_index, edge_attr, heads, channels, repeats,
                        input_grad)
    for kind in layers:
        result = timed[kind]
        result['ns_per_edge'] = 1e9 * result['fwd_bwd_s'] / edges
        result.update(peak_memory(kind, conv, nodes, edges, features, heads, channels,
                                  edge_dim, input_grad))
        if per_edge:  # the slope of the first call's peak over E, at the same N
            twice = peak_memory(kind, conv, nodes, 2 * edges, features, heads, channels,
                                edge_dim, input_grad)
            result['bytes_per_edge'] = ((twice['first_peak_bytes'] -
                                         result['first_peak_bytes']) / edges)
        point[kind] = result
    point['ours']['graph_build_s'], point['ours']['cache_bytes'] = graph_build(
        conv, x, edge_index, heads, channels)
    (point['ours']['op_forward_s'], point['ours']['op_backward_s'],
     point['ours']['row_gather_s']) = time_op(conv, x, edge_index, edge_attr, heads,
                                              channels, repeats)
    if 'pyg' in point:
        ours, pyg = point['ours'], point['pyg']
        point['speedup_fwd_bwd'] = pyg['fwd_bwd_s'] / ours['fwd_bwd_s']
        point['speedup_forward'] = pyg['forward_s'] / ours['forward_s']
        point['speedup_backward'] = pyg['backward_s'] / ours['backward_s']
        point['memory_ratio'] = ours['peak_bytes'] / max(pyg['peak_bytes'], 1)
        point['first_memory_ratio'] = ours['first_peak_bytes'] / max(
            pyg['first_peak_bytes'], 1)
        if per_edge:
            point['bytes_per_edge_ratio'] = ours['bytes_per_edge'] / max(
                pyg['bytes_per_edge'], 1)
    return point


def print_table(points) -> None:
    header = (f"{'edges':>9} {'HxC':>5} | {'PyG f / b / f+b ms':>22} | {'ours f / b / f+b ms':>22} "
              f"| {'speedup f/b/f+b':>17} | {'PyG MB':>13} {'ours MB':>11} {'ratio':>11} "
              f"| {'B/edge':>9} | {'ours ns/e':>9} {'gather ns/e':>11} {'op f+b ms':>9} "
              f"{'build ms':>8}")
    print(header)
    print('-' * len(header))

    def ms(r):
        return (f"{r['forward_s'] * 1e3:6.1f} /{r['backward_s'] * 1e3:6.1f} /"
                f"{r['fwd_bwd_s'] * 1e3:7.1f}")

    def mb(r):  # first call / steady
        return f"{r['first_peak_bytes'] / 2**20:5.0f}/{r['peak_bytes'] / 2**20:5.0f}"

    for p in points:
        ours = p['ours']
        shape = f"{p['heads']}x{p['channels']}" + ('' if p.get('x_requires_grad', True) else '*')
        op_ms = (ours['op_forward_s'] + ours['op_backward_s']) * 1e3
        tail = (f"{ours['ns_per_edge']:>9.0f} {1e9 * ours['row_gather_s'] / p['edges']:>11.0f} "
                f"{op_ms:>9.1f} {ours['graph_build_s'] * 1e3:>8.1f}")
        if 'pyg' in p:
            pyg = p['pyg']
            per_edge = (f"{pyg['bytes_per_edge']:4.0f}/{ours['bytes_per_edge']:4.0f}"
                        if 'bytes_per_edge' in ours else '-')
            print(f"{p['edges']:>9} {shape:>5} | {ms(pyg):>22} | {ms(ours):>22} | "
                  f"{p['speedup_forward']:4.1f}/{p['speedup_backward']:4.1f}/"
                  f"{p['speedup_fwd_bwd']:5.1f}x | {mb(pyg):>13} {mb(ours):>11} "
                  f"{p['first_memory_ratio']:5.3f}/{p['memory_ratio']:5.3f} | {per_edge:>9} | "
                  f"{tail}")
        else:
            print(f"{p['edges']:>9} {shape:>5} | {'(PyG skipped)':>22} | {ms(ours):>22} | "
                  f"{'-':>17} | {'-':>13} {mb(ours):>11} {'-':>11} | {'-':>9} | {tail}")


def _cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes only')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--features', type=int, default=128)
    parser.add_argument('--conv', choices=('gat', 'gatv2'), default='gat',
                        help='the layer: GATConv (default) or GATv2Conv')
    parser.add_argument('--edge-dim', type=int, default=0,
                        help='edge features per edge (default 0: none)')
    parser.add_argument('--no-sweep', action='store_true', help='only the main point')
    parser.add_argument('--pyg-max-edges', type=int, default=3_000_000,
                        help='skip PyG above this many edges (it takes ~1.2 KB and ~1 us '
                        'per edge)')
    parser.add_argument('--out', type=Path, default=None,
                        help='JSON output (default benchmarks/results/layer[_gatv2]'
                        '[_edge<D>][_quick].json)')
    # Internal: one peak-memory measurement in a subprocess.
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--layer', choices=LAYERS, help=argparse.SUPPRESS)
    parser.add_argument('--nodes', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--edges', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--heads', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--channels', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--no-input-grad', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return peak_memory_child(args)

    if args.quick:
        main_point, sizes, shapes = (10_000, 100_000), [10_000], [(8, 8)]
    else:
        main_point, sizes, shapes = ((100_000, 1_000_000), [10_000, 100_000, 10_000_000],
                                     [(1, 64), (4, 16), (8, 16)])
    plan = [(main_point[0], main_point[1], 8, 8, True), (main_point[0], main_point[1], 8, 8, False)]
    if not args.no_sweep:
        plan += [(max(edges // 10, 100), edges, 8, 8, True) for edges in sizes]
        plan += [(main_point[0], main_point[1], h, c, True) for h, c in shapes]
    points = []
    for index, (nodes, edges, heads, channels, input_grad) in enumerate(
            tqdm(plan, desc='benchmark points')):
        layers = LAYERS if edges <= args.pyg_max_edges else ('ours', )
        points.append(measure_point(args.conv, nodes, edges, args.features, heads, channels,
                                    args.edge_dim, args.repeats, layers, input_grad,
                                    per_edge=index == 0))
    print(f'{args.conv}, edge_dim {args.edge_dim}; torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, features {args.features}; pyg skipped above '
          f'{args.pyg_max_edges} edges')
    print_table(points)
    print('* x without requires_grad (a first layer: no gradient of the input features). '
          'op f+b: ours\' segment-attention operator alone; the rest of "ours f+b" is the '
          'layer around it (projection, score terms, bias), the same work as in PyG\'s layer. '
          'gather ns/e: one random gather of an h row per edge (index_select), the memory-'
          'bound floor of one pass. MB: peak rise of the first call (graph build included) / '
          'of a steady call; ratio: ours / PyG\'s of each; B/edge (PyG/ours): the slope of '
          'the first call\'s peak over E at the main point.')
    if args.out is None:
        name = 'layer' + ('' if args.conv == 'gat' else f'_{args.conv}') + (
            f'_edge{args.edge_dim}' if args.edge_dim else '') + ('_quick' if args.quick else '')
        args.out = Path(__file__).parent / 'results' / f'{name}.json'
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import torch_geometric

    import gat_pyg
    args.out.write_text(json.dumps({
        'command': ' '.join(['python', 'benchmarks/bench_layer.py', *sys.argv[1:]]),
        'versions': {'torch': torch.__version__, 'torch_geometric': torch_geometric.__version__,
                     'gat_pyg': gat_pyg.__version__},
        'threads': torch.get_num_threads(), 'cpu_count': os.cpu_count(), 'cpu': _cpu_name(),
        'date': time.strftime('%Y-%m-%d %H:%M:%S'),
        'points': points}, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
