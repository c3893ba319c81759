"""The static parts of report.html: its stylesheet and the script that pages the contact sheet.

Kept apart from `html` (which writes the data) so that each reads on its own; both are inlined
into the page, which must work offline.
"""

CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--blue:#2563eb;--green:#16a34a;
--red:#dc2626;--amber:#d97706}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#111827;color:#f9fafb;padding:18px 32px}
header h1{margin:0 0 4px;font-size:20px;font-weight:600}
header p{margin:0;color:#d1d5db;font-size:13px}
header code{color:#f9fafb;background:#1f2937;padding:1px 6px;border-radius:4px}
main{max-width:1200px;margin:0 auto;padding:20px 32px 48px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:0 0 18px}
h2{font-size:16px;margin:0 0 12px;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;background:none;border:0;
padding:0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;
border-top:3px solid var(--muted)}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:26px;font-weight:600;font-variant-numeric:tabular-nums}
.card.downloaded{border-top-color:var(--green)}.card.failed{border-top-color:var(--red)}
.card.total{border-top-color:#111827}.card.pending,.card.resolved{border-top-color:var(--amber)}
.card.no_image,.card.not_found{border-top-color:#9ca3af}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:right;padding:5px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--muted);font-weight:500;font-size:12px}th:first-child,td:first-child,td.l,th.l{text-align:left}
.exit{display:inline-block;min-width:22px;text-align:center;border-radius:10px;padding:0 6px;color:#fff;
background:var(--red)}.exit.e0{background:var(--green)}.exit.e4,.exit.e1{background:var(--amber)}
svg{display:block;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}
#runs-chart rect.bar:hover{opacity:.8}
details{border:1px solid var(--line);border-radius:6px;margin:0 0 8px}
summary{cursor:pointer;padding:8px 12px;font-weight:500}
summary .n{color:var(--muted);font-weight:400;margin-left:8px}
details ul{margin:0;padding:6px 12px 10px 32px;max-height:320px;overflow:auto;columns:2 420px}
details li{break-inside:avoid}details li code{font-size:12px}
.err{color:var(--muted);font-size:12px;margin-left:6px}.more{color:var(--muted);list-style:none}
.muted{color:var(--muted)}.ok{color:var(--green);margin:0}
.tools{display:flex;gap:10px;align-items:center;margin:0 0 12px;flex-wrap:wrap}
.tools input{font:inherit;padding:6px 10px;border:1px solid #d1d5db;border-radius:6px;width:260px}
.tools button{font:inherit;padding:5px 12px;border:1px solid #d1d5db;border-radius:6px;background:#fff;cursor:pointer}
.tools button:disabled{opacity:.4;cursor:default}
#sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
#sheet figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:6px;background:#fff}
#sheet img{display:block;width:100%;height:130px;object-fit:contain;background:#fff}
#sheet figcaption{font-size:12px;margin-top:4px;overflow-wrap:anywhere;line-height:1.3}
#sheet figcaption span{color:var(--muted);margin-left:4px;white-space:nowrap}
#sheet h3.patent{grid-column:1/-1;margin:10px 0 0;font-size:14px;font-weight:600;border-bottom:1px solid var(--line)}
#sheet h3.patent span{color:var(--muted);font-weight:400;margin-left:6px}
table.figures td.bar{width:60%;text-align:left}table.figures td.bar i{display:inline-block;height:10px;
background:var(--blue);border-radius:2px}
.card .code{color:var(--muted);font-size:11px}.card .code code{font-size:11px}
.advice{display:block;margin:4px 0 0 18px;font-weight:400;font-size:13px;max-width:900px}
ul.files{margin:0;padding-left:20px;columns:2 420px}ul.files li{margin:2px 0}
a{color:var(--blue)}
"""

# Pages the embedded rows; builds thumbnails with textContent and properties, never HTML strings.
SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("sheet-data").textContent);
  var grid = document.getElementById("sheet"), box = document.getElementById("filter");
  var info = document.getElementById("page-info"), prev = document.getElementById("prev"),
      next = document.getElementById("next"), size = data.page, rows = data.rows, page = 0;
  function thumb(row) {
    var fig = document.createElement("figure"), link = document.createElement("a"),
        img = document.createElement("img"), cap = document.createElement("figcaption"),
        pn = document.createElement("b"), num = document.createElement("span");
    img.loading = "lazy"; img.alt = row[0] + " drawing " + row[1]; img.src = data.base + row[2];
    link.href = img.src; link.title = row[0] + " #" + row[1]; link.appendChild(img);
    pn.textContent = row[0]; num.textContent = (row.length > 3 ? "FIG. " : "#") + row[1]; cap.append(pn, num);
    fig.append(link, cap); return fig;
  }
  function heading(row) {  // --drawings all: a patent's drawings follow its name and figure count
    var h = document.createElement("h3"), n = document.createElement("span");
    h.className = "patent"; h.textContent = row[0];
    n.textContent = row[3] + (row[3] === 1 ? " figure" : " figures"); h.appendChild(n); return h;
  }
  function render() {
    var pages = Math.max(1, Math.ceil(rows.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    var frag = document.createDocumentFragment(), last = null;
    rows.slice(page * size, (page + 1) * size).forEach(function (r) {
      if (r.length > 3 && r[0] !== last) { frag.appendChild(heading(r)); last = r[0]; }
      frag.appendChild(thumb(r));
    });
    grid.replaceChildren(frag);
    info.textContent = rows.length ? (page * size + 1) + "\\u2013" + Math.min(rows.length, (page + 1) * size) +
      " of " + rows.length.toLocaleString("en") + " \\u00b7 page " + (page + 1) + " of " + pages : "no drawing matches";
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
  }
  box.addEventListener("input", function () {
    var q = box.value.trim().toUpperCase();
    rows = q ? data.rows.filter(function (r) { return r[0].toUpperCase().indexOf(q) >= 0; }) : data.rows;
    page = 0; render();
  });
  prev.addEventListener("click", function () { page -= 1; render(); });
  next.addEventListener("click", function () { page += 1; render(); });
  render();
})();
"""
