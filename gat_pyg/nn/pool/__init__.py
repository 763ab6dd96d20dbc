"""Graph-level readouts."""
from gat_pyg.nn.pool.global_attention_pool import GlobalAttentionPool

__all__ = ['GlobalAttentionPool']
