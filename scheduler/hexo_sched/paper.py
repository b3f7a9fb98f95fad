"""Figures published in the HEXO paper (Olivier et al., HPDC'19), each with where it is stated.

Kept apart from the code that uses them so that every number the simulator takes from the paper
can be checked against one place, and every number it does not take from the paper is elsewhere
(simulation.ASSUMPTIONS).
"""

from __future__ import annotations

#: Board slowdown vs the Xeon, Potato board. §5.2 gives EP 3x, CG 30x, Kmeans 7.5x, UA 10x,
#: LU 13x for the consolidation jobs; §2 (Figure 1, class B) gives EP 2.2x, FT 7.3x, MG 16.9x.
POTATO_SLOWDOWN = {"EP": 3.0, "CG": 30.0, "Kmeans": 7.5, "UA": 10.0, "LU": 13.0}
POTATO_SLOWDOWN_FIG1 = {"EP": 2.2, "FT": 7.3, "MG": 16.9}

#: Checkpoint sizes at half of the execution, MB (Table 2; NPB class A unless noted).
CHECKPOINT_MB = {"BT": 45.0, "CG": 27.0, "DC": 191.0, "FT": 323.0, "IS": 266.0, "LU": 40.0,
                 "MG": 453.0, "SP": 47.0, "EP": 11.0, "UA": 37.0, "Kmeans": 5.7,
                 "MatrixMult": 47.0, "PCA": 32.0, "Blackscholes": 612.0, "Linpack": 1.5,
                 "Dhrystone": 1.2, "Whetstone": 1.2}

#: Board link speed, Mb/s (§5: "capped at 100Mb/s by the board's NIC").
BOARD_LINK_MBIT = 100.0

#: Table 1: whole-machine power in W at idle and with n busy threads, price in USD.
TABLE1 = {
    "xeon-e5-2637": {"cores": 4, "ram_mb": 64 * 1024, "power_w": {0: 60.0, 1: 83.0, 4: 124.0,
                                                                  8: 127.0}, "price_usd": 3049},
    "rpi3": {"cores": 4, "ram_mb": 1024, "power_w": {0: 1.75, 1: 2.0, 4: 4.35}, "price_usd": 35},
    "potato": {"cores": 4, "ram_mb": 2048, "power_w": {0: 1.8, 1: 2.1, 4: 2.9}, "price_usd": 45},
    "hikey": {"cores": 8, "ram_mb": 2048, "power_w": {0: 2.5, 1: 2.8, 4: 4.3, 8: 6.6},
              "price_usd": 119},
}

#: §5.2 job sets; the queue cycles through a set in this order.
JOB_SETS = {"EP": ("EP",), "CG": ("CG",), "EP+CG": ("EP", "CG"),
            "mix5": ("EP", "Kmeans", "UA", "LU", "CG")}

#: §5.2 setups: servers and Potato boards; 3 cores used on every machine.
SETUPS = {"X": (1, 0), "XP": (1, 1), "X3P": (1, 3), "2X": (2, 0)}
CORES_USED = 3

#: §5.2 Figure 9 (throughput) and Figure 10 (jobs/kJ): gains over X in percent, as the text
#: states them; None where the text gives no number.
THROUGHPUT_GAIN_PCT = {"EP": {"XP": 25.0, "X3P": 67.0}, "CG": {"XP": 4.3, "X3P": 13.0},
                       "EP+CG": {"XP": 16.0, "X3P": 33.0}, "mix5": {"XP": 11.0, "X3P": 30.0}}
JOBS_PER_KJ_GAIN_PCT = {"EP": {"XP": 22.0, "X3P": 56.0}, "CG": {"XP": None, "X3P": None},
                        "EP+CG": {"XP": None, "X3P": None}, "mix5": {"XP": 8.5, "X3P": 22.0}}

#: §3.4: the paper's slowdown model on NPB, Potato board (training fit).
MODEL_FIT = {"r": 0.95, "r2": 0.90}

#: Duration of one consolidation run, s (§5.2).
RUN_SECONDS = 3600.0
