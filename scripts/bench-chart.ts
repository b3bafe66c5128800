/**
 * The benchmark's charts: from one run's results (`scripts/bench-results.ts`), one chart per
 * result table and measure (fio tables: IOPS and server CPU per operation; copy: MiB/s), each
 * with one panel per workload and one bar per server, medians of the rounds, denbd highlighted;
 * written as PNG. `scripts/bench.ts` calls {@linkcode writeCharts} after a run; run on its own it
 * draws the charts again from a saved results file:
 *
 *     deno run --allow-all scripts/bench-chart.ts RESULTS.json [OUTDIR]
 *
 * (OUTDIR defaults to the results file's folder).
 */

import { dirname, join } from "node:path";
import { type BarChart, type ChartPanel, renderBarChart } from "./bench-chart-svg.ts";
import { checkConverter, svgToPng } from "./bench-chart-png.ts";
import {
  type BenchResults,
  type CopyResult,
  type FioResult,
  median,
  resultsFromJson,
} from "./bench-results.ts";
import { messageOf } from "../src/errors.ts";

/** A chart of a run with the file name it is written under (without extension). */
export interface NamedChart {
  /** File name stem, e.g. `raw-iops`. */
  readonly name: string;
  /** The chart. */
  readonly chart: BarChart;
}

/** A chart written to disk: its title and the path of its PNG. */
export interface WrittenChart {
  /** The chart's title, e.g. for an image's alternative text. */
  readonly title: string;
  /** The PNG's path. */
  readonly path: string;
}

/** What each fio chart shows: the file name suffix, the measure in words and the sample field. */
const FIO_MEASURES = [
  { suffix: "iops", what: "IOPS per workload (higher is better)", field: "iops" },
  { suffix: "cpu", what: "server CPU µs per operation (lower is better)", field: "cpuUs" },
] as const;

/** Table names as the titles spell them. */
const TABLE_TITLES: Record<string, string> = {
  raw: "Raw image",
  qcow2: "qcow2 image",
  tls: "Raw image over TLS",
};

/** Whether a server or copier is denbd's (drawn highlighted). */
export function isDenbd(name: string): boolean {
  return name === "denbd" || name.startsWith("denbd-");
}

/** The distinct values of `key` over `items`, in order of first appearance. */
function distinct<T>(items: readonly T[], key: (item: T) => string): string[] {
  return [...new Set(items.map(key))];
}

/** The run's date, e.g. `2026-11-30 01:52 UTC`. */
function runDate(results: BenchResults): string {
  return `${results.date.slice(0, 10)} ${results.date.slice(11, 16)} UTC`;
}

/** How the values were taken: `median of N rounds`, or `1 round`. */
function rounds(results: BenchResults): string {
  const n = results.conditions.rounds;
  return n === 1 ? "1 round" : `median of ${n} rounds`;
}

/**
 * The panels of a chart: one per workload (in the results' order), one bar per entry of that
 * workload, valued by `value` (the median of its samples).
 */
function panels<T extends { workload: string }>(
  entries: readonly T[],
  series: (entry: T) => string,
  value: (entry: T) => number,
): ChartPanel[] {
  return distinct(entries, (e) => e.workload).map((workload) => ({
    label: workload,
    bars: entries.filter((e) => e.workload === workload).map((e) => ({
      series: series(e),
      value: value(e),
    })),
  }));
}

/** The charts of one fio table: one per measure. */
function fioCharts(results: BenchResults, table: string): NamedChart[] {
  const entries = results.fio.filter((r) => r.table === table);
  const c = results.conditions;
  const subtitle = `${runDate(results)} · ${c.imageMiB} MiB image · fio ${c.runtimeSec} s after ` +
    `${c.rampSec} s ramp · ${rounds(results)}`;
  const series = distinct(entries, (r) => r.server).map((name) => ({
    name,
    highlight: isDenbd(name),
  }));
  return FIO_MEASURES.map((m) => ({
    name: `${table}-${m.suffix}`,
    chart: {
      title: `${TABLE_TITLES[table] ?? table}: ${m.what}`,
      subtitle,
      series,
      panels: panels(
        entries,
        (r: FioResult) => r.server,
        (r) => median(r.samples.map((s) => s[m.field])),
      ),
    },
  }));
}

/** The copy chart: MiB/s per copy workload and copier. */
function copyChart(results: BenchResults): NamedChart {
  const subtitle = `${runDate(results)} · ${results.conditions.imageMiB} MiB image, half holes · ` +
    `whole command timed · ${rounds(results)}`;
  return {
    name: "copy-mibs",
    chart: {
      title: "Copy: MiB/s per workload (higher is better)",
      subtitle,
      series: distinct(results.copy, (r) => r.copier).map((name) => ({
        name,
        highlight: isDenbd(name),
      })),
      panels: panels(
        results.copy,
        (r: CopyResult) => r.copier,
        (r) => median(r.samples.map((s) => s.mibPerSec)),
      ),
    },
  };
}

/** Every chart of a run: per fio table (in the results' order) IOPS and CPU, then copy. */
export function benchCharts(results: BenchResults): NamedChart[] {
  const tables = distinct(results.fio, (r) => r.table);
  const charts = tables.flatMap((t) => fioCharts(results, t));
  if (results.copy.length > 0) charts.push(copyChart(results));
  return charts;
}

/** Draws every chart of a run as `DIR/NAME.png` (creating DIR); returns what it wrote. */
export async function writeCharts(results: BenchResults, dir: string): Promise<WrittenChart[]> {
  await Deno.mkdir(dir, { recursive: true });
  const written: WrittenChart[] = [];
  for (const { name, chart } of benchCharts(results)) {
    const path = join(dir, `${name}.png`);
    await Deno.writeFile(path, await svgToPng(renderBarChart(chart)));
    written.push({ title: chart.title, path });
  }
  return written;
}

/** Draws the charts of a saved results file; returns the exit code. */
async function main(args: string[]): Promise<number> {
  if (args.length < 1 || args.length > 2 || args[0] === "--help") {
    console.error("Usage: deno run --allow-all scripts/bench-chart.ts RESULTS.json [OUTDIR]");
    return 2;
  }
  const [file, dir = dirname(file)] = args;
  await checkConverter();
  const results = resultsFromJson(await Deno.readTextFile(file));
  for (const chart of await writeCharts(results, dir)) console.log(chart.path);
  return 0;
}

if (import.meta.main) {
  let code = 2;
  try {
    code = await main(Deno.args);
  } catch (e) {
    console.error(`bench-chart: ${messageOf(e)}`);
  }
  Deno.exit(code);
}
