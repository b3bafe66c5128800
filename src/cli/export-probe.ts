/**
 * Ask a server about its exports the way nbdinfo does, in option mode (no
 * export is opened): structured replies, then for each export NBD_OPT_INFO
 * (name, description, block sizes) and NBD_OPT_LIST_META_CONTEXT. A server
 * that has no NBD_OPT_INFO is asked with NBD_OPT_GO on a connection of its
 * own instead, after the option session ended.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { probeServer } from "./export-probe.ts";
 * // A server to ask: denbd's own, exporting 1 MiB of memory as "disk".
 * import { MemoryNode } from "../block/memory.ts";
 * import { ExportTable, NbdExport } from "../nbd/server/export.ts";
 * import { NbdServer } from "../nbd/server/server.ts";
 * import { Logger } from "../log.ts";
 * const catalog = new ExportTable();
 * catalog.add(new NbdExport({ name: "disk", node: new MemoryNode(1 << 20) }));
 * const server = new NbdServer({ catalog, log: new Logger() });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * server.listen(listener);
 * try {
 *   const uri = `nbd://127.0.0.1:${listener.addr.port}/disk`;
 *   const { report, failures } = await probeServer(uri, { all: false });
 *   assert.equal(report.exports[0].size, 1 << 20);
 *   assert.deepEqual(failures, []);
 * } finally {
 *   await server.close();
 * }
 * ```
 * @module
 */

import { DenbdError, messageOf } from "../errors.ts";
import { NbdClient, withNegotiation } from "../nbd/client/client.ts";
import {
  type ExportDetails,
  type NegotiationSession,
  OptionRefused,
} from "../nbd/client/negotiation.ts";
import { type NbdUri, parseNbdUri } from "../nbd/client/uri.ts";
import { NBD_FLAG } from "../nbd/protocol.ts";
import type { ExportReport, ServerReport } from "./export-report.ts";
import { probeContent } from "./content-probe.ts";
import { libnbdUri } from "./libnbd-uri.ts";

/** An export the server would not describe, and why. */
export interface ExportFailure {
  /** The name asked for. */
  readonly name: string;
  /** What the server or the connection said. */
  readonly error: unknown;
}

/** What a probe found: the report of the exports described, and the failures. */
export interface ProbeResult {
  /** The server and every export that could be described, in order. */
  readonly report: ServerReport;
  /** The exports that could not be described. */
  readonly failures: readonly ExportFailure[];
}

/** An export as the option session saw it, or why it must be asked with GO later. */
type SessionOutcome =
  | { readonly report: ExportReport }
  | { readonly failure: ExportFailure }
  | { readonly needsGo: string; readonly listedDescription?: string };

/**
 * Transmission flags as libnbd reports them: DF only counts with structured
 * replies, FAST_ZERO only with WRITE_ZEROES.
 */
export function libnbdFlags(flags: number, structured: boolean): number {
  let result = flags;
  if (!structured) result &= ~NBD_FLAG.SEND_DF;
  if (!(flags & NBD_FLAG.SEND_WRITE_ZEROES)) result &= ~NBD_FLAG.SEND_FAST_ZERO;
  return result;
}

/** What to ask a server. */
export interface ProbeOptions {
  /** Every export the server lists (descriptions then come from the list), not only the URI's. */
  readonly all: boolean;
  /**
   * Also describe each export's first bytes with file(1), as nbdinfo's
   * content probe: each export is then described on a connection of its own
   * that enters transmission after NBD_OPT_INFO and LIST_META_CONTEXT.
   */
  readonly content?: boolean;
}

/** The handshake style a report names. */
function protocolOf(fixedNewstyle: boolean): string {
  return fixedNewstyle ? "newstyle-fixed" : "newstyle";
}

/**
 * Describe the export `uri` names or, with `all`, every export the server
 * lists (descriptions then come from the list, as nbdinfo --list does).
 */
export async function probeServer(uri: string, options: ProbeOptions): Promise<ProbeResult> {
  const target = parseNbdUri(uri);
  const content = options.content ?? false;
  if (content && !options.all) return await probeOneWithContent(target);
  const probed = await withNegotiation(target, async (session) => {
    await session.requestStructuredReplies();
    const listed = options.all
      ? await session.list()
      : [{ name: target.exportName, description: undefined }];
    const outcomes: SessionOutcome[] = [];
    for (const { name, description } of listed) {
      outcomes.push(
        content
          ? { needsGo: name, listedDescription: description }
          : await describeInSession(session, target, name, description),
      );
    }
    return {
      fixedNewstyle: session.fixedNewstyle,
      structured: session.structured,
      tls: session.tls,
      outcomes,
    };
  });
  const exports: ExportReport[] = [];
  const failures: ExportFailure[] = [];
  for (const outcome of probed.outcomes) {
    const settled = "needsGo" in outcome
      ? await describeWithGo(target, outcome.needsGo, outcome.listedDescription, content)
      : outcome;
    if ("report" in settled) exports.push(settled.report);
    else failures.push(settled.failure);
  }
  return {
    report: {
      protocol: protocolOf(probed.fixedNewstyle),
      tls: probed.tls,
      structured: probed.structured,
      exports,
    },
    failures,
  };
}

