/**
 * A small SVG writer for the benchmark's bar charts: one panel per workload, one horizontal bar per
 * server in each panel, each panel with its own axis from zero (a 1 MiB workload and a 4 KiB one
 * differ by more than tenfold, so a shared axis would flatten one of them), nice ticks, the value
 * at the end of each bar, a legend, and denbd's series highlighted. Pure: the same chart gives the
 * same bytes.
 */

/** A series: one bar per panel at most, one colour, one legend entry. */
export interface ChartSeries {
  /** The name shown beside each bar and in the legend. */
  readonly name: string;
  /** Drawn in the highlight colour with a bold label (denbd's series). */
  readonly highlight: boolean;
}

/** One bar of a panel: the series it belongs to (by name) and its value. */
export interface ChartBar {
  /** The name of a series of the chart. */
  readonly series: string;
  /** The value, zero or more. */
  readonly value: number;
}

/** One panel: a heading and its bars, in the order the chart's series list them. */
export interface ChartPanel {
  /** The heading above the panel, e.g. the workload. */
  readonly label: string;
  /** The bars; a series that did not run has none. */
  readonly bars: readonly ChartBar[];
}

/** A whole chart. */
export interface BarChart {
  /** The title, e.g. `Raw image: IOPS per workload (higher is better)`. */
  readonly title: string;
  /** The line below the title: date and conditions. */
  readonly subtitle: string;
  /** The series, in legend and bar order. */
  readonly series: readonly ChartSeries[];
  /** The panels, top to bottom. */
  readonly panels: readonly ChartPanel[];
}

/** The chart's width in pixels (its PNG's too). */
export const CHART_WIDTH = 900;

const MARGIN = 20;
/** Where the series names end (right-aligned) and the bars begin. */
const LABEL_RIGHT = 170;
const PLOT_LEFT = 180;
/** Room right of the longest bar for its value. */
const VALUE_ROOM = 90;
/** The width of a bar at the axis's maximum. */
export const PLOT_WIDTH = CHART_WIDTH - PLOT_LEFT - VALUE_ROOM;
const BAR_HEIGHT = 20;
const BAR_PITCH = 26;
const HEADING_HEIGHT = 28;
const TICKS_HEIGHT = 22;
const PANEL_GAP = 14;
const PANELS_TOP = 100;
const HIGHLIGHT_COLOUR = "#e8590c";
const PEER_COLOURS = ["#4263eb", "#12b886", "#868e96", "#ae3ec9", "#f59f00"];
const FONT = "DejaVu Sans, Verdana, sans-serif";

/** Escapes text for XML character data and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The ticks of an axis from zero that covers `max`: about five steps of 1, 2, 2.5 or 5 times a
 * power of ten; the last tick is the axis's maximum (at least `max`). `[0, 1]` for a zero max.
 */
export function niceTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const rough = max / 5;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].find((m) => m * power >= rough)! * power;
  const count = Math.ceil(max / step - 1e-9);
  return Array.from({ length: count + 1 }, (_, i) => Number((i * step).toPrecision(12)));
}

/** A number with thousands separators: whole from 100 (and zero), else one or two decimals. */
export function formatValue(v: number): string {
  const digits = v >= 100 || v === 0 ? 0 : v >= 10 ? 1 : 2;
  return groupThousands(v.toFixed(digits));
}

/** A tick label in its shortest form, in thousands (`2.5k`) on an axis that reaches 10,000. */
function formatTick(v: number, axisMax: number): string {
  const k = axisMax >= 10_000 && v !== 0;
  return groupThousands(String(Number((k ? v / 1000 : v).toPrecision(12)))) + (k ? "k" : "");
}

