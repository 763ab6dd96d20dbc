"""Layer benchmark: gat_pyg.nn.GATConv against torch_geometric.nn.GATConv, same graph,
same weights, same process (times as ratios), peak memory of forward+backward each in its
own subprocess.

    python benchmarks/bench_layer.py                 # the 1M-edge point and the sweep
    python benchmarks/bench_layer.py --quick         # small sizes, a few seconds

Prints a table and writes JSON (default benchmarks/results/layer.json).

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
- Peak memory: each layer in its own subprocess. After set-up and one warm-up step (so
  ours has its graph cached, like every step but the first), the child resets the peak RSS
  (``echo 5 > /proc/self/clear_refs`` resets VmHWM to the current RSS), takes VmRSS as the
  baseline, runs one forward+backward and reports ``VmHWM - baseline``. The child runs with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc hands every freed large block back to the
  OS at once: otherwise memory freed by the warm-up step stays in the heap, counts in the
  baseline, and the next step's reuse of it would not show in the peak.
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


def make_inputs(nodes: int, edges: int, features: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, features, generator=gen)
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    return x, edge_index


def make_layer(kind: str, features: int, heads: int, channels: int):
    from torch_geometric.nn import GATConv as PyGGATConv

    from gat_pyg.nn import GATConv
    torch.manual_seed(0)
    cls = PyGGATConv if kind == 'pyg' else GATConv
    return cls(features, channels, heads=heads)


def _fwd_bwd(layer, x, edge_index, grad):
    out = layer(x, edge_index)
    out.backward(grad)


def time_layers(kinds, x, edge_index, heads, channels, repeats, input_grad=True):
    """Median forward / backward / forward+backward seconds per layer kind, interleaved."""
    layers = {kind: make_layer(kind, x.size(1), heads, channels) for kind in kinds}
    if 'pyg' in layers and 'ours' in layers:
        layers['ours'].load_state_dict(layers['pyg'].state_dict())
    x = x.clone().requires_grad_(input_grad)
    grad = torch.randn(x.size(0), heads * channels, generator=torch.Generator().manual_seed(1))
    times = {kind: {'forward': [], 'backward': [], 'total': []} for kind in kinds}
    for layer in layers.values():  # warm-up (ours: also builds the cached graph)
        _fwd_bwd(layer, x, edge_index, grad)
    for _ in range(repeats):
        for kind, layer in layers.items():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            out = layer(x, edge_index)
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


def graph_build(x, edge_index, heads, channels, repeats=3):
    """Ours on a fresh edge_index tensor (cache miss) minus a cached call, and the bytes the
    graph cache holds for one edge_index."""
    from gat_pyg.ops import graph_cache
    layer = make_layer('ours', x.size(1), heads, channels)
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


def time_op(x, edge_index, heads, channels, repeats):
    """Ours' segment-attention operator alone (forward, backward) on the layer's graph, to
    tell the operator from the rest of the layer (projection, score terms, bias); and, as a
    memory-bound reference, one gather of every edge's source row of ``h`` into a buffer
    (``index_select``): the forward pass gathers those rows once, the backward pass the
    targets' gradient rows once more."""
    from torch_geometric.utils import add_self_loops, remove_self_loops

    from gat_pyg import ops
    n = x.size(0)
    looped, _ = add_self_loops(remove_self_loops(edge_index)[0], num_nodes=n)
    graph = ops.build_segment_graph(looped[0], looped[1], n, n, ops.graph_layout(x.device))
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(n, heads, channels, generator=gen).requires_grad_()
    a_src = torch.randn(n, heads, generator=gen).requires_grad_()
    a_dst = torch.randn(n, heads, generator=gen).requires_grad_()
    grad = torch.randn(n, heads, channels, generator=gen)
    rows = h.detach().reshape(n, -1)
    buffer = rows.new_empty(graph.src.numel(), rows.size(1))
    forward, backward, gather = [], [], []
    for step in range(repeats + 1):
        start = time.perf_counter()
        out, _ = ops.segment_attention(graph, h, a_src, a_dst, None, 0.2)
        middle = time.perf_counter()
        torch.autograd.grad(out, [h, a_src, a_dst], grad)
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
    """Runs in a subprocess: prints the peak RSS rise (bytes) of one forward+backward."""
    torch.set_num_threads(args.threads)
    x, edge_index = make_inputs(args.nodes, args.edges, args.features)
    layer = make_layer(args.layer, args.features, args.heads, args.channels)
    x.requires_grad_(not args.no_input_grad)
    grad = torch.randn(args.nodes, args.heads * args.channels,
                       generator=torch.Generator().manual_seed(1))
    _fwd_bwd(layer, x, edge_index, grad)
    x.grad = None
    layer.zero_grad(set_to_none=True)
    import gc
    gc.collect()
    Path('/proc/self/clear_refs').write_text('5')  # resets VmHWM to the current RSS
    baseline = _rss_kib('VmRSS')
    _fwd_bwd(layer, x, edge_index, grad)
    print(json.dumps({'peak_bytes': (_rss_kib('VmHWM') - baseline) * 1024}))


