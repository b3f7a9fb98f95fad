"""Linux processes built by `hexo build --linux`, checkpointed with CRIU and recoded for the
other ISA through the same transform core as unikernel checkpoints (hexo.retarget)."""
