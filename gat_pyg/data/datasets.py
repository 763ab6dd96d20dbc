"""Real node- and graph-classification datasets through PyG's own classes, from a local
root only.

Nothing is ever downloaded: the raw files must already lie under ``root`` in PyG's layout
(``root/<Family>/<Name>/raw/...``, e.g. ``root/TUDataset/MUTAG/raw/MUTAG_A.txt``). They are
copied once into a work folder, because PyG writes ``processed/`` beside ``raw/`` and the
root is often shared and read-only.
"""
import copy
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch_geometric.data import Data, InMemoryDataset

DATA_ENV = 'GAT_PYG_DATA'
CACHE_ENV = 'GAT_PYG_CACHE'


@dataclass(frozen=True)
class DatasetSpec:
    family: str  # PyG class name and folder under the root
    name: str  # PyG's name argument
    folder: str  # the dataset's folder under root/<family>/
    raw_files: Tuple[str, ...]
    public_split: bool
    task: str = 'node'  # 'node': one graph, classify its nodes; 'graph': classify graphs
    metric: str = 'accuracy'  # a key of gat_pyg.metrics.METRICS
    fixed_splits: int = 1  # splits shipped with the data; masks [N, k] when k > 1
    # Raw files read only when continuous node attributes are asked for (TU datasets).
    attribute_files: Tuple[str, ...] = ()

    def load(self, root: str, **kwargs) -> InMemoryDataset:
        import torch_geometric.datasets as pyg_datasets
        cls: Callable[..., InMemoryDataset] = getattr(pyg_datasets, self.family)
        return cls(str(Path(root) / self.family), self.name, **kwargs)


def _planetoid(name: str) -> DatasetSpec:
    parts = ('x', 'tx', 'allx', 'y', 'ty', 'ally', 'graph', 'test.index')
    return DatasetSpec('Planetoid', name, name,
                       tuple(f'ind.{name.lower()}.{part}' for part in parts), True)


def _tu_dataset(name: str, node_labels: bool = True, edge_labels: bool = False,
                node_attributes: bool = False) -> DatasetSpec:
    """A TU graph-classification dataset, read as ``TUDataset(root, name)`` with its node
    (and edge) labels one-hot encoded as features. Its continuous node attributes, if it
    has them, are used only on request (PyG's ``use_node_attr``), and only then is their
    file needed."""
    parts = ['A', 'graph_indicator', 'graph_labels']
    parts += ['node_labels'] if node_labels else []
    parts += ['edge_labels'] if edge_labels else []
    return DatasetSpec('TUDataset', name, name, tuple(f'{name}_{part}.txt' for part in parts),
                       False, task='graph',
                       attribute_files=(f'{name}_node_attributes.txt', ) if node_attributes
                       else ())


def _heterophilous(name: str) -> DatasetSpec:
    """A binary heterophilous graph of Platonov et al. (2023), read as
    ``HeterophilousGraphDataset(root, name)`` with its 10 fixed splits (masks ``[N, 10]``)
    and scored by ROC-AUC, as in the paper."""
    folder = name.lower()
    return DatasetSpec('HeterophilousGraphDataset', name, folder, (f'{folder}.npz', ), True,
                       metric='roc_auc', fixed_splits=10)


DATASETS: Dict[str, DatasetSpec] = {
    'cora': _planetoid('Cora'),
    'citeseer': _planetoid('CiteSeer'),
    'pubmed': _planetoid('PubMed'),
    'computers': DatasetSpec('Amazon', 'Computers', 'Computers',
                             ('amazon_electronics_computers.npz', ), False),
    'photo': DatasetSpec('Amazon', 'Photo', 'Photo', ('amazon_electronics_photo.npz', ),
                         False),
    'cs': DatasetSpec('Coauthor', 'CS', 'CS', ('ms_academic_cs.npz', ), False),
    'physics': DatasetSpec('Coauthor', 'Physics', 'Physics', ('ms_academic_phy.npz', ),
                           False),
    'cora_ml': DatasetSpec('CitationFull', 'Cora_ML', 'cora_ml', ('cora_ml.npz', ), False),
    'citeseer_full': DatasetSpec('CitationFull', 'CiteSeer', 'citeseer', ('citeseer.npz', ),
                                 False),
    'dblp': DatasetSpec('CitationFull', 'DBLP', 'dblp', ('dblp.npz', ), False),
    'tolokers': _heterophilous('Tolokers'),
    'minesweeper': _heterophilous('Minesweeper'),
    'mutag': _tu_dataset('MUTAG', edge_labels=True),
    'proteins': _tu_dataset('PROTEINS', node_attributes=True),
    'enzymes': _tu_dataset('ENZYMES', node_attributes=True),
    'nci1': _tu_dataset('NCI1'),
    'nci109': _tu_dataset('NCI109'),
    'ptc_mr': _tu_dataset('PTC_MR', edge_labels=True),
    'imdb-binary': _tu_dataset('IMDB-BINARY', node_labels=False),
    'imdb-multi': _tu_dataset('IMDB-MULTI', node_labels=False),
}
# The node labels of MUTAG, in the order of its one-hot features (from its README.txt).
MUTAG_ATOMS = ('C', 'N', 'O', 'F', 'I', 'Cl', 'Br')
_ALIASES = {
    'amazon-computers': 'computers', 'amazoncomputers': 'computers',
    'amazon-photo': 'photo', 'amazonphoto': 'photo',
    'coauthor-cs': 'cs', 'coauthorcs': 'cs',
    'coauthor-physics': 'physics', 'coauthorphysics': 'physics',
    'citationfull-cora_ml': 'cora_ml', 'citationfull-citeseer': 'citeseer_full',
    'citationfull-dblp': 'dblp',
    'ptc-mr': 'ptc_mr', 'imdb_binary': 'imdb-binary', 'imdb_multi': 'imdb-multi',
}


