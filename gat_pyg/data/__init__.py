from gat_pyg.data.datasets import (
    DATASETS,
    dataset_names,
    default_root,
    get_spec,
    load_dataset,
    random_split,
)

__all__ = ['DATASETS', 'dataset_names', 'default_root', 'get_spec', 'load_dataset',
           'random_split']