/** Inserts commas between thousands in the whole part of a decimal string. */
function groupThousands(s: string): string {
  const [whole, fraction] = s.split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

/** A coordinate with at most two decimals, without trailing zeros. */
function px(x: number): string {
  return String(Number(x.toFixed(2)));
}

/** The height of the chart in pixels. */
export function chartHeight(chart: BarChart): number {
  const panels = chart.panels.map(panelHeight).reduce((a, b) => a + b, 0);
  return PANELS_TOP + panels - PANEL_GAP + MARGIN;
}

/** The height of one panel: heading, bars, tick labels and the gap below. */
function panelHeight(panel: ChartPanel): number {
  return HEADING_HEIGHT + panel.bars.length * BAR_PITCH + TICKS_HEIGHT + PANEL_GAP;
}

/** The fill colour of each series by name: the highlight, or the next peer colour. */
function colours(series: readonly ChartSeries[]): Map<string, string> {
  let peer = 0;
  return new Map(series.map((s) => [
    s.name,
    s.highlight ? HIGHLIGHT_COLOUR : PEER_COLOURS[peer++ % PEER_COLOURS.length],
  ]));
}

/** Renders a chart as a standalone SVG document. Throws on a bar of an unknown series. */
export function renderBarChart(chart: BarChart): string {
  const fill = colours(chart.series);
  const highlighted = new Set(chart.series.filter((s) => s.highlight).map((s) => s.name));
  const height = chartHeight(chart);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${CHART_WIDTH}" height="${height}" ` +
    `viewBox="0 0 ${CHART_WIDTH} ${height}" font-family="${FONT}">`,
    `<rect width="${CHART_WIDTH}" height="${height}" fill="#ffffff"/>`,
    text(MARGIN, 32, chart.title, 'font-size="20" font-weight="bold" fill="#212529"'),
    text(MARGIN, 56, chart.subtitle, 'font-size="13" fill="#495057"'),
  ];
  let x = MARGIN;
  for (const s of chart.series) {
    out.push(
      `<rect class="legend" x="${x}" y="71" width="14" height="14" fill="${fill.get(s.name)}"/>`,
    );
    const weight = s.highlight ? ' font-weight="bold"' : "";
    out.push(text(x + 20, 83, s.name, `font-size="13" fill="#212529"${weight}`));
    x += 20 + s.name.length * 8 + 24;
  }
  let y = PANELS_TOP;
  for (const panel of chart.panels) {
    out.push(...renderPanel(panel, y, fill, highlighted));
    y += panelHeight(panel);
  }
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** The elements of one panel whose top is at `top`. */
function renderPanel(
  panel: ChartPanel,
  top: number,
  fill: ReadonlyMap<string, string>,
  highlighted: ReadonlySet<string>,
): string[] {
  const ticks = niceTicks(Math.max(0, ...panel.bars.map((b) => b.value)));
  const axisMax = ticks[ticks.length - 1];
  const barsTop = top + HEADING_HEIGHT;
  const barsBottom = barsTop + panel.bars.length * BAR_PITCH;
  const out = [
    `<g class="panel">`,
    text(MARGIN, top + 17, panel.label, 'font-size="15" font-weight="bold" fill="#212529"'),
  ];
  for (const t of ticks) {
    const tx = px(PLOT_LEFT + t / axisMax * PLOT_WIDTH);
    out.push(
      `<line x1="${tx}" y1="${barsTop - 4}" x2="${tx}" y2="${barsBottom}" stroke="#dee2e6"/>`,
      text(
        Number(tx),
        barsBottom + 14,
        formatTick(t, axisMax),
        'font-size="11" fill="#495057"',
        "middle",
      ),
    );
  }
  for (const [i, bar] of panel.bars.entries()) {
    const colour = fill.get(bar.series);
    if (colour === undefined) throw new Error(`bar of unknown series ${bar.series}`);
    const y = barsTop + i * BAR_PITCH;
    const width = bar.value / axisMax * PLOT_WIDTH;
    const weight = highlighted.has(bar.series) ? ' font-weight="bold"' : "";
    out.push(
      text(LABEL_RIGHT, y + 15, bar.series, `font-size="13" fill="#212529"${weight}`, "end"),
      `<rect class="bar" data-series="${escapeXml(bar.series)}" data-value="${bar.value}" ` +
        `x="${PLOT_LEFT}" y="${y}" width="${px(width)}" height="${BAR_HEIGHT}" fill="${colour}"/>`,
      text(
        PLOT_LEFT + width + 6,
        y + 15,
        formatValue(bar.value),
        `font-size="12" fill="#212529"${weight}`,
      ),
    );
  }
  out.push("</g>");
  return out;
}

/** A text element at (x, y) with escaped content, attributes and an anchor. */
function text(x: number, y: number, content: string, attrs: string, anchor = "start"): string {
  const a = anchor === "start" ? "" : ` text-anchor="${anchor}"`;
  return `<text x="${px(x)}" y="${px(y)}" ${attrs}${a}>${escapeXml(content)}</text>`;
}
