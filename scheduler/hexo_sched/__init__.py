"""hexo's scheduler: which running jobs to offload from a server to arm64 boards, and when.

policy (state and decisions, no I/O), model (slowdown regression), counters (where the model's
inputs come from), energy (power models and accounting), simulation (simpy, same policies),
calibrate (measuring datasets), paper (the HEXO paper's figures), cli.
"""