def dataset_names(task: Optional[str] = None) -> List[str]:
    """The known datasets (of ``task``, ``'node'`` or ``'graph'``, if given)."""
    return [f'{spec.family}/{spec.name}' if spec.family == 'CitationFull' else spec.name
            for spec in DATASETS.values() if task is None or spec.task == task]


def get_spec(name: str) -> DatasetSpec:
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset '{name}'. Known: "
                         f"{', '.join(sorted(DATASETS))} (case-insensitive; also "
                         f"{', '.join(sorted(_ALIASES))})")
    return DATASETS[key]


def default_root() -> Path:
    """``$GAT_PYG_DATA``, else ``~/.cache/gat_pyg/data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path.home() / '.cache' / 'gat_pyg' / 'data'


def cache_dir() -> Path:
    """Writable folder for processed copies: ``$GAT_PYG_CACHE``, else
    ``~/.cache/gat_pyg``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / '.cache' / 'gat_pyg'


def writable_root(root: Path, spec: DatasetSpec, files: Tuple[str, ...] = ()) -> Path:
    """A work copy of ``files`` (default: ``spec``'s raw files) under :func:`cache_dir`,
    where PyG may write ``processed/``. The given root is never written to (it is often
    shared and read-only, and permission bits do not stop root). The copy is made once per
    absolute root path and set of files: PyG processes what the raw folder holds, so
    another set of files gets its own folder."""
    files = files or spec.raw_files
    extra = sorted(set(files) - set(spec.raw_files))
    key = hashlib.sha1('|'.join([str(root.resolve()), *extra]).encode()).hexdigest()[:12]
    work = cache_dir() / 'work' / key
    target = work / spec.family / spec.folder / 'raw'
    source = root / spec.family / spec.folder / 'raw'
    if not all((target / name).exists() for name in files):
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy2(source / name, target / name)
    return work


