/**
 * What `denbd top` draws, without I/O: from two consecutive answers of
 * x-denbd-query-stats and the seconds between them, one frame of text: a
 * header, then a table per export with a row per client and the export's
 * total, then the clients still in their handshake. Rates are the
 * differences between the two answers over the time between them; the first
 * frame, with nothing to compare with, shows "-" for them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderFrame } from "./top-view.ts";
 * const lines = renderFrame({
 *   title: "denbd top - qmp.sock",
 *   sample: { exports: [], clients: [] },
 *   previous: null,
 *   seconds: 1,
 * });
 * assert.equal(lines[1], "0 exports, 0 clients");
 * ```
 * @module
 */

import type { DenbdRequestStatsValue, DenbdStatsValue } from "../daemon/qapi-types.ts";
import { formatBytes } from "../copy/progress.ts";

/** The columns of a table, in order: heading, width, and which side the text sticks to. */
const COLUMNS = [
  { heading: "CLIENT", width: 8, align: "left" },
  { heading: "ADDRESS", width: 22, align: "left" },
  { heading: "AGE", width: 9, align: "right" },
  { heading: "REQ/S", width: 9, align: "right" },
  { heading: "READ/S", width: 12, align: "right" },
  { heading: "WRITE/S", width: 12, align: "right" },
  { heading: "REQUESTS", width: 10, align: "right" },
  { heading: "READ", width: 10, align: "right" },
  { heading: "WRITTEN", width: 10, align: "right" },
  { heading: "ERRORS", width: 7, align: "right" },
] as const;

/** What one row shows of a client or an export. */
interface Figures {
  /** Requests answered (successful or not). */
  readonly requests: number;
  /** Bytes read. */
  readonly readBytes: number;
  /** Bytes written (WRITE payloads). */
  readonly writeBytes: number;
  /** Error replies. */
  readonly errors: number;
}

/** The request counts of one DenbdRequestStats reduced to what a row shows. */
export function figuresOf(stats: DenbdRequestStatsValue): Figures {
  return {
    requests: stats.rd_operations + stats.wr_operations + stats.zero_operations +
      stats.unmap_operations + stats.flush_operations + stats.block_status_operations +
      stats.cache_operations + stats.failed_operations,
    readBytes: stats.rd_bytes,
    writeBytes: stats.wr_bytes,
    errors: stats.failed_operations,
  };
}

/** A duration of `seconds` as top shows ages: "42s", "3m05s", "2h07m", "3d04h". */
export function formatAge(seconds: number): string {
  const whole = Math.floor(seconds);
  const two = (n: number) => String(n).padStart(2, "0");
  if (whole < 60) return `${whole}s`;
  if (whole < 3600) return `${Math.floor(whole / 60)}m${two(whole % 60)}s`;
  if (whole < 86400) return `${Math.floor(whole / 3600)}h${two(Math.floor(whole / 60) % 60)}m`;
  return `${Math.floor(whole / 86400)}d${two(Math.floor(whole / 3600) % 24)}h`;
}

/** The cells of the rate columns: per second from `before` to `now`, or "-" with no `before`. */
function rateCells(now: Figures, before: Figures | undefined, seconds: number): string[] {
  if (!before || seconds <= 0) return ["-", "-", "-"];
  const per = (current: number, earlier: number) => Math.max(0, current - earlier) / seconds;
  return [
    per(now.requests, before.requests).toFixed(1),
    `${formatBytes(per(now.readBytes, before.readBytes))}/s`,
    `${formatBytes(per(now.writeBytes, before.writeBytes))}/s`,
  ];
}

/** The cells of the running totals. */
function totalCells(figures: Figures): string[] {
  return [
    String(figures.requests),
    formatBytes(figures.readBytes),
    formatBytes(figures.writeBytes),
    String(figures.errors),
  ];
}

/** One table line of `cells`, each padded to its column's width. */
function tableLine(cells: readonly string[]): string {
  return "  " + cells.map((cell, index) => {
    const { width, align } = COLUMNS[index];
    return align === "left" ? cell.padEnd(width) : cell.padStart(width);
  }).join(" ").trimEnd();
}

/** What one frame is drawn from. */
export interface FrameInput {
  /** The first line: what is watched, and when. */
  readonly title: string;
  /** The latest answer of x-denbd-query-stats. */
  readonly sample: DenbdStatsValue;
  /** The answer before it, if any (rates are computed from the two). */
  readonly previous: DenbdStatsValue | null;
  /** Seconds between the two answers. */
  readonly seconds: number;
  /** Cut lines to this many columns (a terminal's width); no cut when absent. */
  readonly width?: number;
}

/** The lines of one frame of `denbd top`. */
export function renderFrame(input: FrameInput): string[] {
  const { sample, previous, seconds } = input;
  const heading = tableLine(COLUMNS.map((column) => column.heading));
  const before = {
    exports: new Map(previous?.exports.map((entry) => [entry.id, figuresOf(entry.stats)])),
    clients: new Map(previous?.clients.map((client) => [client.id, figuresOf(client.stats)])),
  };
  const clientRow = (client: DenbdStatsValue["clients"][number]) => {
    const figures = figuresOf(client.stats);
    return tableLine([
      `#${client.id}`,
      client.address,
      formatAge(client.age),
      ...rateCells(figures, before.clients.get(client.id), seconds),
      ...totalCells(figures),
    ]);
  };
  const lines = [
    input.title,
    `${plural(sample.exports.length, "export")}, ${plural(sample.clients.length, "client")}`,
  ];
  for (const entry of sample.exports) {
    const figures = figuresOf(entry.stats);
    lines.push(
      "",
      `export '${entry.name}' (id ${entry.id}, node ${entry["node-name"]}): ` +
        `${plural(entry.clients, "client")}, ${entry["departed-clients"]} departed`,
      heading,
      ...sample.clients.filter((client) => client.export === entry.id).map(clientRow),
      tableLine([
        "total",
        "",
        "",
        ...rateCells(figures, before.exports.get(entry.id), seconds),
        ...totalCells(figures),
      ]),
    );
  }
  const handshaking = sample.clients.filter((client) => client.export === undefined);
  if (handshaking.length > 0) {
    lines.push("", "in handshake:", heading, ...handshaking.map(clientRow));
  }
  const width = input.width;
  return width === undefined ? lines : lines.map((line) => line.slice(0, width));
}

/** "1 client", "2 clients". */
function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
