"""Plain text from installed documentation packages, one page per line: the real English and Chinese text that
benchmarks/cpt_quality.py trains and evaluates on.

    apt-get install --no-install-recommends libreoffice-help-en-us libreoffice-help-zh-cn gimp-help-en \
        gimp-help-zh-cn debian-reference-en debian-reference-zh-cn
    python benchmarks/doc_text.py --language en --out en.txt
    python benchmarks/doc_text.py --language zh --out zh.txt

Each HTML page becomes one line: the text of its body without scripts, styles and navigation, whitespace
collapsed. A Chinese page must be mostly Chinese (pages left untranslated in the zh-cn packages are dropped and
counted). Prints how many pages and characters were kept.
"""
from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

SOURCES = {  # language: (directory, glob) of the packages' HTML pages
    "en": [("/usr/share/libreoffice/help/en-US", "**/*.html"), ("/usr/share/gimp/2.0/help/en", "**/*.html"),
           ("/usr/share/debian-reference", "*.en.html")],
    "zh": [("/usr/share/libreoffice/help/zh-CN", "**/*.html"), ("/usr/share/gimp/2.0/help/zh_CN", "**/*.html"),
           ("/usr/share/debian-reference", "*.zh-cn.html")],
}
SKIPPED_TAGS = {"script", "style", "head", "nav"}
MIN_CHARS = 100  # shorter pages are indexes and stubs
MIN_CJK_SHARE = 0.2  # of a Chinese page's non-space characters (help pages name many English terms)


class _TextOf(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED_TAGS or ("class", "navheader") in attrs or ("class", "navfooter") in attrs:
            self.skipping += 1

    def handle_endtag(self, tag):
        if self.skipping and (tag in SKIPPED_TAGS or tag == "div"):
            self.skipping -= 1

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def page_text(html: str) -> str:
    """The page's text; for LibreOffice's help pages only the help itself (its DisplayArea), not the menus and
    search boxes every page repeats."""
    start = html.find('id="DisplayArea"')
    if start >= 0:
        end = html.find('id="SearchFrame"', start)
        html = html[html.find(">", start) + 1:end if end >= 0 else len(html)]
    parser = _TextOf()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts)).strip()


def cjk_share(text: str) -> float:
    visible = [c for c in text if not c.isspace()]
    return sum("\u4e00" <= c <= "\u9fff" for c in visible) / max(len(visible), 1)


def collect(language: str) -> tuple[list[str], dict[str, int]]:
    pages, counts = [], {"files": 0, "short": 0, "untranslated": 0}
    for root, glob in SOURCES[language]:
        for path in sorted(Path(root).glob(glob)):
            counts["files"] += 1
            text = page_text(path.read_text(encoding="utf-8", errors="replace"))
            if len(text) < MIN_CHARS:
                counts["short"] += 1
            elif language == "zh" and cjk_share(text) < MIN_CJK_SHARE:
                counts["untranslated"] += 1
            else:
                pages.append(text)
    return pages, counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--language", required=True, choices=SOURCES, help="which packages' pages to read")
    p.add_argument("--out", required=True, type=Path, help="the text file to write (one page per line)")
    args = p.parse_args(argv)
    pages, counts = collect(args.language)
    if not pages:
        print(f"error: no pages found under {SOURCES[args.language]}: install the packages named in --help",
              file=sys.stderr)
        return 2
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text("\n".join(pages) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"{args.out}: {len(pages)} pages, {sum(map(len, pages)):,} characters (of {counts['files']} files: "
          f"{counts['short']} too short, {counts['untranslated']} not Chinese enough)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
