from gat_pyg.data.datasets import (
    DATASETS,
    MUTAG_ATOMS,
    dataset_names,
    default_root,
    fixed_split,
    get_spec,
    load_dataset,
    load_graph_dataset,
    random_split,
)
from gat_pyg.data.synthetic import synthetic_graph

__all__ = ['DATASETS', 'MUTAG_ATOMS', 'dataset_names', 'default_root', 'fixed_split',
           'get_spec', 'load_dataset', 'load_graph_dataset', 'random_split', 'synthetic_graph']
