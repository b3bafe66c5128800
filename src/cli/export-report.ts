/**
 * What `denbd info` and `denbd list` print about a server and its exports,
 * in nbdinfo's two layouts: the tab-indented text and the JSON document.
 * Both are derived from the same tables of fields, so they cannot disagree.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatReportText, type ServerReport } from "./export-report.ts";
 * const report: ServerReport = {
 *   protocol: "newstyle-fixed",
 *   tls: false,
 *   structured: true,
 *   exports: [{ name: "", size: 1024, uri: "nbd://localhost:10809/", contexts: null, flags: 1 }],
 * };
 * assert.ok(formatReportText(report).startsWith("protocol: newstyle-fixed without TLS"));
 * ```
 * @module
 */

import type { BlockSizeConstraints } from "../nbd/client/negotiation.ts";
import { NBD_FLAG } from "../nbd/protocol.ts";
import { humanSize } from "./human-size.ts";
import { jsonString } from "./json-string.ts";

/** One export as the server described it. */
export interface ExportReport {
  /** The server's canonical name for it, else the name asked for. */
  readonly name: string;
  /** Its description; shown only when not empty. */
  readonly description?: string;
  /** Size in bytes, as the server reported it. */
  readonly size: number;
  /** What file(1) says of its first bytes, when its content was probed (even if empty). */
  readonly content?: string;
  /**
   * The URI that names it; absent for a server run for the tool
   * (`[ CMD ARGS ]`), which libnbd has no URI for.
   */
  readonly uri?: string;
  /** Its metadata contexts, or null when they could not be listed. */
  readonly contexts: readonly string[] | null;
  /** Transmission flags as libnbd reports them (see `libnbdFlags`). */
  readonly flags: number;
  /** Block size constraints, if the server announced valid ones. */
  readonly blockSizes?: BlockSizeConstraints;
}

/** A server and the exports described. */
export interface ServerReport {
  /** Handshake style: "newstyle-fixed" or "newstyle". */
  readonly protocol: string;
  /** TLS was negotiated. */
  readonly tls: boolean;
  /** Structured replies were negotiated. */
  readonly structured: boolean;
  /** The exports, in the order they are shown. */
  readonly exports: readonly ExportReport[];
}

/** The per-export booleans, in nbdinfo's order, and the transmission flag each shows. */
export const EXPORT_BOOLEANS = [
  { field: "is_rotational", flag: NBD_FLAG.ROTATIONAL },
  { field: "is_read_only", flag: NBD_FLAG.READ_ONLY },
  { field: "can_cache", flag: NBD_FLAG.SEND_CACHE },
  { field: "can_df", flag: NBD_FLAG.SEND_DF },
  { field: "can_fast_zero", flag: NBD_FLAG.SEND_FAST_ZERO },
  { field: "can_flush", flag: NBD_FLAG.SEND_FLUSH },
  { field: "can_fua", flag: NBD_FLAG.SEND_FUA },
  { field: "can_multi_conn", flag: NBD_FLAG.CAN_MULTI_CONN },
  { field: "can_trim", flag: NBD_FLAG.SEND_TRIM },
  { field: "can_zero", flag: NBD_FLAG.SEND_WRITE_ZEROES },
] as const;

/** The block size fields, in nbdinfo's order; each is shown only when announced. */
const BLOCK_SIZE_FIELDS = [
  { field: "block_size_minimum", key: "minimum" },
  { field: "block_size_preferred", key: "preferred" },
  { field: "block_size_maximum", key: "maximum" },
] as const;

/** Name and value of every boolean and block size field of `entry`, in order. */
function fields(entry: ExportReport): [string, boolean | number][] {
  const result: [string, boolean | number][] = EXPORT_BOOLEANS.map((
    { field, flag },
  ) => [field, (entry.flags & flag) !== 0]);
  for (const { field, key } of BLOCK_SIZE_FIELDS) {
    const value = entry.blockSizes?.[key] ?? 0;
    if (value > 0) result.push([field, value]);
  }
  return result;
}

/** The report as nbdinfo's text: a protocol line, then a block per export. */
export function formatReportText(report: ServerReport): string {
  const lines = [
    `protocol: ${report.protocol} ${report.tls ? "with" : "without"} TLS, ` +
    `using ${report.structured ? "structured" : "simple"} packets`,
  ];
  for (const entry of report.exports) {
    const size = humanSize(entry.size);
    lines.push(`export=${jsonString(entry.name)}:`);
    if (entry.description) lines.push(`\tdescription: ${entry.description}`);
    lines.push(`\texport-size: ${entry.size}${size.scaled ? ` (${size.text})` : ""}`);
    if (entry.content !== undefined) lines.push(`\tcontent: ${entry.content}`);
    if (entry.uri !== undefined) lines.push(`\turi: ${entry.uri}`);
    if (entry.contexts) {
      lines.push("\tcontexts:", ...entry.contexts.map((context) => `\t\t${context}`));
    }
    for (const [field, value] of fields(entry)) lines.push(`\t${field}: ${value}`);
  }
  return lines.map((line) => `${line}\n`).join("");
}

/** `report` without its exports' URIs, as nbdinfo shows a server it ran (`[ CMD ARGS ]`). */
export function withoutUris(report: ServerReport): ServerReport {
  return { ...report, exports: report.exports.map(({ uri: _uri, ...entry }) => entry) };
}

/** The report as nbdinfo's JSON document (tab-indented, keys in nbdinfo's order). */
export function formatReportJson(report: ServerReport): string {
  const header = [
    `"protocol": ${jsonString(report.protocol)}`,
    `"TLS": ${report.tls}`,
    `"structured": ${report.structured}`,
  ];
  const exports = report.exports.map(exportJson);
  const list = exports.length ? `"exports": [\n${exports.join(",\n")} ]` : `"exports": []`;
  return `{\n${[...header, list].join(",\n")}\n}\n`;
}

/** One export's JSON object, indented as nbdinfo indents it. */
function exportJson(entry: ExportReport): string {
  const members = [`"export-name": ${jsonString(entry.name)}`];
  if (entry.description) members.push(`"description": ${jsonString(entry.description)}`);
  if (entry.content !== undefined) members.push(`"content": ${jsonString(entry.content)}`);
  if (entry.uri !== undefined) members.push(`"uri": ${jsonString(entry.uri)}`);
  if (entry.contexts) {
    const names = entry.contexts.map((context) => `\t\t${jsonString(context)}`).join(",\n");
    members.push(`"contexts": [\n${names}${names ? "\n" : ""}\t]`);
  }
  for (const [field, value] of fields(entry)) members.push(`"${field}": ${value}`);
  members.push(`"export-size": ${entry.size}`);
  members.push(`"export-size-str": ${jsonString(humanSize(entry.size).text)}`);
  return `\t{\n${members.map((member) => `\t${member}`).join(",\n")}\n\t}`;
}
