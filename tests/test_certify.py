"""`hexo certify`: unmigrated and migrated runs of a job in both directions, compared."""

import json

from conftest import HEXO, ROOT, needs_kvm, run

TIMINGS = "Time in seconds|Mop/s"        # what NPB prints that no two runs share


@needs_kvm
def test_npb_is_certifies_at_default_points_both_ways_and_a_round_trip(images):
    image = images.get("npb-is", "S")
    p = run([HEXO, "certify", image, "--json", "--ignore", TIMINGS, "--by", "points"])
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)
    assert result["ok"] and result["points_total"] == 10 and result["points"] == [1, 5, 9]
    legs = [r["legs"] for r in result["runs"]]
    assert legs[:2] == [[["x86_64", None]], [["aarch64", None]]]
    for src, dst in (("x86_64", "aarch64"), ("aarch64", "x86_64")):
        assert all([[src, p], [dst, None]] in legs for p in (1, 5, 9))
    assert [["x86_64", 1], ["aarch64", 8], ["x86_64", None]] in legs
    assert all(r["identical"] and r["exit_status"] == 0 for r in result["runs"])
    table = run([HEXO, "certify", image, "--points", "50%", "--by", "points", "--ignore",
                 TIMINGS])
    assert table.returncode == 0, table.stderr
    assert "aarch64 -> x86_64 at 5" in table.stdout and "identical" in table.stdout
    assert "every migrated run is identical" in table.stdout


@needs_kvm
def test_any_difference_fails_the_check_and_is_shown(images):
    """The timings NPB prints differ between runs: compared, they fail the check."""
    image = images.get("npb-is", "S")
    p = run([HEXO, "certify", image, "--points", "3", "--json"])
    assert p.returncode == 1, p.stderr
    rows = json.loads(p.stdout)["runs"]
    assert rows[0]["reference"] and not any(r["identical"] for r in rows[1:])
    assert all(r["difference"].startswith("stdout line 15: 'Time in seconds") for r in rows[1:])


@needs_kvm
def test_a_broken_transform_is_caught(images, monkeypatch, capsys):
    """A transform defect (the resumed pc points nowhere): every migration to the other ISA
    is refused at restore, the check says so per run and fails; the unmigrated runs still
    agree."""
    from hexo import retarget
    from uhyve_ctl import certify
    real = retarget.retarget

    def broken(state, areas, image, to_isa):
        new_state, new_areas = real(state, areas, image, to_isa)
        if state["isa"] != to_isa:
            new_state = dict(new_state, context=dict(new_state["context"],
                                                     pc=state["mem_size"] + 0x10000))
        return new_state, new_areas
    monkeypatch.setattr(retarget, "retarget", broken)
    code = certify.main([str(images.get("npb-is", "S")), "--points", "5", "--json",
                         "--ignore", TIMINGS])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and not result["ok"]
    verdicts = {r["run"]: r["difference"] for r in result["runs"]}
    assert verdicts["x86_64 unmigrated"] is None and verdicts["aarch64 unmigrated"] is None
    assert verdicts["x86_64 -> aarch64 at 5"].startswith("aarch64 VM could not start: pc ")
    assert verdicts["aarch64 -> x86_64 at 5"].startswith("x86_64 VM could not start: pc ")


@needs_kvm
def test_bad_requests_are_refused_in_one_line(images):
    image = images.get("npb-is", "S")
    for points, why in (("0", "outside the 1-10 migration points"),
                        ("11", "outside the 1-10 migration points"),
                        ("half", "neither a percentage nor a point number")):
        p = run([HEXO, "certify", image, "--points", points])
        assert p.returncode == 2 and why in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    plain = run([HEXO, "certify", images.plain("npb-is", "S")])
    assert plain.returncode == 2 and "built with --no-migratable" in plain.stderr


