# Entry points for a fresh Debian 12 machine (run as root: installs Debian packages).
#   make demo    set up, build the NPB workloads, run them on KVM x86-64 and emulated arm64
#   make slurm-demo  set up, start a one-host Slurm whose node is the server + a board, run a
#                batch of NPB jobs through sbatch and hexo run, check them
#   make board-image  build the arm64 board image (cached in /var/cache/hexo/board; first
#                build ~10 min on an idle 2-core host, ~45 min on a loaded one)
#   make test    set up, build the board image and run the test suite
#   make bench   set up and run the pyperf benchmarks
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEBS := clang lld llvm llvm-14-dev newlib-source libgcc-12-dev-arm64-cross linux-libc-dev-arm64-cross \
        libc6-dev-arm64-cross make patch xz-utils python3-venv \
        openssh-server iproute2 valgrind qemu-user-static qemu-system-arm qemu-utils debootstrap cpio kmod \
        podman runc \
        slurmctld slurmd slurm-client munge
PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=25
# What hexo builds once (sysroots, the pass plugin, CRIU, board state) stays in this checkout;
# an installed hexo uses ~/.cache/hexo.
export HEXO_HOME ?= $(CURDIR)/build

.PHONY: deps board-image demo slurm-demo test bench clean

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@if ! dpkg -s $(DEBS) >/dev/null 2>&1; then \
	  apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
	    --no-install-recommends $(DEBS); fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	# setuptools' editable import hook costs ~20 ms at every interpreter start, more than a
	# VM boot; plain path entries give the same imports for free.
	for pth in $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/__editable__.hexo-*.pth; do \
	  printf '%s\n%s\n%s\n' "$(CURDIR)" "$(CURDIR)/uhyve-ctl" "$(CURDIR)/scheduler" > "$$pth"; done
	touch $@

demo: deps
	$(PY) -m hexo.demo

slurm-demo: deps
	$(PY) scheduler/slurm_demo.py

board-image: deps
	$(VENV)/bin/hexo board build

# Tests marked `alone` time against a stored measurement: they run after the rest, serially.
test: deps board-image
	status=0; $(PY) -m pytest $(PYTEST_ARGS) -m 'not alone' || status=$$?; \
	$(PY) -m pytest -n 0 -m alone || status=$$?; exit $$status

bench: deps board-image
	$(PY) bench/run.py
	$(PY) bench/io.py
	$(PY) bench/migration.py
	$(PY) bench/postcopy.py
	$(PY) bench/schedd.py
	$(PY) bench/sched_decisions.py
	$(PY) bench/corpus.py
	$(PY) bench/shortjob.py
	$(PY) bench/board_failure.py
	$(PY) bench/container.py
	$(PY) bench/fuzz_hypercalls.py
	$(PY) bench/board.py
	$(PY) bench/board_kvm.py

clean:
	rm -rf build $(VENV)
