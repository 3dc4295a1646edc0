"""Structured (filter) pruning: channel groups, physical compaction, and sparse weight files.

* :func:`compact` (also ``snnprune.compact``): the physically smaller dense model of a filter-pruned model;
  :func:`save_compact` / :func:`load_compact` / :func:`layer_widths` / :func:`shrink_`; :func:`export_files`
  writes the :data:`EXPORT_FILES` of a run.
* :func:`channel_groups`: which output channels are removed together (SEW ADD/AND/IAND shortcuts,
  downsample, BN and neurons following their conv); :func:`attach_filter_threshold` installs the coupled
  group soft-thresholds used by ``granularity="filter"``.
* :func:`save_sparse` / :func:`load_sparse`: values + bitmask files for unstructured-pruned weights.
"""

from snnprune.structured.compact import (
    EXPORT_FILES,
    compact,
    export_files,
    layer_widths,
    load_compact,
    recalibrate_bn,
    save_compact,
    shrink_,
)
from snnprune.structured.filter import GRANULARITIES, attach_filter_threshold
from snnprune.structured.groups import (
    BatchNormFollower,
    ChannelGroup,
    FollowConv,
    FollowScale,
    channel_groups,
    fold_removed_channels,
    is_resnet_like,
    is_transformer_like,
)
from snnprune.structured.sparse import load_sparse, save_sparse

__all__ = [
    "EXPORT_FILES",
    "GRANULARITIES",
    "BatchNormFollower",
    "ChannelGroup",
    "FollowConv",
    "FollowScale",
    "attach_filter_threshold",
    "channel_groups",
    "compact",
    "export_files",
    "fold_removed_channels",
    "is_resnet_like",
    "is_transformer_like",
    "layer_widths",
    "load_compact",
    "load_sparse",
    "recalibrate_bn",
    "save_compact",
    "save_sparse",
    "shrink_",
]
