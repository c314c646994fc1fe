"""The review page as a page object: its locators and what a reviewer does on it (pytest-playwright's `page`)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Locator, Page, expect


class ReviewPage:
    def __init__(self, page: Page, base_url: str) -> None:
        self.page, self.base_url = page, base_url.rstrip("/")
        self.count = page.get_by_test_id("finding-count")
        self.overlay = page.get_by_test_id("overlay")
        self.findings = page.locator("[data-testid=findings] tbody tr")
        self.boxes = page.locator("#boxes .box")

    def open(self) -> ReviewPage:
        self.page.goto(f"{self.base_url}/")
        expect(self.page.locator("#classes tbody tr")).not_to_have_count(0)
        return self

    def upload(self, image: Path) -> None:
        self.page.get_by_test_id("file-input").set_input_files(str(image))
        expect(self.page.get_by_test_id("image-status")).to_contain_text("boxes scoring at least")

    def shown(self) -> int:
        return int(self.count.inner_text())

    def box_ids(self) -> list[int]:
        return [int(row.get_attribute("data-testid").split("-")[1]) for row in self.findings.all()]

    def set_threshold(self, class_name: str, value: float) -> None:
        self.page.get_by_test_id(f"slider-{class_name}").fill(str(value))

    def choose_preset(self, class_name: str, point: str) -> None:
        self.page.get_by_test_id(f"preset-{class_name}").select_option(point)

    def explain(self, box_id: int) -> Locator:
        self.page.get_by_test_id(f"explain-{box_id}").check()
        heatmap = self.page.get_by_test_id(f"heatmap-{box_id}")
        expect(heatmap).to_have_count(1, timeout=120_000)
        return heatmap

    def delete(self, box_id: int) -> None:
        self.page.get_by_test_id(f"delete-{box_id}").click()

    def relabel(self, box_id: int, class_name: str) -> None:
        self.page.get_by_test_id(f"class-of-{box_id}").select_option(label=class_name)

    def to_screen(self, x: float, y: float, image_width: int, image_height: int) -> tuple[float, float]:
        """Screen coordinates of a point given in pixels of the film (scrolled into view first)."""
        self.overlay.scroll_into_view_if_needed()
        frame = self.overlay.bounding_box()
        return frame["x"] + x * frame["width"] / image_width, frame["y"] + y * frame["height"] / image_height

    def screen_scale(self, image_width: int) -> float:
        """Film pixels per screen pixel."""
        return image_width / self.overlay.bounding_box()["width"]

    def move(self, box_id: int, dx: float, dy: float) -> None:
        """Select a box (its row), then drag it from its centre by dx, dy screen pixels."""
        self.findings.filter(has=self.page.get_by_test_id(f"delete-{box_id}")).locator("td").nth(1).click()
        box = self.page.locator(f"[data-testid=box-{box_id}] rect.frame")
        box.scroll_into_view_if_needed()
        frame = box.bounding_box()
        x, y = frame["x"] + frame["width"] / 2, frame["y"] + frame["height"] / 2
        self._drag((x, y), (x + dx, y + dy))

    def draw(self, class_name: str, start: tuple[float, float], end: tuple[float, float]) -> None:
        """Draw a box between two screen points."""
        self.page.get_by_test_id("draw-class").select_option(label=class_name)
        self.page.get_by_test_id("draw").click()
        self._drag(start, end)

    def _drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
        mouse.move(*end, steps=4)
        mouse.up()

    def save(self, reviewer: str) -> str:
        self.page.get_by_test_id("reviewer").fill(reviewer)
        self.page.get_by_test_id("save").click()
        status = self.page.get_by_test_id("save-status")
        expect(status).to_contain_text("Saved")
        return status.inner_text()
