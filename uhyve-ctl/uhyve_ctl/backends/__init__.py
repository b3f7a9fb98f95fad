"""What every CPU backend offers the VM: boot a vCPU at an entry point, run it until a stop.

A backend owns CPU state only. Guest RAM (memory.GuestMemory), the page tables
(paging.py) and hypercall semantics (hypercalls.py) are shared by all backends, so a KVM
backend for arm64 boards can be added next to the x86-64 one without touching them.

The interface lives in the package's own module, which every backend loads anyway (a module
of its own cost `uhyve-ctl run` ~0.35 M instructions), and without abc: an ABCMeta class
costs twice a plain one to make, on a path where every class costs ~10 us.
"""

from hexo.records import record


Exited = record("Exited", "status",
                doc="The guest called the EXIT hypercall.")


Crashed = record("Crashed", "reason pc", defaults=(None,),
                 doc="The guest faulted, or broke the hypercall ABI, and was stopped.")


TimedOut = record("TimedOut", "seconds")


Checkpointed = record("Checkpointed", "path", doc="The guest reached a migration point and "
                      "its checkpoint is durably written.")


StopReason = (Exited, Crashed, TimedOut, Checkpointed)    # why a run ended: one of these

# Called for each doorbell store: (hypercall number, guest address of its argument struct).
# Returns a StopReason to end the run, or None to resume the guest. (A string: the
# collections.abc module that would spell it costs a plain run ~1.3 ms to import.)
HypercallHandler = "Callable[[int, int], StopReason | None]"


# boot_info: passed in the first argument register (rdi / x0)
# page_table_root: CR3 on x86-64; informational on aarch64 (the guest sets TTBR0)
BootState = record("BootState", "entry stack_top boot_info page_table_root", doc="CPU state "
                   "at the first guest instruction, identical in meaning on every ISA.")


class Backend:
    """Each backend implements boot, run and registers."""
    name: str

    def __init__(self, memory, isa: str):
        self.memory = memory
        self.isa = isa

    def boot(self, state: BootState) -> None:
        """Create the vCPU and put it at `state`."""
        raise NotImplementedError

    def run(self, on_hypercall: HypercallHandler, timeout: float | None = None) -> StopReason:
        """Run until a hypercall handler, a fault or the timeout stops the guest."""
        raise NotImplementedError

    def counter_hz(self) -> int:
        """The shared page's counter_hz: the rate of a counter the booted guest can read
        for its clocks without exiting (hexo/abi.py SHARED_PAGE); 0 when it has none."""
        return 0

    def read_counter(self) -> int:
        """That counter now, as the guest would read it (the boot info's clock_counter)."""
        return 0

    def registers(self) -> dict[str, int]:
        """General-purpose registers, pc and sp, by their ISA names (for reports)."""
        raise NotImplementedError

    def close(self) -> None:
        pass
