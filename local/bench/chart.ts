/**
 * Hand-written SVG charts of the benchmark's results (no dependencies): the sustained rate of
 * each scenario beside the baseline's, with its p99 at 1,000 requests/s against the 25 ms
 * budget; and, for a soak run, memory and p99 over time.
 *
 * @example
 * await Deno.writeTextFile("local/bench/results/latest.svg", barChart(rows, { p99LimitMs: 25 }));
 */

/** One scenario's figures for the bar chart. */
export interface ChartRow {
  name: string;
  /** Highest rate held with p99 under the limit; null when skipped or never held. */
  maxRps: number | null;
  /** The search stopped at the generator's limit, not the server's: the rate is a lower bound. */
  generatorBound?: boolean;
  /** p99 at 1,000 requests/s, ms; null when not measured. */
  p99At1000: number | null;
  skipped?: string;
}

const escape = (s: string) =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll(
    '"',
    "&quot;",
  );

const fmt = (n: number) =>
  n >= 1000 ? `${(n / 1000).toFixed(n >= 10_000 ? 0 : 1)}k` : `${Math.round(n)}`;

/** Two panels: sustained requests/s per scenario, and p99 at 1,000 requests/s. */
export function barChart(rows: ChartRow[], opts: { p99LimitMs: number; title?: string }): string {
  const rowH = 26, top = 64, left = 170, panelW = 330, gap = 60;
  const height = top + rows.length * rowH + 40;
  const width = left + panelW * 2 + gap + 40;
  const maxRps = Math.max(1, ...rows.map((r) => r.maxRps ?? 0));
  const maxP99 = Math.max(
    opts.p99LimitMs * 1.2,
    ...rows.map((r) => Math.min(r.p99At1000 ?? 0, 200)),
  );
  const x2 = left + panelW + gap;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="600">${
      escape(opts.title ?? "Benchmark")
    }</text>`,
    `<text x="${left}" y="50" font-weight="600">Sustained requests/s (p99 &lt; ${opts.p99LimitMs} ms)</text>`,
    `<text x="${x2}" y="50" font-weight="600">p99 at 1,000 requests/s (ms)</text>`,
  ];
  const limitX = x2 + (opts.p99LimitMs / maxP99) * panelW;
  out.push(
    `<line x1="${limitX}" y1="${top - 6}" x2="${limitX}" y2="${
      top + rows.length * rowH
    }" stroke="#c0392b" stroke-dasharray="4 3"/>`,
    `<text x="${limitX + 3}" y="${
      top + rows.length * rowH + 14
    }" fill="#c0392b">${opts.p99LimitMs} ms</text>`,
  );
  rows.forEach((r, k) => {
    const y = top + k * rowH;
    out.push(`<text x="${left - 8}" y="${y + 16}" text-anchor="end">${escape(r.name)}</text>`);
    if (r.skipped) {
      out.push(
        `<text x="${left}" y="${y + 16}" fill="#888">skipped: ${
          escape(r.skipped.slice(0, 60))
        }</text>`,
      );
      return;
    }
    const w = ((r.maxRps ?? 0) / maxRps) * panelW;
    const color = r.name === "baseline" ? "#7f8c8d" : "#2e86de";
    out.push(
      `<rect x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${
        rowH - 8
      }" fill="${color}"/>`,
    );
    const label = r.maxRps === null || r.maxRps === 0
      ? "< lowest step"
      : `${fmt(r.maxRps)}${r.generatorBound ? "+ (generator-bound)" : ""}`;
    out.push(`<text x="${left + w + 4}" y="${y + 16}">${escape(label)}</text>`);
    if (r.p99At1000 !== null) {
      const v = Math.min(r.p99At1000, maxP99);
      const pw = (v / maxP99) * panelW;
      const over = r.p99At1000 >= opts.p99LimitMs;
      out.push(
        `<rect x="${x2}" y="${y + 4}" width="${pw.toFixed(1)}" height="${rowH - 8}" fill="${
          over ? "#e67e22" : "#27ae60"
        }"/>`,
        `<text x="${x2 + pw + 4}" y="${y + 16}">${r.p99At1000.toFixed(1)}</text>`,
      );
    }
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** One soak sample. */
export interface SoakPoint {
  atSeconds: number;
  rssMb: number;
  p99Ms: number | null;
}

/** RSS (left axis) and p99 (right axis) over a soak run. */
export function soakChart(points: SoakPoint[], opts: { title: string }): string {
  const width = 720, height = 320, left = 60, right = 60, top = 40, bottom = 40;
  const w = width - left - right, h = height - top - bottom;
  const maxT = Math.max(1, ...points.map((p) => p.atSeconds));
  const maxRss = Math.max(1, ...points.map((p) => p.rssMb)) * 1.2;
  const maxP99 = Math.max(1, ...points.map((p) => p.p99Ms ?? 0)) * 1.2;
  const x = (t: number) => left + (t / maxT) * w;
  const line = (vals: [number, number][], color: string) =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${
      vals.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ")
    }"/>`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="600">${escape(opts.title)}</text>`,
    `<line x1="${left}" y1="${top + h}" x2="${left + w}" y2="${top + h}" stroke="#333"/>`,
    `<text x="${left - 6}" y="${top + 4}" text-anchor="end" fill="#2e86de">${
      maxRss.toFixed(0)
    } MB</text>`,
    `<text x="${left - 6}" y="${top + h}" text-anchor="end" fill="#2e86de">0</text>`,
    `<text x="${left + w + 6}" y="${top + 4}" fill="#e67e22">${maxP99.toFixed(1)} ms</text>`,
    `<text x="${left + w / 2}" y="${
      height - 10
    }" text-anchor="middle">seconds (RSS blue, p99 orange)</text>`,
    `<text x="${left + w}" y="${top + h + 16}" text-anchor="end">${maxT}</text>`,
    line(points.map((p) => [x(p.atSeconds), top + h - (p.rssMb / maxRss) * h]), "#2e86de"),
    line(
      points.filter((p) => p.p99Ms !== null).map((
        p,
      ) => [x(p.atSeconds), top + h - (p.p99Ms! / maxP99) * h]),
      "#e67e22",
    ),
    "</svg>",
  ].join("\n") + "\n";
}