@needs_kvm
def test_guest_arguments_and_both_output_streams_are_compared(tmp_path):
    """chatty prints to stdout and stderr with a migration point after each pair of lines:
    its arguments reach every run, and both streams are compared whole."""
    from conftest import ROOT
    image = tmp_path / "chatty.hexo"
    b = run([HEXO, "build", ROOT / "tests" / "programs" / "chatty.c", "--migratable", "-o",
             image])
    assert b.returncode == 0, b.stderr
    p = run([HEXO, "certify", image, "--points", "1,50%,12", "--by", "points", "--json", "--",
             "lines", "12"])
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)
    assert result["args"] == ["lines", "12"] and result["points_total"] == 12
    assert result["points"] == [1, 6, 12] and all(r["identical"] for r in result["runs"])
    assert len(result["runs"]) == 2 + 6 + 1


@needs_kvm
def test_a_job_that_writes_files_and_reads_its_environment_certifies(tmp_path):
    """--mount and --env reach every run, fresh and restored."""
    image = tmp_path / "file_io.hexo"
    p = run([HEXO, "build", "--workload", "libc-fileio", "--auto-points", "-o", image])
    assert p.returncode == 0, p.stderr
    data = tmp_path / "data"
    data.mkdir()
    p = run([HEXO, "certify", image, "--mount", f"{data}:/data", "--json", "--", "/data"],
            timeout=900)
    assert p.returncode == 0 and json.loads(p.stdout)["ok"], p.stdout + p.stderr
    assert [d.name for d in data.iterdir()] == ["hexo_file_io.d"]
    env_image = tmp_path / "environment.hexo"
    p = run([HEXO, "build", ROOT / "tests" / "programs" / "environment.c", "--auto-points",
             "-o", env_image])
    assert p.returncode == 0, p.stderr
    p = run([HEXO, "certify", env_image, "--env", "HEXO_PARAM=certified", "--points", "1,9",
             "--json", "--", "12"])
    result = json.loads(p.stdout)
    assert p.returncode == 0 and result["ok"] and result["points_total"] == 13, p.stderr
    p = run([HEXO, "certify", env_image, "--mount", str(tmp_path / "missing")])
    assert p.returncode == 2 and "is not a directory" in p.stderr


@needs_kvm
def test_a_filter_reading_stdin_certifies_with_its_input(tmp_path):
    """--stdin feeds the job's input (a Benchmarks Game filter such as k-nucleotide had only
    /dev/null): one open file for all the legs of a run, so a migrated job reads on where it
    stopped instead of reading its input again or not at all. The input (180 KB) spans
    read-ahead windows: a checkpoint gives what the guest had not read back to the file."""
    image = tmp_path / "stdin_filter.hexo"
    p = run([HEXO, "build", ROOT / "tests" / "programs" / "stdin_filter.c", "--auto-points",
             "-o", image])
    assert p.returncode == 0, p.stderr
    data = tmp_path / "input.txt"
    data.write_text("".join(f"line {i} " + "ACGT" * (i % 40) + "\n" for i in range(2000)))
    p = run([HEXO, "certify", image, "--stdin", data, "--by", "points", "--json"])
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)
    assert result["ok"] and result["points_total"] == 2001
    assert all(r["exit_status"] == 0 for r in result["runs"])
    # without --stdin the job reads an empty input (exit 3, its main's point only)
    p = run([HEXO, "certify", image, "--json"])
    result = json.loads(p.stdout)
    assert result["points_total"] == 1 and result["runs"][0]["exit_status"] == 3
    p = run([HEXO, "certify", image, "--stdin", tmp_path / "missing"])
    assert p.returncode == 2 and "--stdin" in p.stderr


