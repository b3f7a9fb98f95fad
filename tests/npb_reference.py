"""Official NPB 3.3 verification values, kept apart from the kernels' own copies so that a
test checks the printed results against the specification, not against the program."""

import re

EP = {"S": (-3.247834652034740e+3, -6.958407078382297e+3),
      "W": (-2.863319731645753e+3, -6.320053679109499e+3),
      "A": (-4.295875165629892e+3, -1.580732573678431e+4)}
CG = {"S": 8.5971775078648, "W": 10.362595087124, "A": 17.130235054029}
MG = {"S": 0.5307707005734e-04, "W": 0.6467329375339e-05, "A": 0.2433365309069e-05}
FT = {"S": [(5.546087004964e+02, 4.845363331978e+02), (5.546385409189e+02, 4.865304269511e+02),
            (5.546148406171e+02, 4.883910722336e+02), (5.545423607415e+02, 4.901273169046e+02),
            (5.544255039624e+02, 4.917475857993e+02), (5.542683411902e+02, 4.932597244941e+02)],
      "W": [(5.673612178944e+02, 5.293246849175e+02), (5.631436885271e+02, 5.282149986629e+02),
            (5.594024089970e+02, 5.270996558037e+02), (5.560698047020e+02, 5.260027904925e+02),
            (5.530898991250e+02, 5.249400845633e+02), (5.504159734538e+02, 5.239212247086e+02)],
      "A": [(5.046735008193e+02, 5.114047905510e+02), (5.059412319734e+02, 5.098809666433e+02),
            (5.069376896287e+02, 5.098144042213e+02), (5.077892868474e+02, 5.101336130759e+02),
            (5.085233095391e+02, 5.104914655194e+02), (5.091487099959e+02, 5.107917842803e+02)]}


_TIMING = re.compile(r"(?i)time|mop/s")


def untimed(out: str) -> str:
    """NPB output without its timing lines, which differ between any two runs."""
    return "".join(line for line in out.splitlines(True) if not _TIMING.search(line))


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
    elif kernel == "mg":
        rnm2 = float(re.search(r"L2 Norm is\s+(\S+)", out)[1])
        assert abs(rnm2 - MG[klass]) / MG[klass] <= 1e-8, rnm2
    elif kernel == "ft":
        sums = [complex(float(m[1]), float(m[2]))
                for m in re.finditer(r"Checksum =\s+(\S+)\s+(\S+)", out)]
        refs = [complex(*v) for v in FT[klass]]
        assert len(sums) == len(refs), out[-2000:]
        assert all(abs(s - r) / abs(r) <= 1e-12 for s, r in zip(sums, refs)), sums
    elif kernel == "is":
        assert "Partial verification: 51 of 51 checks passed" in out, out[-2000:]
    else:
        raise ValueError(kernel)
