"""Real node-classification datasets through PyG's own classes, from a local root only.

Nothing is ever downloaded: the raw files must already lie under ``root`` in PyG's layout
(``root/<Family>/<Name>/raw/...``). They are copied once into a work folder, because PyG
writes ``processed/`` beside ``raw/`` and the root is often shared and read-only.
"""
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

    def load(self, root: str) -> InMemoryDataset:
        import torch_geometric.datasets as pyg_datasets
        cls: Callable[..., InMemoryDataset] = getattr(pyg_datasets, self.family)
        return cls(str(Path(root) / self.family), self.name)


def _planetoid(name: str) -> DatasetSpec:
    parts = ('x', 'tx', 'allx', 'y', 'ty', 'ally', 'graph', 'test.index')
    return DatasetSpec('Planetoid', name, name,
                       tuple(f'ind.{name.lower()}.{part}' for part in parts), True)


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
}
_ALIASES = {
    'amazon-computers': 'computers', 'amazoncomputers': 'computers',
    'amazon-photo': 'photo', 'amazonphoto': 'photo',
    'coauthor-cs': 'cs', 'coauthorcs': 'cs',
    'coauthor-physics': 'physics', 'coauthorphysics': 'physics',
    'citationfull-cora_ml': 'cora_ml', 'citationfull-citeseer': 'citeseer_full',
    'citationfull-dblp': 'dblp',
}


def dataset_names() -> List[str]:
    return [f'{spec.family}/{spec.name}' if spec.family == 'CitationFull' else spec.name
            for spec in DATASETS.values()]


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


def writable_root(root: Path, spec: DatasetSpec) -> Path:
    """A work copy of ``spec``'s raw files under :func:`cache_dir`, where PyG may write
    ``processed/``. The given root is never written to (it is often shared and read-only,
    and permission bits do not stop root). The copy is made once per absolute root path.
    """
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    work = cache_dir() / 'work' / key
    target = work / spec.family / spec.folder / 'raw'
    source = root / spec.family / spec.folder / 'raw'
    if not all((target / name).exists() for name in spec.raw_files):
        target.mkdir(parents=True, exist_ok=True)
        for name in spec.raw_files:
            shutil.copy2(source / name, target / name)
    return work


def load_dataset(name: str, root: Optional[os.PathLike] = None) -> Tuple[DatasetSpec, Data]:
    """Loads dataset ``name`` from ``root`` (default :func:`default_root`) with PyG's class.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: raw files missing; the message lists each expected path.
    """
    spec = get_spec(name)
    root = Path(root) if root is not None else default_root()
    raw_dir = root / spec.family / spec.folder / 'raw'
    missing = [str(raw_dir / f) for f in spec.raw_files if not (raw_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Dataset '{spec.name}' needs its raw files under '{raw_dir}' (PyG layout "
            f"root/{spec.family}/{spec.folder}/raw/); nothing is downloaded. Missing: "
            + ', '.join(missing) + f". Pass --root (or set ${DATA_ENV}) to the folder that "
            f"holds '{spec.family}/'.")
    dataset = spec.load(str(writable_root(root, spec)))
    return spec, dataset[0]


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
