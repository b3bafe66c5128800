/**
 * The commands every QMP monitor has, as qemu-storage-daemon 7.2 defines
 * them: qmp_capabilities, query-version, query-commands and quit.
 * denbd reports QEMU API level 7.2.0 and "denbd VERSION" as the package.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CommandTable } from "./command.ts";
 * import { coreCommands } from "./core-commands.ts";
 * const table = new CommandTable<undefined>(coreCommands());
 * assert.equal(table.get("query-version")?.name, "query-version");
 * ```
 * @module
 */

import { VERSION } from "../version.ts";
import { commandFor, type QmpCommand, QmpError } from "./command.ts";
import { array, BUILTIN, EMPTY_STRUCT, enumeration, member, optional, struct } from "./schema.ts";

/** QMP capabilities (QEMU's QMPCapability). */
export const QMP_CAPABILITY = enumeration("QMPCapability", ["oob"]);

/** QEMU's VersionTriple. */
export const VERSION_TRIPLE = struct("VersionTriple", [
  member("major", BUILTIN.int),
  member("minor", BUILTIN.int),
  member("micro", BUILTIN.int),
]);

/** QEMU's VersionInfo. */
export const VERSION_INFO_TYPE = struct("VersionInfo", [
  member("qemu", VERSION_TRIPLE),
  member("package", BUILTIN.str),
]);

/** QEMU's CommandInfo. */
export const COMMAND_INFO = struct("CommandInfo", [member("name", BUILTIN.str)]);

/** What query-version returns and the greeting shows: QEMU API 7.2.0, package "denbd VERSION". */
export const VERSION_INFO = {
  qemu: { major: 7, minor: 2, micro: 0 },
  package: `denbd ${VERSION}`,
} as const;

/** Commands that work on any state. */
const coreCommand = commandFor<unknown>();

/** qmp_capabilities: leave capabilities negotiation mode, optionally enabling capabilities. */
export const qmpCapabilities = coreCommand({
  name: "qmp_capabilities",
  args: struct("qmp_capabilities-arg", [optional("enable", array(QMP_CAPABILITY))]),
  beforeNegotiation: true,
  run(context, args) {
    if (context.session.negotiated) {
      throw new QmpError(
        "CommandNotFound",
        "Capabilities negotiation is already complete, command ignored",
      );
    }
    context.session.completeNegotiation(args.enable ?? []);
  },
});

/** query-version: the QEMU version denbd implements, and denbd's own as the package. */
export const queryVersion = coreCommand({
  name: "query-version",
  args: EMPTY_STRUCT,
  returns: VERSION_INFO_TYPE,
  run: () => VERSION_INFO,
});

/** query-commands: every command of the table, most recently added first, as QEMU lists them. */
export const queryCommands = coreCommand({
  name: "query-commands",
  args: EMPTY_STRUCT,
  returns: array(COMMAND_INFO),
  run: (context) => [...context.commands].reverse().map((command) => ({ name: command.name })),
});

/** quit: end the daemon (after this reply). */
export const quit = coreCommand({
  name: "quit",
  args: EMPTY_STRUCT,
  run: (context) => context.requestQuit(),
});

/** The core commands, in QEMU's schema order, for a table of any state. */
export function coreCommands<S>(): QmpCommand<S>[] {
  return [qmpCapabilities, queryVersion, queryCommands, quit] as QmpCommand<S>[];
}
