"""The README's quick start runs as written (on a temp copy of the shared Cora files)."""
import re
import shutil
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / 'README.md'


def test_quick_start_trains_cora(tmp_path, shared_data):
    code = re.search(r'```python\n(.*?)```', README.read_text(), re.S).group(1)
    assert "Planetoid('data/Planetoid', 'Cora')" in code
    shutil.copytree(shared_data / 'Planetoid' / 'Cora', tmp_path / 'Planetoid' / 'Cora')
    code = code.replace("'data/Planetoid'", repr(str(tmp_path / 'Planetoid')))
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code, str(README), 'exec'), scope)
    conv1, conv2, data = scope['conv1'], scope['conv2'], scope['data']
    conv1.eval(), conv2.eval()
    with torch.no_grad():
        import torch.nn.functional as F
        pred = conv2(F.elu(conv1(data.x, data.edge_index)), data.edge_index).argmax(-1)
    accuracy = (pred[data.test_mask] == data.y[data.test_mask]).float().mean()
    assert accuracy > 0.75
