import assert from "node:assert/strict";
import {
  type BarChart,
  CHART_WIDTH,
  chartHeight,
  escapeXml,
  formatValue,
  niceTicks,
  PLOT_WIDTH,
  renderBarChart,
} from "../../scripts/bench-chart-svg.ts";
import { benchCharts, writeCharts } from "../../scripts/bench-chart.ts";
import { checkConverter, svgToPng } from "../../scripts/bench-chart-png.ts";
import {
  type BenchResults,
  type FioResult,
  RESULTS_FORMAT,
  resultsFromJson,
  resultsToJson,
} from "../../scripts/bench-results.ts";

/** A chart of two panels: three series in the first (one of them zero), two in the second. */
const CHART: BarChart = {
  title: "Raw image: IOPS per workload (higher is better)",
  subtitle: "2026-11-30 01:52 UTC · 256 MiB image",
  series: [
    { name: "denbd", highlight: true },
    { name: "qemu-nbd", highlight: false },
    { name: "nbdkit", highlight: false },
  ],
  panels: [
    {
      label: "randread4k",
      bars: [
        { series: "denbd", value: 57_000 },
        { series: "qemu-nbd", value: 28_500 },
        { series: "nbdkit", value: 0 },
      ],
    },
    {
      label: "seqread1m",
      bars: [{ series: "denbd", value: 2_875 }, { series: "nbdkit", value: 2_633 }],
    },
  ],
};

/** A bar of the SVG: its series, value and drawn width. */
type DrawnBar = { series: string; value: number; width: number };

/** The bars of each panel of an SVG, in document order. */
function drawnBars(svg: string): DrawnBar[][] {
  return svg.split('<g class="panel">').slice(1).map((panel) =>
    [...panel.matchAll(/<rect class="bar" data-series="([^"]*)" data-value="([^"]*)"[^>]*>/g)]
      .map(([rect, series, value]) => ({
        series,
        value: Number(value),
        width: Number(/ width="([^"]*)"/.exec(rect)![1]),
      }))
  );
}

