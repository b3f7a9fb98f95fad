"""Official NPB 3.3 verification values, kept apart from the kernels' own copies so that a
test checks the printed results against the specification, not against the program."""

import re

EP = {"S": (-3.247834652034740e+3, -6.958407078382297e+3),
      "W": (-2.863319731645753e+3, -6.320053679109499e+3),
      "A": (-4.295875165629892e+3, -1.580732573678431e+4)}
CG = {"S": 8.5971775078648, "W": 10.362595087124, "A": 17.130235054029}


def check(kernel: str, klass: str, out: str) -> None:
    """Raise AssertionError unless `out` is a verified NPB run of kernel/class."""
    assert re.search(r"Class\s+=\s+" + klass + r"\b", out), out[-2000:]
    assert re.search(r"Verification\s+=\s+SUCCESSFUL", out), out[-2000:]
    if kernel == "ep":
        m = re.search(r"Sums =\s+(\S+)\s+(\S+)", out)
        sx, sy = float(m[1]), float(m[2])
        rx, ry = EP[klass]
        assert abs((sx - rx) / rx) <= 1e-8 and abs((sy - ry) / ry) <= 1e-8, (sx, sy)
    elif kernel == "cg":
        zeta = float(re.search(r"Zeta is\s+(\S+)", out)[1])
        assert abs(zeta - CG[klass]) / CG[klass] <= 1e-10, zeta
    elif kernel == "is":
        assert "Partial verification: 51 of 51 checks passed" in out, out[-2000:]
    else:
        raise ValueError(kernel)
