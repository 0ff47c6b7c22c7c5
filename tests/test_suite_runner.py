"""The test runner of ``make test`` (tests/suite.py): what it runs and how it splits the work."""

from tests import suite


def test_split_by_weight_balances_and_keeps_every_item():
    weights = {"a": 9.0, "b": 5.0, "c": 4.0, "d": 1.0}
    parts = suite.split_by_weight(list(weights) + ["new"], weights, 2)
    assert sorted(x for p in parts for x in p) == ["a", "b", "c", "d", "new"]
    totals = sorted(sum(weights.get(x, suite.DEFAULT_WEIGHT["unit"]) for x in p) for p in parts)
    assert totals == [11.0, 13.0]   # longest first into the lighter part: a+c / new+b+d
    assert suite.split_by_weight(["a"], weights, 4) == [["a"]]   # no empty parts


def test_jobs_cover_every_notebook_and_unit_file_longest_first():
    jobs = suite.make_jobs(2, None, {"jobs": {"smoke 05_textual_inversion": 500.0}})
    names = [j.name for j in jobs]
    notebooks = sorted(p.stem for p in (suite.ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(n.split(" ", 1)[1] for n in names if n.startswith("smoke ")) == notebooks
    assert sorted(n.split(" ", 1)[1] for n in names if n.startswith("sd-cpu ")) == sorted(
        suite.SD_NOTEBOOKS)
    assert names[0] == "smoke 05_textual_inversion"        # the recorded longest starts first
    units = [a for j in jobs if j.name.startswith("unit") for a in j.argv if a.endswith(".py")]
    assert sorted(units) == sorted(str(p.relative_to(suite.ROOT)) for p in suite.unit_files())
    for job in jobs:
        assert job.env["OMP_NUM_THREADS"] == "1" and "PYTHONDONTWRITEBYTECODE" not in job.env
    profiles = {j.name.split(" ", 1)[0]: j.env.get("NBHELPERS_PROFILE") for j in jobs}
    assert profiles["smoke"] == "smoke" and profiles["sd-cpu"] == "sd-cpu"