def _load(name: str, root: Optional[os.PathLike], task: str,
          node_attributes: bool = False) -> Tuple[DatasetSpec, InMemoryDataset]:
    """PyG's dataset ``name`` of ``task`` from a work copy of ``root``'s raw files."""
    spec = get_spec(name)
    if node_attributes and not spec.attribute_files:
        having = ', '.join(s.name for s in DATASETS.values() if s.attribute_files)
        raise ValueError(f"'{spec.name}' has no continuous node attributes (datasets with "
                         f"them: {having})")
    files = spec.raw_files + (spec.attribute_files if node_attributes else ())
    if spec.task != task:
        other = {'node': 'node-classification', 'graph': 'graph-classification'}[spec.task]
        raise ValueError(f"'{spec.name}' is a {other} dataset: use --task {spec.task} "
                         f"(known for --task {task}: {', '.join(dataset_names(task))})")
    root = Path(root) if root is not None else default_root()
    raw_dir = root / spec.family / spec.folder / 'raw'
    missing = [str(raw_dir / f) for f in files if not (raw_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Dataset '{spec.name}' needs its raw files under '{raw_dir}' (PyG layout "
            f"root/{spec.family}/{spec.folder}/raw/); nothing is downloaded. Missing: "
            + ', '.join(missing) + f". Pass --root (or set ${DATA_ENV}) to the folder that "
            f"holds '{spec.family}/'.")
    work = str(writable_root(root, spec, files))
    return spec, spec.load(work, use_node_attr=True) if node_attributes else spec.load(work)


def load_dataset(name: str, root: Optional[os.PathLike] = None) -> Tuple[DatasetSpec, Data]:
    """Loads the node-classification dataset ``name`` from ``root`` (default
    :func:`default_root`) with PyG's class; returns its spec and its one graph.

    Raises:
        ValueError: unknown name, or a graph-classification dataset.
        FileNotFoundError: raw files missing; the message lists each expected path.
    """
    spec, dataset = _load(name, root, 'node')
    return spec, dataset[0]


class _StandardizeColumns:
    """A transform that z-scores the first ``len(mean)`` feature columns of a graph."""
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean, self.std = mean, std

    def __call__(self, data: Data) -> Data:
        data = copy.copy(data)
        columns = self.mean.numel()
        data.x = torch.cat([(data.x[:, :columns] - self.mean) / self.std,
                            data.x[:, columns:]], dim=-1)
        return data


def load_graph_dataset(name: str, root: Optional[os.PathLike] = None,
                       degree_features: bool = False,
                       node_attributes: bool = False) -> Tuple[DatasetSpec, InMemoryDataset]:
    """Loads the graph-classification dataset ``name`` (a TU dataset) from ``root`` (default
    :func:`default_root`): ``TUDataset`` read from ``root/TUDataset/<NAME>/raw/``.

    With ``node_attributes`` (datasets that have them, e.g. ENZYMES and PROTEINS), the
    continuous node attributes come first in the features, each standardised to zero mean
    and unit variance over all nodes of the dataset (no label is used; their raw scales
    differ by orders of magnitude), followed by the one-hot node labels.

    With ``degree_features``, each node's degree, one-hot encoded up to the largest degree
    in the dataset (``OneHotDegree(max_degree, cat=True)``), is appended to its features.
    Datasets without node features (IMDB-BINARY, IMDB-MULTI) always get these as their
    only features, as in the literature (Xu et al., 2019). They come from the structure
    alone, not from any label.

    Raises:
        ValueError: unknown name, or a node-classification dataset.
        FileNotFoundError: raw files missing; the message lists each expected path.
    """
    spec, dataset = _load(name, root, 'graph', node_attributes)
    transforms: List[Callable[[Data], Data]] = []
    if node_attributes:
        attributes = torch.cat([graph.x[:, :dataset.num_node_attributes] for graph in dataset])
        transforms.append(_StandardizeColumns(attributes.mean(0),
                                              attributes.std(0).clamp(min=1e-12)))
    if degree_features or dataset.num_node_features == 0:
        from torch_geometric.transforms import OneHotDegree
        from torch_geometric.utils import degree

        # OneHotDegree counts the edges leaving each node (row 0 of edge_index).
        max_degree = max(int(degree(graph.edge_index[0], graph.num_nodes).max())
                         for graph in dataset if graph.num_nodes > 0)
        transforms.append(OneHotDegree(max_degree, cat=True))
    if transforms:
        from torch_geometric.transforms import Compose
        dataset.transform = Compose(transforms)
    return spec, dataset


def random_split(data: Data, seed: int, train_per_class: int = 20,
                 val_per_class: int = 30) -> Data:
    """The split of Shchur et al. (2018) for datasets without a public one: per class,
    ``train_per_class`` training and ``val_per_class`` validation nodes drawn with
    ``seed``; every other node is a test node. Sets ``train_mask``/``val_mask``/``test_mask``.
    """
    generator = torch.Generator().manual_seed(seed)
    y = data.y.view(-1)
    train = torch.zeros(y.numel(), dtype=torch.bool)
    val = torch.zeros_like(train)
    for cls in range(int(y.max()) + 1):
        members = (y == cls).nonzero().view(-1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        train[members[:train_per_class]] = True
        val[members[train_per_class:train_per_class + val_per_class]] = True
    data = data.clone()
    data.train_mask, data.val_mask, data.test_mask = train, val, ~(train | val)
    return data


def fixed_split(data: Data, split: int) -> Data:
    """Split ``split`` of a dataset shipped with several fixed splits (masks of shape
    ``[N, k]``, such as the heterophilous graphs' ten): a copy whose ``train_mask``,
    ``val_mask`` and ``test_mask`` are that split's columns, of shape ``[N]``.

    Raises:
        ValueError: If the masks are not ``[N, k]`` or ``split`` is not in ``0..k-1``.
    """
    if data.train_mask.dim() != 2:
        raise ValueError('--split chooses among several fixed splits, but this dataset has '
                         'a single split (random splits are chosen with --split-seed)')
    num_splits = data.train_mask.size(1)
    if not 0 <= split < num_splits:
        raise ValueError(f'--split must lie in 0..{num_splits - 1} (got {split})')
    data = data.clone()
    for name in ('train_mask', 'val_mask', 'test_mask'):
        data[name] = data[name][:, split].contiguous()
    return data
