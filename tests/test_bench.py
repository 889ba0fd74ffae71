"""Bench sections that must not invent numbers: the GPU sections without CUDA, the full-size one without data."""
from __future__ import annotations

import re

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the section measures instead")
def test_gpu_section_without_cuda_says_so_and_measures_nothing():
    from idc.bench import gpu

    body = gpu.run(quick=True)
    assert body.startswith("## GPU") and "Not measured: no CUDA device" in body
    assert "|" not in body and not re.search(r"\d[\d,.]* ?(img|images)/s", body)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the section prepares the set")
def test_fullsize_section_without_data_or_gpu_is_not_run(tmp_path):
    from idc.bench import fullsize

    body = fullsize.run(quick=False, overrides=(f"run.dir={tmp_path}/run", f"data.root={tmp_path}/d/IDC_regular_ps50_idx5"))
    assert "Not run: the full-size set is not prepared" in body and str(tmp_path) in body
    assert not list(tmp_path.iterdir())  # nothing generated


def test_update_doc_replaces_only_its_block():
    from idc.bench.__main__ import update_doc

    text = "# B\n\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\n\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\n"
    new = update_doc(text, "a", "new a")
    assert "new a" in new and "old a" not in new and "old b" in new
    assert update_doc(new, "c", "c body").endswith("<!-- bench:c -->\nc body\n<!-- /bench:c -->\n")


def test_the_hours_long_end_to_end_section_runs_only_when_named():
    from idc.bench.__main__ import SECTIONS, chosen_sections

    assert "endtoend" in SECTIONS and "endtoend" not in chosen_sections({})
    assert "atlas" in chosen_sections({}) and chosen_sections({"sections": "endtoend"}) == ["endtoend"]


def test_sanity_section_phase_table_and_network_floor():
    """The sanity section's table (largest phases first, the rest summed) and its floor: images without autograd
    at the forward rate plus those with autograd at the forward + backward rate, against the stage's wall time."""
    from idc.bench.sanity import floor_line, phase_rows

    timing = {"maps: A": 10.0, "ROAD": 30.0, "maps: B": 5.0, "total": 45.0,
              "network_images": {"images": 6000, "with_grad": 1000}}
    assert phase_rows("make leaderboard", timing, top=2) == [
        ["`make leaderboard`: ROAD", "30"], ["`make leaderboard`: maps: A", "10"], ["`make leaderboard`: 1 other phases", "5"]]
    # 5,000 forward images at 100/s + 1,000 forward + backward at 50/s = 70 s = 1.2 min, 50% of a 140 s wall
    line = floor_line("make leaderboard", 140.0, timing, (100.0, 50.0))
    assert "6,000 images through the network (1,000 with autograd)" in line and "**1.2 min**, 50% of its 2.3 min" in line
    assert "no network count" in floor_line("make sanity", 10.0, {"total": 10.0}, (1.0, 1.0))
