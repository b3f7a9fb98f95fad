"""uhyve-ctl, hexo's VM runtime: runs unikernel images on KVM or an emulated CPU, checkpoints,
restores and migrates them.

Its one error type lives here, in the module every part of the runtime loads anyway (a module
of its own cost every `uhyve-ctl run` ~0.35 M instructions to find and load): every failure
uhyve-ctl reports to a user is an UhyveError whose message is one sentence."""


class UhyveError(Exception):
    """A failure of the VM runtime (guest memory, KVM, control, migration, paging)."""
