"""The one error type of the VM runtime: every failure uhyve-ctl reports to a user is an
UhyveError whose message is one sentence."""


class UhyveError(Exception):
    """A failure of the VM runtime (guest memory, KVM, control, migration, paging)."""
