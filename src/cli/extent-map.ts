/**
 * Extent maps as `nbdinfo --map` prints them: adjacent extents of the same
 * type merged, one `offset length type description` line each (or a JSON
 * array), or with --totals the bytes and share of the export per type. The
 * description of a type depends on the metadata context; the table below is
 * the only place that knows them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ExtentRuns, formatMapText } from "./extent-map.ts";
 * const runs = new ExtentRuns();
 * runs.add(4096, 0);
 * runs.add(4096, 3);
 * assert.equal(
 *   formatMapText("base:allocation", runs.runs),
 *   "         0        4096    0  data\n      4096        4096    3  hole,zero\n",
 * );
 * ```
 * @module
 */

import { jsonString } from "./json-string.ts";
import { printfFixed, printfGeneral } from "./printf-number.ts";

/** Descriptions of extent types per metadata context (a trailing ":" matches a prefix). */
const EXTENT_DESCRIPTIONS: readonly {
  readonly context: string;
  readonly types: Readonly<Record<number, string>>;
  readonly otherwise?: (type: number) => string;
}[] = [
  { context: "base:allocation", types: { 0: "data", 1: "hole", 2: "zero", 3: "hole,zero" } },
  { context: "qemu:dirty-bitmap:", types: { 0: "clean", 1: "dirty" } },
  {
    context: "qemu:allocation-depth",
    types: { 0: "absent", 1: "local" },
    otherwise: (type) => `backing depth ${type}`,
  },
];

/** The description of extent `type` in `context`, if it has one. */
export function describeExtent(context: string, type: number): string | undefined {
  const entry = EXTENT_DESCRIPTIONS.find((entry) =>
    entry.context.endsWith(":") ? context.startsWith(entry.context) : context === entry.context
  );
  return entry?.types[type] ?? entry?.otherwise?.(type);
}

/** A stretch of the export whose extents all have one type. */
export interface ExtentRun {
  /** Where it starts. */
  readonly offset: number;
  /** How long it is. */
  readonly length: number;
  /** The context's flags for it. */
  readonly type: number;
}

/** Consecutive extents, merged into runs as they are added. */
export class ExtentRuns {
  readonly #runs: ExtentRun[] = [];
  #end = 0;

  /** Append an extent of `length` bytes and flags `type`. */
  add(length: number, type: number): void {
    const last = this.#runs.at(-1);
    if (last?.type === type) {
      this.#runs[this.#runs.length - 1] = { ...last, length: last.length + length };
    } else {
      this.#runs.push({ offset: this.#end, length, type });
    }
    this.#end += length;
  }

  /** The runs so far, in order. */
  get runs(): readonly ExtentRun[] {
    return this.#runs;
  }
}

/** The runs as nbdinfo --map's text lines. */
export function formatMapText(context: string, runs: readonly ExtentRun[]): string {
  return runs.map(({ offset, length, type }) => {
    const description = describeExtent(context, type);
    return `${pad(offset, 10)}  ${pad(length, 10)}  ${pad(type, 3)}` +
      (description === undefined ? "" : `  ${description}`) + "\n";
  }).join("");
}

/** The runs as nbdinfo --map --json's array. */
export function formatMapJson(context: string, runs: readonly ExtentRun[]): string {
  const items = runs.map(({ offset, length, type }) => {
    const description = describeExtent(context, type);
    return `{ "offset": ${offset}, "length": ${length}, "type": ${type}` +
      (description === undefined ? "" : `, "description": ${jsonString(description)}`) + "}";
  });
  return `[\n${items.join(",\n")}\n]\n`;
}

/** Bytes of each type, by ascending type. */
export interface TypeTotal {
  /** The type. */
  readonly type: number;
  /** Bytes of that type. */
  readonly bytes: number;
  /** Their share of the export, in percent. */
  readonly percent: number;
}

/** Bytes per type over `runs`, and their share of an export of `size` bytes. */
export function totalsOf(runs: readonly ExtentRun[], size: number): TypeTotal[] {
  if (size === 0) return [];
  const bytes = new Map<number, number>();
  for (const { length, type } of runs) bytes.set(type, (bytes.get(type) ?? 0) + length);
  return [...bytes.entries()].sort(([a], [b]) => a - b).map(([type, count]) => ({
    type,
    bytes: count,
    percent: 100 * count / size,
  }));
}

/** Totals as nbdinfo --map --totals' text lines. */
export function formatTotalsText(context: string, totals: readonly TypeTotal[]): string {
  return totals.map(({ type, bytes, percent }) => {
    const description = describeExtent(context, type);
    return `${pad(bytes, 10)} ${printfFixed(percent, 1).padStart(5)}% ${pad(type, 3)}` +
      (description === undefined ? "" : ` ${description}`) + "\n";
  }).join("");
}

/** Totals as nbdinfo --map --totals --json's array (empty when the export is). */
export function formatTotalsJson(context: string, totals: readonly TypeTotal[]): string {
  if (!totals.length) return "[]\n";
  const items = totals.map(({ type, bytes, percent }) => {
    const description = describeExtent(context, type);
    return `{ "size": ${bytes}, "percent": ${printfGeneral(percent)}, "type": ${type}` +
      (description === undefined ? "" : `, "description": ${jsonString(description)}`) + " }";
  });
  return `[\n${items.join(",\n")}\n]\n`;
}

/** `value` right-aligned in `width` columns, as printf's %Nu. */
function pad(value: number, width: number): string {
  return String(value).padStart(width);
}
