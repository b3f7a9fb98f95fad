"""The one error type of the scheduler: every failure it reports to a user is a SchedError
whose message is one sentence."""


class SchedError(Exception):
    """A failure of the scheduler (config, state, daemon API, hosts, model data)."""
