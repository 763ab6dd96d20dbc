"""Large-graph benchmark: full-batch training of the paper's two-layer GAT on a synthetic
power-law graph, with gat_pyg.nn.GATConv and with torch_geometric.nn.GATConv.

    python benchmarks/bench_large_graph.py            # full run (~40 min on a busy 2-core box)
    python benchmarks/bench_large_graph.py --quick    # small sizes, under a minute idle

Prints tables and writes JSON (default benchmarks/results/large_graph.json, or
large_graph_quick.json with --quick). Not a test.

The graph is :func:`gat_pyg.data.synthetic_graph` (degree-corrected SBM, power-law degrees,
8 classes, 128 Gaussian features, undirected: E counts both directions). The model is
``gat_pyg.nn.models.GAT(128, C, 8, dropout=0.6, alpha=0.2, nheads=H)`` (H heads x C
channels, 8x8 unless stated) with ``conv=`` our layer or PyG's. One epoch is one training
step, full batch: forward, ``nll_loss`` on the training nodes, backward, Adam step.

Every point runs in its own subprocess (``MALLOC_MMAP_THRESHOLD_=65536``, so that freed
blocks go back to the OS at once and RSS follows the live tensors), which reads VmRSS and
VmHWM from /proc/self/status and resets VmHWM between stages (``echo 5 >
/proc/self/clear_refs``). Reported per point:

- ``gen``: seconds to generate the graph and the peak RSS rise while doing so (over the
  RSS before, i.e. output plus the generator's temporaries).
- ``build`` (ours only): seconds and peak RSS rise of the graph preparation our layer
  caches per ``edge_index`` -- PyG's self-loop removal and addition, then the CSR/CSC sort
  (:func:`gat_pyg.ops.build_segment_graph`) -- and the bytes it keeps. Measured
  separately, then dropped, so epoch 1 pays for it again as in training.
- ``epoch 1`` / ``epoch 2``: seconds and peak RSS (absolute, whole process) of each of the
  first two epochs; ours builds its cached graph in epoch 1, later epochs reuse it.
- ``peak``: the process's peak RSS over everything (generation, build, epochs).
- ``B/edge`` (point): (peak RSS of the epochs - RSS after data generation and model set-up)
  / E. At a fixed N this includes the per-node tensors (activations, gradients, dropout
  masks: several GiB at N = 2M), which dominate on sparse graphs; hence also the
  *marginal* bytes per edge: the slope of epoch peak RSS against E between the two largest
  E of a sweep at fixed N that fit (at small E the peak is set by per-node tensors alone,
  e.g. the model's input dropout, so the peak is only linear in E once the edges' share
  dominates). It includes the 16 bytes per edge of the int64 ``edge_index`` itself.
  ``largest E in 24 GiB`` follows that line from the largest point to a 24 GiB peak at
  that N.

PyG children run under an address-space cap (``RLIMIT_AS`` = the child's address space
after its imports + ``--cap-gib``, lowered when the machine has less memory available, so
as to always leave 3 GiB to others), so an oversized point fails with an allocation error
instead of endangering the machine; such a point is recorded as ``OOM`` with the cap, and
larger E for that layer are skipped. Ours runs under the same cap.

The heads x channels sweep measures ours and PyG on a graph with few nodes and many edges
(N = 20k), where the per-edge memory dominates, at two values of E each, for several
H x C: the bytes per edge of ours do not grow with H x C (its per-edge state is the cached
graph's indices; the fused kernel keeps nothing per edge and head), while PyG's grow in
proportion (it materialises [E, H, C] messages and [E, H] attention tensors).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bench_layer import _cpu_name  # this folder is on sys.path when run as a script

GiB = 2**30
RESERVE_GIB = 3.0  # memory always left to other jobs on the machine


# Child: one measurement ###########################################################################

def _status(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def _reset_peak() -> int:
    """Resets VmHWM to the current RSS and returns that RSS."""
    Path('/proc/self/clear_refs').write_text('5')
    return _status('VmRSS')


def child(args) -> dict:
    import torch.nn.functional as F
    from torch_geometric.nn import GATConv as PyGGATConv
    from torch_geometric.utils import add_self_loops, remove_self_loops

    from gat_pyg import ops
    from gat_pyg.data import synthetic_graph
    from gat_pyg.nn import GATConv
    from gat_pyg.nn.models import GAT

    torch.set_num_threads(args.threads)
    if args.layer == 'ours':
        ops.cpu.KERNEL.load()  # the JIT build / load, before any measurement
    result = {'layer': args.layer, 'nodes': args.nodes, 'edges': args.edges,
              'heads': args.heads, 'channels': args.channels, 'features': args.features,
              'cap_bytes': None}
    if args.cap_gib > 0:
        cap = int(args.cap_gib * GiB)
        limit = _status('VmSize') + cap
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        result['cap_bytes'] = cap
    peaks = [_status('VmHWM')]
    stage = 'generate'
    try:
        base = _reset_peak()
        start = time.perf_counter()
        data = synthetic_graph(args.nodes, args.edges, num_features=args.features,
                               num_classes=args.classes, seed=args.seed)
        result['gen_s'] = time.perf_counter() - start
        result['gen_peak_rise_bytes'] = _status('VmHWM') - base
        peaks.append(_status('VmHWM'))
        x, edge_index, y, train = data.x, data.edge_index, data.y, data.train_mask

        torch.manual_seed(args.seed)
        conv = GATConv if args.layer == 'ours' else PyGGATConv
        model = GAT(args.features, args.channels, args.classes, dropout=0.6, alpha=0.2,
                    nheads=args.heads, conv=conv)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
        model.train()
        data_rss = _status('VmRSS')
        result['data_rss_bytes'] = data_rss

        if args.layer == 'ours':
            stage = 'build'
            base = _reset_peak()
            start = time.perf_counter()
            # What GATConv caches per edge_index: PyG's self-loop policy, then the sort.
            looped, _ = add_self_loops(remove_self_loops(edge_index)[0],
                                       num_nodes=args.nodes)
            graph = ops.build_segment_graph(looped[0], looped[1], args.nodes, args.nodes,
                                            ops.graph_layout('cpu'))
            result['build_s'] = time.perf_counter() - start
            result['build_peak_rise_bytes'] = _status('VmHWM') - base
            result['cache_bytes'] = looped.numel() * looped.element_size() + sum(
                t.numel() * t.element_size() for t in graph[:6])
            result['index_dtype'] = str(graph.ptr.dtype).replace('torch.', '')
            peaks.append(_status('VmHWM'))
            del looped, graph
            ops.graph_cache.clear()

        for epoch in (1, 2)[:args.epochs]:
            stage = f'epoch {epoch}'
            _reset_peak()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            out = model(x, edge_index)
            loss = F.nll_loss(out[train], y[train])
            loss.backward()
            optimizer.step()
            result[f'epoch{epoch}_s'] = time.perf_counter() - start
            result[f'epoch{epoch}_loss'] = float(loss)
            del out, loss
            result[f'epoch{epoch}_peak_bytes'] = _status('VmHWM')
            peaks.append(_status('VmHWM'))
        epoch_peak = max(result[f'epoch{e}_peak_bytes'] for e in (1, 2)[:args.epochs])
        result['epoch_peak_bytes'] = epoch_peak
        result['bytes_per_edge'] = (epoch_peak - data_rss) / max(args.edges, 1)
        result['status'] = 'ok'
    except (RuntimeError, MemoryError) as error:  # an allocation beyond the cap
        message = str(error).strip().splitlines()[0][:300]
        if 'alloc' not in message.lower() and not isinstance(error, MemoryError):
            raise
        result['status'] = 'OOM'
        result['oom_stage'] = stage
        result['error'] = message
    peaks.append(_status('VmHWM'))
    result['process_peak_bytes'] = max(peaks)
    return result


# Parent ###########################################################################################

def mem_available() -> int:
    for line in Path('/proc/meminfo').read_text().splitlines():
        if line.startswith('MemAvailable:'):
            return int(line.split()[1]) * 1024
    return 0


def run_point(layer, nodes, edges, heads, channels, args) -> dict:
    cap = min(args.cap_gib, mem_available() / GiB - RESERVE_GIB)
    if cap < 1.0:
        return {'layer': layer, 'nodes': nodes, 'edges': edges, 'heads': heads,
                'channels': channels, 'status': 'skipped',
                'error': f'only {mem_available() / GiB:.1f} GiB available'}
    cmd = [sys.executable, os.path.abspath(__file__), '--child', '--layer', layer,
           '--nodes', str(nodes), '--edges', str(edges), '--heads', str(heads),
           '--channels', str(channels), '--features', str(args.features),
           '--classes', str(args.classes), '--epochs', str(args.epochs),
           '--seed', str(args.seed), '--threads', str(args.threads),
           '--cap-gib', f'{cap:.3f}']
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    if proc.returncode != 0 or not lines:
        return {'layer': layer, 'nodes': nodes, 'edges': edges, 'heads': heads,
                'channels': channels, 'status': 'failed', 'returncode': proc.returncode,
                'error': (proc.stderr or proc.stdout).strip()[-600:]}
    return json.loads(lines[-1])


def fit(points) -> dict:
    """Marginal bytes per edge of a group of points (same layer, N and H x C): the slope of
    epoch peak RSS against E between the two largest E that fit, and from it the E whose
    peak would reach 24 GiB. Not a least-squares line over all points: at small E the peak
    is set by per-node tensors (see the module's docstring), so the peak is not linear in E
    there and only the largest points measure what each edge adds."""
    ok = sorted((p for p in points if p.get('status') == 'ok'), key=lambda p: p['edges'])
    if len(ok) < 2:
        return {}
    low, high = ok[-2], ok[-1]
    out = {'edges': [low['edges'], high['edges']]}
    for key in ('epoch_peak_bytes', 'epoch1_peak_bytes', 'epoch2_peak_bytes'):
        if key not in low or key not in high:
            continue
        slope = (high[key] - low[key]) / (high['edges'] - low['edges'])
        name = key.replace('_peak_bytes', '')
        out[f'{name}_bytes_per_edge'] = slope
        if key == 'epoch_peak_bytes':
            out['epoch_intercept_bytes'] = high[key] - slope * high['edges']
            if slope > 0:
                out['largest_edges_in_24GiB'] = int(high['edges']
                                                    + (24 * GiB - high[key]) / slope)
    return out


def _gib(value) -> str:
    return f'{value / GiB:.2f}' if isinstance(value, (int, float)) else '-'


def _s(value) -> str:
    return f'{value:.1f}' if isinstance(value, (int, float)) else '-'


def _row(p) -> str:
    shape = f"{p['heads']}x{p['channels']}"
    head = f"{p['layer']:>4} {p['nodes']:>9} {p['edges']:>10} {shape:>5} |"
    if p.get('status') != 'ok':
        cap = p.get('cap_bytes')
        where = f" in {p['oom_stage']}" if 'oom_stage' in p else ''
        note = f"{p.get('status')}{where}" + (f' (cap {cap / GiB:.1f} GiB)' if cap else '')
        return f"{head} {note}: {p.get('error', '')[:90]}"
    build = (f"{_s(p.get('build_s'))}s {_gib(p.get('build_peak_rise_bytes'))}"
             if 'build_s' in p else '-')
    return (f"{head} {_s(p['gen_s']):>5}s {_gib(p['gen_peak_rise_bytes']):>5} | {build:>12} "
            f"{_gib(p.get('cache_bytes')):>5} | {_s(p.get('epoch1_s')):>6} "
            f"{_s(p.get('epoch2_s')):>6} | {_gib(p.get('epoch1_peak_bytes')):>6} "
            f"{_gib(p.get('epoch2_peak_bytes')):>6} {_gib(p['process_peak_bytes']):>6} | "
            f"{_gib(p['data_rss_bytes']):>5} {p['bytes_per_edge']:>8.0f}")


def print_points(title, points) -> None:
    header = (f"{'':>4} {'N':>9} {'E':>10} {'HxC':>5} | {'gen s GiB':>12} | "
              f"{'build s GiB':>12} {'cache':>5} | {'ep1 s':>6} {'ep2 s':>6} | "
              f"{'ep1pk':>6} {'ep2pk':>6} {'peak':>6} | {'data':>5} {'B/edge':>8}")
    print(f'\n{title}')
    print(header)
    print('-' * len(header))
    for p in points:
        print(_row(p))


def print_fits(title, fits) -> None:
    print(f'\n{title}')
    for name, f in fits.items():
        if not f:
            print(f'  {name}: fewer than two points that fit')
            continue
        line = (f"  {name}: marginal {f['epoch_bytes_per_edge']:.0f} B/edge (epoch 1 "
                f"{f.get('epoch1_bytes_per_edge', float('nan')):.0f}, epoch 2 "
                f"{f.get('epoch2_bytes_per_edge', float('nan')):.0f}), intercept "
                f"{f['epoch_intercept_bytes'] / GiB:.2f} GiB")
        if 'largest_edges_in_24GiB' in f:
            line += f", largest E in 24 GiB ~ {f['largest_edges_in_24GiB'] / 1e6:.1f}M"
        print(line + f"  (E = {', '.join(f'{e / 1e6:g}M' for e in f['edges'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes only')
    parser.add_argument('--cap-gib', type=float, default=14.0,
                        help='address-space cap of each child over its imports (lowered '
                        f'to leave {RESERVE_GIB:g} GiB available to others)')
    parser.add_argument('--features', type=int, default=128)
    parser.add_argument('--classes', type=int, default=8)
    parser.add_argument('--epochs', type=int, default=2, choices=(1, 2))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--out', type=Path, default=None,
                        help='JSON output (default benchmarks/results/large_graph.json, or '
                        'large_graph_quick.json with --quick)')
    # Internal: one measurement in a subprocess.
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--layer', choices=('ours', 'pyg'), help=argparse.SUPPRESS)
    parser.add_argument('--nodes', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--edges', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--heads', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--channels', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    if args.quick:  # five children, most of whose time is their imports
        main_point = None
        sweep_nodes, sweep_edges = 20_000, {'ours': [100_000, 400_000], 'pyg': [400_000]}
        shape_nodes = 5_000
        shape_edges = {'ours': [100_000, 400_000], 'pyg': []}
        shapes = [(8, 32)]
    else:
        main_point = (2_000_000, 50_000_000)
        sweep_nodes = 2_000_000
        edges = [1_000_000, 2_000_000, 4_000_000, 6_000_000, 8_000_000, 16_000_000]
        sweep_edges = {'ours': edges, 'pyg': edges}
        # Few nodes, many edges: the per-edge memory dominates the peak.
        shape_nodes = 20_000
        shape_edges = {'ours': [1_000_000, 4_000_000], 'pyg': [500_000, 1_000_000]}
        shapes = [(1, 8), (8, 8), (8, 32), (16, 16)]
    plan = []
    if main_point:
        plan.append(('main', 'ours', *main_point, 8, 8))
    for layer in ('ours', 'pyg'):
        plan += [('sweep', layer, sweep_nodes, e, 8, 8) for e in sweep_edges[layer]]
    for layer in ('ours', 'pyg'):
        plan += [('shapes', layer, shape_nodes, e, h, c) for h, c in shapes
                 for e in shape_edges[layer]]
    if main_point:  # PyG at the main point: expected not to fit (recorded as OOM)
        plan.append(('main', 'pyg', *main_point, 8, 8))

    started = time.strftime('%Y-%m-%d %H:%M:%S')
    load_before = os.getloadavg()
    results = {'main': [], 'sweep': [], 'shapes': []}
    failed = set()  # (group, layer, nodes, heads, channels) that ran out of memory
    for group, layer, nodes, edges, heads, channels in tqdm(plan, desc='benchmark points'):
        key = (group, layer, nodes, heads, channels)
        if key in failed:
            results[group].append({'layer': layer, 'nodes': nodes, 'edges': edges,
                                   'heads': heads, 'channels': channels, 'status': 'skipped',
                                   'error': 'a smaller E already ran out of memory'})
            continue
        point = run_point(layer, nodes, edges, heads, channels, args)
        if point.get('status') == 'OOM':
            failed.add(key)
        results[group].append(point)
        tqdm.write(_row(point))
    if args.quick:  # the largest sweep point of ours stands in for the main point
        results['main'] = [p for p in results['sweep'] if p['layer'] == 'ours'][-1:]

    sweep_fits = {layer: fit([p for p in results['sweep'] if p['layer'] == layer])
                  for layer in ('ours', 'pyg')}
    shape_groups = {}
    for p in results['shapes']:
        shape_groups.setdefault(f"{p['layer']} {p['heads']}x{p['channels']}", []).append(p)
    shape_fits = {name: fit(points) for name, points in sorted(shape_groups.items())}

    print(f'\ntorch {torch.__version__}, {args.threads} threads, {_cpu_name()}; load average '
          f'{load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end (a shared machine: '
          f'times vary with it)')
    print('gen: generation s and peak RSS rise; build: ours\' self-loops + CSR/CSC sort, s '
          'and peak RSS rise; cache: bytes it keeps; ep1/ep2: epoch s; ep1pk/ep2pk/peak: '
          'peak RSS (GiB, whole process) in epoch 1, 2, overall; data: RSS after data and '
          'model; B/edge: (epoch peak - data) / E')
    print_points('Main point', results['main'])
    print_points(f'E sweep at N={sweep_nodes}', results['sweep'])
    print_fits(f'Marginal bytes per edge at N={sweep_nodes} (slope of epoch peak RSS vs E '
               f'between the two largest E that fit)',
               sweep_fits)
    print_points(f'Heads x channels at N={shape_nodes}', results['shapes'])
    print_fits(f'Marginal bytes per edge by heads x channels at N={shape_nodes}', shape_fits)

    if args.out is None:
        name = 'large_graph_quick.json' if args.quick else 'large_graph.json'
        args.out = Path(__file__).parent / 'results' / name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import torch_geometric

    import gat_pyg
    args.out.write_text(json.dumps({
        'command': ' '.join(['python', 'benchmarks/bench_large_graph.py', *sys.argv[1:]]),
        'versions': {'torch': torch.__version__, 'torch_geometric': torch_geometric.__version__,
                     'gat_pyg': gat_pyg.__version__, 'python': sys.version.split()[0]},
        'threads': args.threads, 'cpu_count': os.cpu_count(), 'cpu': _cpu_name(),
        'memory_total_bytes': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'),
        'load_average_start': load_before, 'load_average_end': os.getloadavg(),
        'started': started, 'finished': time.strftime('%Y-%m-%d %H:%M:%S'),
        'model': 'gat_pyg.nn.models.GAT(features, C, classes, dropout=0.6, alpha=0.2, '
                 'nheads=H, conv=ours or PyG GATConv); Adam(lr=0.005, weight_decay=5e-4)',
        'graph': 'gat_pyg.data.synthetic_graph(N, E, num_features, num_classes, seed) '
                 '(defaults: homophily 0.7, power-law exponent 2.5, undirected)',
        'features': args.features, 'classes': args.classes, 'seed': args.seed,
        'definitions': {
            'bytes_per_edge': '(epoch peak RSS - RSS after data generation and model set-up)'
                              ' / E, per point',
            'marginal bytes_per_edge': 'slope of epoch peak RSS against E between the two '
                                       'largest E that fit, at fixed N and HxC',
            'largest_edges_in_24GiB': 'largest E + (24 GiB - its epoch peak) / marginal '
                                      'bytes per edge',
        },
        'main': results['main'], 'sweep': results['sweep'], 'sweep_fits': sweep_fits,
        'shapes': results['shapes'], 'shape_fits': shape_fits}, indent=2) + '\n')
    print(f'\nwrote {args.out}')


if __name__ == '__main__':
    main()
