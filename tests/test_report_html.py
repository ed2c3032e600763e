"""summary.md -> summary.html for the report: headings, pipe tables, paragraphs, escaping."""
from conta_core.report_html import markdown_to_html

MD = """### run: synthetic / conta.mode adjust

mIoU (%). CAM on the
training split.

| Setting | CAM | note |
|---|---:|---|
| Baseline | 46.9 | a<b |
| Round = 1 | 45.7 | |
"""


def test_summary_markdown_becomes_tables_and_headings():
    page = markdown_to_html(MD, "run <1>")
    assert "<title>run &lt;1&gt;</title>" in page
    assert "<h3>run: synthetic / conta.mode adjust</h3>" in page
    assert "<p>mIoU (%). CAM on the training split.</p>" in page  # lines of a paragraph joined
    table = page[page.index("<table>"):page.index("</table>")]
    assert table.count("<tr>") == 3  # header + 2 rows, the |---| rule dropped
    assert '<th class="num">CAM</th>' in table and "<th>Setting</th>" in table
    assert '<td class="num">46.9</td><td>a&lt;b</td>' in table  # right-aligned column, escaped text
    assert "<td>Round = 1</td><td class=\"num\">45.7</td><td></td>" in table
