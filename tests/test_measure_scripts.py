"""The measurement scripts name only methods and variants that exist: a typo there would surface an
hour into a run, here it fails at once."""
import os
import re
import subprocess

import pytest

from optimization import evaluation as ev

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
    with open(os.path.join(ROOT, "scripts", name), encoding="utf-8") as f:
        return f.read()


def _ablation_variants():
    """The VARIANTS string paper_procedure_ablation.sh builds (its $untranslated expanded)."""
    text = _read("paper_procedure_ablation.sh")
    untranslated = re.search(r'^untranslated="([^"]*)"', text, re.M).group(1)
    parts = re.findall(r'^VARIANTS\+?="([^"]*)"', text, re.M)
    return "".join(parts).replace("$untranslated", untranslated)


@pytest.mark.parametrize("script", ["measure_edit_tables.sh", "paper_procedure_ablation.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", os.path.join(ROOT, "scripts", script)]).returncode == 0


def test_every_method_the_measurement_names_exists():
    saved = dict(ev.METHODS)
    try:
        variants = ev.register_variants(_ablation_variants())
        assert "s2o_w1000" in variants and "no_cycle" in variants
        text = _read("measure_edit_tables.sh")
        # SINGLE=...; SINGLE+=,...: the 448-edit table's methods
        single = "".join(re.findall(r'^SINGLE\+?=([^\s]+)', text, re.M)).split(",")
        lists = [",".join(filter(None, single))]
        lists += re.findall(r'^SPLIT_METHODS=([^\s]+)', text, re.M) + re.findall(r'^PAPER=([^\s]+)', text, re.M)
        lists += re.findall(r'METHODS=([a-z0-9_,]+) \\?', text)
        assert len(lists) >= 5
        for names in lists:
            ev.parse_methods(names)  # raises on an unknown name
        assert len(ev.parse_methods(lists[0])) == 12
        defaults = re.search(r'^METHODS=\$\{METHODS:-([^}]*)\}', _read("paper_procedure_ablation.sh"), re.M).group(1)
        ev.parse_methods(defaults)
    finally:
        ev.METHODS.clear()
        ev.METHODS.update(saved)