/**
 * The export `target` names, described and its content probed on one
 * connection, as nbdinfo does without --list: a server that serves one
 * client and then exits (qemu-nbd without -t) is asked only once.
 */
async function probeOneWithContent(target: NbdUri): Promise<ProbeResult> {
  let fixedNewstyle: boolean | undefined;
  const settled = await describeWithGo(target, target.exportName, undefined, true, (session) => {
    fixedNewstyle = session.fixedNewstyle;
  });
  if (fixedNewstyle === undefined && "failure" in settled) throw settled.failure.error;
  const report = "report" in settled ? [settled.report] : [];
  return {
    report: {
      protocol: protocolOf(fixedNewstyle ?? true),
      tls: settled.negotiated?.tls ?? false,
      structured: settled.negotiated?.structured ?? false,
      exports: report,
    },
    failures: "failure" in settled ? [settled.failure] : [],
  };
}

/** The one-line message for an export that could not be described. */
export function failureMessage(failure: ExportFailure): string {
  const which = failure.name === "" ? "the default export" : `export '${failure.name}'`;
  return `${messageOf(failure.error)} (for ${which})`;
}

async function describeInSession(
  session: NegotiationSession,
  target: NbdUri,
  name: string,
  listedDescription: string | undefined,
): Promise<SessionOutcome> {
  if (!session.fixedNewstyle) return { needsGo: name, listedDescription };
  let details: ExportDetails | null;
  try {
    details = await session.info(name);
  } catch (error) {
    if (error instanceof OptionRefused) return { failure: { name, error } };
    throw error;
  }
  if (details === null) return { needsGo: name, listedDescription };
  const contexts = await listContexts(session, name);
  return {
    report: exportReport(target, name, details, session, contexts, listedDescription),
  };
}

/** The export's contexts, or null when the server will not list them (as libnbd gives up). */
async function listContexts(session: NegotiationSession, name: string): Promise<string[] | null> {
  try {
    return await session.listMetaContexts(name);
  } catch (error) {
    if (error instanceof OptionRefused) return null;
    throw error;
  }
}

/**
 * Describe `name` on a connection of its own that enters transmission on it.
 * With `content`, the export is first asked with NBD_OPT_INFO and its
 * contexts listed (as nbdinfo does before it reads), and its first bytes
 * are probed; without, only GO describes it and contexts cannot be listed.
 * `onSession` sees the option session before the export is chosen.
 */
async function describeWithGo(
  target: NbdUri,
  name: string,
  listedDescription: string | undefined,
  content: boolean,
  onSession?: (session: NegotiationSession) => void,
): Promise<
  ({ report: ExportReport } | { failure: ExportFailure }) & { negotiated?: Negotiated }
> {
  let described: SessionOutcome | undefined;
  let client: NbdClient;
  try {
    client = await NbdClient.connect(target, {
      exportName: name,
      beforeGo: async (session) => {
        onSession?.(session);
        if (content) described = await describeInSession(session, target, name, listedDescription);
      },
    });
  } catch (error) {
    if (error instanceof DenbdError) return { failure: { name, error } };
    throw error;
  }
  try {
    const { details, structuredReplies: structured, tls } = client;
    const negotiated = { structured, tls };
    const report = described && "report" in described
      ? described.report
      : exportReport(target, name, details, negotiated, null, listedDescription);
    const probed = content ? await probeContent(client, report.size) : undefined;
    return {
      report: probed === undefined ? report : { ...report, content: probed },
      negotiated,
    };
  } finally {
    await client.disconnect();
  }
}

/** What was negotiated on the connection an export was described on. */
interface Negotiated {
  /** Structured replies. */
  readonly structured: boolean;
  /** TLS. */
  readonly tls: boolean;
}

function exportReport(
  target: NbdUri,
  name: string,
  details: ExportDetails,
  negotiated: Negotiated,
  contexts: string[] | null,
  listedDescription: string | undefined,
): ExportReport {
  return {
    name: details.canonicalName ?? name,
    description: listedDescription ?? details.description,
    size: details.size,
    uri: libnbdUri(target, name, negotiated.tls),
    contexts,
    flags: libnbdFlags(details.flags, negotiated.structured),
    blockSizes: details.blockSizes,
  };
}