def peak_memory(layer, nodes, edges, features, heads, channels, input_grad=True) -> int:
    cmd = [sys.executable, __file__, '--child', '--layer', layer, '--nodes', str(nodes),
           '--edges', str(edges), '--features', str(features), '--heads', str(heads),
           '--channels', str(channels), '--threads', str(torch.get_num_threads())]
    if not input_grad:
        cmd.append('--no-input-grad')
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])['peak_bytes']


def measure_point(nodes, edges, features, heads, channels, repeats, layers, input_grad=True):
    x, edge_index = make_inputs(nodes, edges, features)
    point = {'nodes': nodes, 'edges': edges, 'features': features, 'heads': heads,
             'channels': channels, 'x_requires_grad': input_grad}
    timed = time_layers(layers, x, edge_index, heads, channels, repeats, input_grad)
    for kind in layers:
        result = timed[kind]
        result['ns_per_edge'] = 1e9 * result['fwd_bwd_s'] / edges
        result['peak_bytes'] = peak_memory(kind, nodes, edges, features, heads, channels,
                                           input_grad)
        result['bytes_per_edge'] = result['peak_bytes'] / edges
        point[kind] = result
    point['ours']['graph_build_s'], point['ours']['cache_bytes'] = graph_build(
        x, edge_index, heads, channels)
    (point['ours']['op_forward_s'], point['ours']['op_backward_s'],
     point['ours']['row_gather_s']) = time_op(x, edge_index, heads, channels, repeats)
    if 'pyg' in point:
        point['speedup_fwd_bwd'] = point['pyg']['fwd_bwd_s'] / point['ours']['fwd_bwd_s']
        point['speedup_forward'] = point['pyg']['forward_s'] / point['ours']['forward_s']
        point['speedup_backward'] = point['pyg']['backward_s'] / point['ours']['backward_s']
        point['memory_ratio'] = point['ours']['peak_bytes'] / max(point['pyg']['peak_bytes'], 1)
    return point


def print_table(points) -> None:
    header = (f"{'edges':>9} {'HxC':>5} | {'PyG f / b / f+b ms':>22} | {'ours f / b / f+b ms':>22} "
              f"| {'speedup f/b/f+b':>17} | {'PyG MB':>7} {'ours MB':>7} {'ratio':>6} "
              f"| {'ours ns/e':>9} {'gather ns/e':>11} {'op f+b ms':>9} {'build ms':>8}")
    print(header)
    print('-' * len(header))

    def ms(r):
        return (f"{r['forward_s'] * 1e3:6.1f} /{r['backward_s'] * 1e3:6.1f} /"
                f"{r['fwd_bwd_s'] * 1e3:7.1f}")

    for p in points:
        ours = p['ours']
        shape = f"{p['heads']}x{p['channels']}" + ('' if p.get('x_requires_grad', True) else '*')
        op_ms = (ours['op_forward_s'] + ours['op_backward_s']) * 1e3
        tail = (f"{ours['ns_per_edge']:>9.0f} {1e9 * ours['row_gather_s'] / p['edges']:>11.0f} "
                f"{op_ms:>9.1f} {ours['graph_build_s'] * 1e3:>8.1f}")
        if 'pyg' in p:
            pyg = p['pyg']
            print(f"{p['edges']:>9} {shape:>5} | {ms(pyg):>22} | {ms(ours):>22} | "
                  f"{p['speedup_forward']:4.1f}/{p['speedup_backward']:4.1f}/"
                  f"{p['speedup_fwd_bwd']:5.1f}x | {pyg['peak_bytes'] / 2**20:>7.0f} "
                  f"{ours['peak_bytes'] / 2**20:>7.0f} {p['memory_ratio']:>6.3f} | {tail}")
        else:
            print(f"{p['edges']:>9} {shape:>5} | {'(PyG skipped)':>22} | {ms(ours):>22} | "
                  f"{'-':>17} | {'-':>7} {ours['peak_bytes'] / 2**20:>7.0f} {'-':>6} | {tail}")


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
    parser.add_argument('--no-sweep', action='store_true', help='only the main point')
    parser.add_argument('--pyg-max-edges', type=int, default=3_000_000,
                        help='skip PyG above this many edges (it takes ~1.2 KB and ~1 us '
                        'per edge)')
    parser.add_argument('--out', type=Path, default=None,
                        help='JSON output (default benchmarks/results/layer.json, or '
                        'layer_quick.json with --quick)')
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
    for nodes, edges, heads, channels, input_grad in tqdm(plan, desc='benchmark points'):
        layers = LAYERS if edges <= args.pyg_max_edges else ('ours', )
        points.append(measure_point(nodes, edges, args.features, heads, channels,
                                    args.repeats, layers, input_grad))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'features {args.features}; pyg skipped above {args.pyg_max_edges} edges')
    print_table(points)
    print('* x without requires_grad (a first layer: no gradient of the input features). '
          'op f+b: ours\' segment-attention operator alone; the rest of "ours f+b" is the '
          'layer around it (projection, score terms, bias), the same work as in PyG\'s layer. '
          'gather ns/e: one random gather of an h row per edge (index_select), the memory-'
          'bound floor of one pass; the operator makes about two (h forward, the gradient '
          'rows backward).')
    if args.out is None:
        name = 'layer_quick.json' if args.quick else 'layer.json'
        args.out = Path(__file__).parent / 'results' / name
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
