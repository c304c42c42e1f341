"""Self-supervised pre-training: MoCo-v2, DeepCluster-v2 and their HEXA variants with hard views.

Modules: `moco` and `deepcluster` (the methods), `hard_views` (adversarial and CutMix views),
`losses` (pure loss functions), `kmeans` (distributed spherical k-means); `trainer` (the loop) with
`sampling`, `optim`, `checkpoint`, `runlog` and `processes`; `config` and `augment` (recipes); `cli`.
Nothing heavy is imported here.
"""
