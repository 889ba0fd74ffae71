"""Drive a viewer page in headless Chromium (Selenium + Debian's chromedriver) through its own controls.

Used by the browser test and to take the README screenshot:
    python -m idc.viewer.browser outputs/synthetic/viewer/index.html docs/viewer.png [--patch IMAGE_ID]
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
# bokeh draws its widgets inside shadow roots: search them all
DEEP = """
const [selector] = arguments; const out = [];
const walk = (root) => { out.push(...root.querySelectorAll(selector));
  root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) walk(e.shadowRoot); }); };
walk(document); return out;
"""
MODEL = "Bokeh.documents[0].get_model_by_name(arguments[0])"


def chrome(profile: Path, size=(1700, 1000)):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def wait_for(driver, script: str, *args, timeout: float = 30):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for: {script}")


def deep(driver, selector: str):
    return driver.execute_script(DEEP, selector)


IMAGE_DRAWN = """
const doc = Bokeh.documents[0], r = doc.get_model_by_name(arguments[0]);
const v = Bokeh.index.find_one(doc.get_model_by_name('slide'))?.renderer_views.get(r);
const img = v?.glyph?.image?.[0];
return !!(r.visible && img && img.complete && img.naturalWidth > 0 && r.data_source.data.url[0] === img.src);
"""  # the image of that image renderer (the patient on screen) is decoded and in the slide's renderer
TISSUE_DRAWN = "return (function() {" + IMAGE_DRAWN.replace("arguments[0]", "'layer-tissue'") + "})();"


def open_page(driver, page: Path) -> float:
    """Load the page; seconds until bokeh has drawn the slide with its tissue image."""
    t0 = time.perf_counter()
    driver.get(Path(page).resolve().as_uri())
    wait_for(driver, f"return !!(window.Bokeh && Bokeh.documents.length && {MODEL} && Bokeh.index.find_one({MODEL}))", "slide")
    wait_for(driver, TISSUE_DRAWN)
    return time.perf_counter() - t0


def pick_patient(driver, pid) -> float:
    """Choose patient `pid` in the page's picker; seconds until its tissue is drawn."""
    from selenium.webdriver.support.ui import Select

    (select,) = wait_for(driver, DEEP, "select[name=patient]")
    t0 = time.perf_counter()
    Select(select).select_by_visible_text(next(o.text for o in Select(select).options if o.text.startswith(f"{pid} (")))
    wait_for(driver, f"return {MODEL}.value === arguments[1]", "patient", str(pid))
    wait_for(driver, TISSUE_DRAWN)
    return time.perf_counter() - t0


def pick_landscape(driver, title: str, opacity: float | None = None) -> float:
    """Choose the attribution landscape `title` (a method's title, e.g. "Grad-CAM") and optionally its opacity;
    seconds until the layer's image is drawn."""
    from selenium.webdriver.support.ui import Select

    (select,) = wait_for(driver, DEEP, "select[name=atlas-method]")
    t0 = time.perf_counter()
    Select(select).select_by_visible_text(title)
    wait_for(driver, IMAGE_DRAWN, "layer-atlas")
    if opacity is not None:  # the slider's model, as a drag on it would set it
        driver.execute_script(f"{MODEL}.value = arguments[1]", "atlas-opacity", opacity)
        wait_for(driver, f"const a = {MODEL}.glyph.global_alpha; return (a?.value ?? a) === arguments[1]", "layer-atlas",
                 opacity)
    return time.perf_counter() - t0


def toggle_layer(driver, label: str) -> bool:
    """Click the layer checkbox labelled `label`; returns whether it is now checked."""
    boxes = {b.find_element("xpath", "..").text.strip(): b for b in deep(driver, "input[type=checkbox]")}
    boxes[label].click()
    return boxes[label].is_selected()


def click_patch(driver, image_id: str) -> None:
    """A real left click (DevTools input events) on the centre of the patch `image_id` on the slide."""
    pos = wait_for(driver, f"""
        const d = {MODEL}.data_source.data, i = d.image_id.indexOf(arguments[1]);
        if (i < 0) {{ return null; }}
        const v = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('slide'));
        const r = (v.canvas_view ?? v.canvas).el.getBoundingClientRect();
        return [r.left + v.frame.x_scale.compute(d.cx[i]), r.top + v.frame.y_scale.compute(d.cy[i])];""",
                   "layer-hit", image_id)
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": kind, "x": pos[0], "y": pos[1], "button": "left",
                                                            "clickCount": 1})


def zoom_to(driver, x0: float, x1: float, y0: float, y1: float) -> None:
    """Set the slide's view to slide pixels [x0, x1] x [y0, y1] (y down, as in patches.csv)."""
    driver.execute_script("""
        const doc = Bokeh.documents[0], p = doc.get_model_by_name('slide');
        const H = doc.get_model_by_name('layer-tissue').data_source.data.h[0];
        p.x_range.setv({start: arguments[0], end: arguments[1]});
        p.y_range.setv({start: H - arguments[3], end: H - arguments[2]});""", x0, x1, y0, y1)
    time.sleep(0.5)


def slide_frame(driver) -> list:
    """[left, top, width, height] of the slide's plot frame on the page, CSS pixels."""
    return driver.execute_script("""
        const v = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('slide'));
        const r = (v.canvas_view ?? v.canvas).el.getBoundingClientRect(), b = v.frame.bbox;
        return [r.left + b.left, r.top + b.top, b.width, b.height];""")


def screenshot(driver, box=None):
    """The page (or the `box` [left, top, width, height] of it) as a uint8 RGB array."""
    img = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
    if box is None:
        return img
    x, y, w, h = (int(round(v)) for v in box)
    return img[y:y + h, x:x + w]


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--patient", help="patient id to show (default: the page's first)")
    ap.add_argument("--patch", help="image id of an explained patch to click")
    ap.add_argument("--layers", nargs="*", default=[], help="layer checkboxes to click, e.g. 'P(IDC) heat map'")
    ap.add_argument("--landscape", help="attribution landscape to show (a method title, e.g. Grad-CAM)")
    ap.add_argument("--opacity", type=float, help="opacity of the attribution landscape (0-1)")
    ap.add_argument("--zoom", type=float, nargs=4, metavar=("X0", "X1", "Y0", "Y1"),
                    help="show this slide region (slide pixels, y down), e.g. to look at nuclei")
    ap.add_argument("--width", type=int, help="scale the screenshot to this width (px)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as profile:
        driver = chrome(Path(profile))
        try:
            print(f"page drawn in {open_page(driver, a.page):.2f} s")
            if a.patient:
                print(f"patient {a.patient} drawn in {pick_patient(driver, a.patient):.2f} s")
            for label in a.layers:
                toggle_layer(driver, label)
            if a.landscape:
                print(f"landscape drawn in {pick_landscape(driver, a.landscape, a.opacity):.2f} s")
            if a.zoom:
                zoom_to(driver, *a.zoom)
            if a.patch:
                click_patch(driver, a.patch)
                wait_for(driver, DEEP, ".attribution")
                time.sleep(0.5)
            png = Path(profile) / "shot.png"
            driver.save_screenshot(str(png))
            print("console errors:", console_errors(driver) or "none")
        finally:
            driver.quit()
        save_scaled(png, a.out, a.width)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e3:.0f} kB)")


def save_scaled(png: Path, out: Path, width: int | None = None) -> None:
    """The screenshot as `out` (format from its suffix; JPEG quality 80), scaled to `width` when given."""
    img = Image.open(png).convert("RGB")
    if width and width < img.width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, quality=80, optimize=True)


if __name__ == "__main__":
    main()
