"""Readout benchmark: gat_pyg.nn.GlobalAttentionPool against PyG's AttentionalAggregation
(same gate and value modules, same process, interleaved, medians), and the readout's share
of a GAT graph-classification step.

    python benchmarks/bench_pool.py            # prints a table, writes benchmarks/results/pool.json
    python benchmarks/bench_pool.py --quick

A batch of ``--graphs`` random graphs of 20-60 nodes (PROTEINS-like: about 2 undirected
edges per node), ``--features`` node features. Per point: forward+backward of the readout
(``x`` requires grad, values through a Linear, a 2-layer gate MLP), and of the three
:class:`gat_pyg.nn.GATConv` layers (4 heads x F/4) that feed it in a graph model, so the
readout's share of a step shows.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm


def make_batch(graphs: int, features: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(20, 61, (graphs, ), generator=gen)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    batch = torch.arange(graphs).repeat_interleave(sizes)
    num_nodes = int(ptr[-1])
    # Two random edges out of each node, within its own graph, both directions.
    offsets = ptr[batch]
    target = offsets[:, None] + (torch.rand(num_nodes, 2, generator=gen) * sizes[batch, None]).long()
    source = torch.arange(num_nodes).repeat_interleave(2)
    edge_index = torch.stack([torch.cat([source, target.view(-1)]),
                              torch.cat([target.view(-1), source])])
    x = torch.randn(num_nodes, features, generator=gen)
    return x, batch, edge_index


def measure(graphs, features, repeats):
    from torch_geometric.nn.aggr import AttentionalAggregation

    from gat_pyg.nn import GATConv, GlobalAttentionPool
    x, batch, edge_index = make_batch(graphs, features)
    torch.manual_seed(0)
    gate = torch.nn.Sequential(torch.nn.Linear(features, features), torch.nn.ReLU(),
                               torch.nn.Linear(features, 1))
    value = torch.nn.Linear(features, features)
    readouts = {'pyg': AttentionalAggregation(gate, value),
                'ours': GlobalAttentionPool(gate, value)}
    convs = torch.nn.ModuleList(GATConv(features, features // 4, heads=4) for _ in range(3))
    x = x.requires_grad_(True)
    grad = torch.randn(graphs, features)

    def readout_step(kind):
        def step():
            readouts[kind](x, batch, dim_size=graphs).backward(grad)
        return step

    def convs_step():
        h = x
        for conv in convs:
            h = torch.nn.functional.elu(conv(h, edge_index))
        h.sum().backward()

    times = {'pyg': [], 'ours': [], 'convs': []}
    steps = {'pyg': readout_step('pyg'), 'ours': readout_step('ours'), 'convs': convs_step}
    for name, step in steps.items():
        step()  # warm-up (ours: builds the extension and the cached graph)
    for _ in range(repeats):  # interleaved, so that a slow phase hits all alike
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {'graphs': graphs, 'nodes': x.size(0), 'edges': edge_index.size(1),
            'features': features, 'pyg_ms': 1e3 * median['pyg'],
            'ours_ms': 1e3 * median['ours'], 'speedup': median['pyg'] / median['ours'],
            'convs_ms': 1e3 * median['convs'],
            'readout_share': median['ours'] / (median['ours'] + median['convs'])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes, a few seconds')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--out', type=Path, default=Path(__file__).parent / 'results' / 'pool.json')
    args = parser.parse_args()
    points = [(128, 64), (1024, 64), (8192, 64), (8192, 128)]
    if args.quick:
        points, args.repeats = [(128, 32), (1024, 32)], 3
    rows = [measure(g, f, args.repeats) for g, f in tqdm(points, desc='points')]
    print(f"{'graphs':>7} {'nodes':>8} {'F':>4} | {'PyG f+b':>9} {'ours f+b':>9} "
          f"{'speed-up':>8} | {'3 GATConv':>10} {'readout share':>13}")
    for r in rows:
        print(f"{r['graphs']:>7} {r['nodes']:>8} {r['features']:>4} | {r['pyg_ms']:>7.2f}ms "
              f"{r['ours_ms']:>7.2f}ms {r['speedup']:>7.2f}x | {r['convs_ms']:>8.1f}ms "
              f"{100 * r['readout_share']:>12.1f}%")
    import torch_geometric

    import gat_pyg
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        'command': 'python benchmarks/bench_pool.py' + (' --quick' if args.quick else ''),
        'threads': torch.get_num_threads(), 'rows': rows,
        'versions': {'gat_pyg': gat_pyg.__version__, 'torch': torch.__version__,
                     'torch_geometric': torch_geometric.__version__}}, indent=2) + '\n')
    print(f'written to {args.out}')


if __name__ == '__main__':
    main()