@needs_kvm
def test_percentages_are_of_the_run_time_by_default(images):
    """phases.c passes 400 points in a quick set-up and 400 in a quick print-out, and 10 in
    the compute phase between them, where it spends nearly all its time (as PolyBench/C
    does): by time, 10 %, 50 % and 90 % all land in the compute phase (points 401-410); by
    points, they land in the set-up, the middle and the print-out."""
    image = images.program("phases", migratable=True)
    by_time = json.loads(run([HEXO, "certify", image, "--json", "--", "10"]).stdout)
    assert by_time["ok"] and by_time["by"] == "time" and by_time["points_total"] == 810
    assert len(by_time["points"]) == 3 and all(401 <= p <= 410 for p in by_time["points"])
    by_points = json.loads(run([HEXO, "certify", image, "--by", "points", "--json", "--",
                                "10"]).stdout)
    assert by_points["ok"] and by_points["points"] == [81, 405, 729]


def test_an_image_without_migration_points_is_refused_before_any_run(images):
    """Its manifest says so (0 call sites): refused at once, not after two full runs (bzip2
    took 27 s to be told). The guest memory asked for is too small for any run to start, so
    the message shows that no run was made."""
    image = images.program("loop_points", migratable=True)
    p = run([HEXO, "certify", image, "--mem", "2M"])
    assert p.returncode == 2 and "reaches no migration point" in p.stderr, p.stderr
    assert "--auto-points" in p.stderr and "could not start" not in p.stderr


def test_a_binary_difference_is_shown_by_byte_and_a_text_one_by_line():
    """bzip2 -c writes a compressed stream: its differing 'line' was raw bytes in the table."""
    from uhyve_ctl.certify import Outcome, compare
    ref = Outcome(b"BZh91AY&SY\x8f\x00\x01\nend\n", b"", 0, None)
    got = Outcome(b"BZh91AY&SY\x8f\x00\x02\nend\n", b"", 0, None)
    assert compare(ref, got) == "stdout byte 12: 0x02, unmigrated 0x01 (18 and 18 bytes)"
    assert compare(ref, got._replace(stdout=ref.stdout[:11])) == \
        "stdout byte 11: (end), unmigrated 0x00 (11 and 18 bytes)"
    text = Outcome(b"a\n\tresult 1\n", b"", 0, None)
    assert compare(text, text._replace(stdout=b"a\n\tresult 2\n")) == \
        "stdout line 2: 'result 2', unmigrated 'result 1'"
    assert compare(ref, ref._replace(stdout=ref.stdout)) is None


STEP_TIMES = r"^ +\d+ +[\d.]+( +[\d.]+) "      # the us/step column of step_table's lines


def test_groups_in_an_ignore_pattern_blank_only_a_column_of_a_line():
    """CoMD prints each step's energies and its time per atom on one line: left out whole, the
    energies were not compared at all. A pattern with groups leaves out only what they match
    (every match in the line; a group that took no part blanks nothing); one without groups
    still leaves out the line."""
    import re
    from uhyve_ctl.certify import Outcome, compare
    ignore = [re.compile(STEP_TIMES.encode()), re.compile(rb"^Time")]
    ref = Outcome(b"     10   0.5   12.3456   0.25\nTime 3\n", b"", 0, None)
    assert compare(ref, ref._replace(stdout=b"     10   0.5  123.4567   0.25\nTime 4\n"),
                   ignore) is None
    assert compare(ref, ref._replace(stdout=b"     10   0.6   12.3456   0.25\nTime 3\n"),
                   ignore) == "stdout line 1: '10 0.6 0.25', unmigrated '10 0.5 0.25'"
    several = [re.compile(rb"t=(\d+)(x)?")]
    assert compare(Outcome(b"a t=1 b t=22\n", b"", 0, None),
                   Outcome(b"a t=9 b t=3\n", b"", 0, None), several) is None


@needs_kvm
def test_a_step_table_certifies_with_its_timing_column_left_out(images):
    image = images.program("step_table", migratable=True)
    p = run([HEXO, "certify", image, "--points", "50%", "--by", "points", "--json",
             "--ignore", STEP_TIMES])
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["points_total"] == 40
    p = run([HEXO, "certify", image, "--points", "50%", "--by", "points", "--json"])
    assert p.returncode == 1, p.stdout + p.stderr         # the times, compared, differ