/** The text contents of an SVG's text elements. */
function texts(svg: string): string[] {
  return [...svg.matchAll(/<text [^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
}

/** A fio result of one sample per value of `iops` (CPU per op twice the IOPS, for telling). */
function fio(workload: string, server: string, table: string, iops: number[]): FioResult {
  const samples = iops.map((n) => ({ iops: n, cpuUs: 2 * n, peakMiB: 100 }));
  return { workload, server, table, restMiB: 50.5, samples };
}

/** Results of a small run: raw and TLS tables, one copy workload, three rounds. */
const RESULTS: BenchResults = {
  format: RESULTS_FORMAT,
  date: "2026-11-30T01:52:13.085Z",
  info: ["date: 2026-11-30T01:52:13.085Z", "image: 256 MiB, runtime 5s (+1s ramp), rounds 3"],
  conditions: { imageMiB: 256, runtimeSec: 5, rampSec: 1, rounds: 3 },
  fio: [
    fio("randread4k", "denbd", "raw", [300, 100, 200]),
    fio("randread4k", "nbdkit", "raw", [150, 150, 90]),
    fio("randread4k", "denbd-tls", "tls", [10, 30, 20]),
    fio("seqread1m", "denbd", "raw", [5, 6, 7]),
    fio("seqread1m", "nbdkit", "raw", [4, 4, 4]),
  ],
  copy: [
    { workload: "copy-nbd-to-file", copier: "denbd", samples: [{ seconds: 0.5, mibPerSec: 512 }] },
    {
      workload: "copy-nbd-to-file",
      copier: "nbdcopy",
      samples: [{ seconds: 1, mibPerSec: 256 }],
    },
  ],
};

Deno.test("niceTicks: steps of 1, 2, 2.5 or 5 powers of ten up to the first tick >= max", () => {
  assert.deepEqual(niceTicks(57_000), [0, 20_000, 40_000, 60_000]);
  assert.deepEqual(niceTicks(2_875), [0, 1_000, 2_000, 3_000]);
  assert.deepEqual(niceTicks(2_400), [0, 500, 1_000, 1_500, 2_000, 2_500]);
  assert.deepEqual(niceTicks(100), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(niceTicks(11), [0, 2.5, 5, 7.5, 10, 12.5]);
  assert.deepEqual(niceTicks(0.3), [0, 0.1, 0.2, 0.3]);
  assert.deepEqual(niceTicks(0), [0, 1]);
});

Deno.test("formatValue: thousands separated, decimals only below 100", () => {
  assert.deepEqual(
    [57_646, 4_477.1, 100, 43.47, 1.234, 0].map(formatValue),
    ["57,646", "4,477", "100", "43.5", "1.23", "0"],
  );
});

Deno.test("renderBarChart: one bar per panel entry, labels, title and legend", () => {
  const svg = renderBarChart(CHART);
  const panels = drawnBars(svg);
  assert.deepEqual(panels.map((p) => p.map((b) => b.series)), [
    ["denbd", "qemu-nbd", "nbdkit"],
    ["denbd", "nbdkit"],
  ]);
  assert.equal((svg.match(/<rect class="legend"/g) ?? []).length, 3);
  const words = texts(svg);
  for (const t of [CHART.title, CHART.subtitle, "randread4k", "seqread1m", "57,000", "2,633"]) {
    assert.ok(words.includes(t), `missing text ${t}`);
  }
  // Tick labels of each panel's own axis: thousands as k on the IOPS axis, plain below 10,000.
  for (const t of ["0", "20k", "60k", "1,000", "3,000"]) assert.ok(words.includes(t), `tick ${t}`);
  // Ticks in their shortest form, here in steps of 2.5.
  const quarter = renderBarChart({
    ...CHART,
    panels: [{ label: "w", bars: [{ series: "denbd", value: 11 }] }],
  });
  assert.deepEqual(texts(quarter).slice(-8, -2), ["0", "2.5", "5", "7.5", "10", "12.5"]);
  assert.match(svg, new RegExp(`^<svg [^>]*width="${CHART_WIDTH}" height="${chartHeight(CHART)}"`));
});

Deno.test("renderBarChart: bars scale with their panel's axis; a zero value has no length", () => {
  const [first, second] = drawnBars(renderBarChart(CHART));
  // 57,000 on an axis to 60,000; half of it is half as long; zero is nothing.
  assert.equal(first[0].width, Number((57_000 / 60_000 * PLOT_WIDTH).toFixed(2)));
  assert.ok(Math.abs(first[1].width - first[0].width / 2) < 0.01);
  assert.equal(first[2].width, 0);
  // In every panel the longest bar is the largest value, and the widths are proportional.
  for (const panel of [first, second]) {
    const longest = panel.reduce((a, b) => b.width > a.width ? b : a);
    assert.equal(longest.value, Math.max(...panel.map((b) => b.value)));
    assert.ok(longest.width <= PLOT_WIDTH && longest.width > PLOT_WIDTH / 2);
    for (const bar of panel) {
      assert.ok(Math.abs(bar.width / longest.width - bar.value / longest.value) < 1e-3);
    }
  }
  // The second panel has its own axis (to 3,000), not the first panel's.
  assert.equal(second[0].width, Number((2_875 / 3_000 * PLOT_WIDTH).toFixed(2)));
});

Deno.test("renderBarChart: text is escaped for XML, in content and attributes", () => {
  assert.equal(escapeXml(`a<b>&"c'`), "a&#60;b&#62;&#38;&#34;c&#39;");
  const name = `<evil & "co">`;
  const svg = renderBarChart({
    title: "t < u & v",
    subtitle: "",
    series: [{ name, highlight: false }],
    panels: [{ label: "w'1", bars: [{ series: name, value: 1 }] }],
  });
  assert.ok(!svg.includes(name) && !svg.includes("t < u"));
  assert.ok(texts(svg).includes("t &#60; u &#38; v"));
  assert.ok(texts(svg).includes("w&#39;1"));
  assert.match(svg, /data-series="&#60;evil &#38; &#34;co&#34;&#62;"/);
  // Between the tags no bare & or < remains.
  assert.doesNotMatch(svg.replace(/<[^>]*>/g, ""), /[<>]|&(?!#\d+;)/);
});

Deno.test("renderBarChart: a bar of an unknown series is refused", () => {
  const chart = { ...CHART, panels: [{ label: "w", bars: [{ series: "nbd-server", value: 1 }] }] };
  assert.throws(() => renderBarChart(chart), /unknown series nbd-server/);
});

Deno.test("renderBarChart: the same chart gives the same bytes", () => {
  const copy = structuredClone(CHART);
  assert.equal(renderBarChart(copy), renderBarChart(CHART));
});

Deno.test("benchCharts: IOPS and CPU per fio table, then copy; medians; denbd highlighted", () => {
  const charts = benchCharts(RESULTS);
  assert.deepEqual(charts.map((c) => c.name), [
    "raw-iops",
    "raw-cpu",
    "tls-iops",
    "tls-cpu",
    "copy-mibs",
  ]);
  const [rawIops, rawCpu, tlsIops, , copy] = charts.map((c) => c.chart);
  assert.deepEqual(rawIops.series, [
    { name: "denbd", highlight: true },
    { name: "nbdkit", highlight: false },
  ]);
  assert.deepEqual(rawIops.panels, [
    {
      label: "randread4k",
      bars: [{ series: "denbd", value: 200 }, { series: "nbdkit", value: 150 }],
    },
    { label: "seqread1m", bars: [{ series: "denbd", value: 6 }, { series: "nbdkit", value: 4 }] },
  ]);
  assert.deepEqual(rawCpu.panels[0].bars.map((b) => b.value), [400, 300]);
  assert.deepEqual(tlsIops.panels, [
    { label: "randread4k", bars: [{ series: "denbd-tls", value: 20 }] },
  ]);
  assert.deepEqual(tlsIops.series, [{ name: "denbd-tls", highlight: true }]);
  assert.match(rawIops.subtitle, /^2026-11-30 01:52 UTC · 256 MiB image · .*median of 3 rounds$/);
  const once = benchCharts({ ...RESULTS, conditions: { ...RESULTS.conditions, rounds: 1 } });
  assert.match(once[0].chart.subtitle, / · 1 round$/);
  assert.deepEqual(copy.panels[0].bars, [
    { series: "denbd", value: 512 },
    { series: "nbdcopy", value: 256 },
  ]);
});

Deno.test("results JSON: a round trip keeps every field, and charts drawn again are identical", () => {
  const text = resultsToJson(RESULTS);
  const back = resultsFromJson(text);
  assert.deepEqual(back, RESULTS);
  assert.equal(resultsToJson(back), text);
  const svgs = (r: BenchResults) => benchCharts(r).map((c) => renderBarChart(c.chart));
  assert.deepEqual(svgs(back), svgs(RESULTS));
});

Deno.test("results JSON: another format, a missing field or a bad sample is refused", () => {
  const json = (patch: Record<string, unknown>) => JSON.stringify({ ...RESULTS, ...patch });
  assert.throws(() => resultsFromJson(json({ format: "other/1" })), /not a denbd-bench-results\/1/);
  assert.throws(() => resultsFromJson(json({ date: undefined })), /date: not a string/);
  const noSamples = [{ ...RESULTS.fio[0], samples: [] }];
  assert.throws(() => resultsFromJson(json({ fio: noSamples })), /fio\[0\]\.samples: no samples/);
  const negative = [{ ...RESULTS.copy[0], samples: [{ seconds: 1, mibPerSec: -3 }] }];
  assert.throws(
    () => resultsFromJson(json({ copy: negative })),
    /copy\[0\]\.samples\[0\]\.mibPerSec: not a non-negative number/,
  );
  assert.throws(() => resultsFromJson("[]"), /results: not an object/);
});

Deno.test("svgToPng: rsvg-convert draws the chart as a PNG of the SVG's size", async () => {
  const png = await svgToPng(renderBarChart(CHART));
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  assert.equal(new TextDecoder().decode(png.subarray(12, 16)), "IHDR");
  assert.equal(view.getUint32(16), CHART_WIDTH);
  assert.equal(view.getUint32(20), chartHeight(CHART));
});

Deno.test("writeCharts: one PNG per chart in the folder, titled as the chart", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const written = await writeCharts(RESULTS, `${dir}/run`);
    assert.deepEqual(
      written.map((w) => w.path),
      ["raw-iops", "raw-cpu", "tls-iops", "tls-cpu", "copy-mibs"].map((n) => `${dir}/run/${n}.png`),
    );
    assert.deepEqual(written.map((w) => w.title), benchCharts(RESULTS).map((c) => c.chart.title));
    for (const { path } of written) {
      const png = await Deno.readFile(path);
      assert.equal(new TextDecoder().decode(png.subarray(1, 4)), "PNG");
    }
    assert.equal([...Deno.readDirSync(`${dir}/run`)].length, written.length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkConverter: without rsvg-convert on PATH the error names the Debian package", async () => {
  const path = Deno.env.get("PATH") ?? "";
  const empty = await Deno.makeTempDir();
  Deno.env.set("PATH", empty);
  try {
    await assert.rejects(checkConverter(), /rsvg-convert not found: install Debian's librsvg2-bin/);
  } finally {
    Deno.env.set("PATH", path);
    await Deno.remove(empty);
  }
  await checkConverter();
});
