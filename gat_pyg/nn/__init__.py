from gat_pyg.nn.conv import GATConv, GATv2Conv
from gat_pyg.nn import dense
from gat_pyg.nn.dropout import HeadwiseDropoutLinear, headwise_dropout_linear, input_dropout
from gat_pyg.nn.pool import GlobalAttentionPool
from gat_pyg.nn import models

__all__ = ['GATConv', 'GATv2Conv', 'GlobalAttentionPool', 'HeadwiseDropoutLinear', 'dense',
           'headwise_dropout_linear', 'input_dropout', 'models']
